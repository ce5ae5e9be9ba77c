"""report.html: one self-contained page on what a run kept and why.

Drawn at the end of a run from metrics.json (the counts) and report.json (the statistics
the pipeline computed with combiners, transforms/report_stats.py): nothing here reads
the documents, so drawing costs the same for 40 documents or a billion. Charts are
inline SVG from matplotlib; the page loads nothing (no scripts, fonts or images from
anywhere), so it opens offline and from a bucket. The sections are
beam_pipelines/report_sections.py, drawn with report_charts.py and report_html.py.
"""
from __future__ import annotations

import json
import time
from typing import Any, Dict, Optional

from apache_beam.io.filesystems import FileSystems

from beam_pipelines import report_cascade, report_dedup, report_groups
from beam_pipelines.options import JobConfig
from beam_pipelines.report_html import _esc
from beam_pipelines.report_sections import (_clusters, _density, _examples, _files,
                                            _funnel, _quality_head, _run_card, _scores)
from transforms import write as write_lib

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:1100px;color:#1b1f24;line-height:1.4;padding:0 16px}
h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #d0d7de;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0;font-size:.92em}
td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.warn{background:#fff8c5;border:1px solid #d4a72c;padding:8px 12px;margin:8px 0}
.muted{color:#57606a}.chart{margin:8px 0}.excerpt{max-width:620px;font-size:.9em}
pre{white-space:pre-wrap;background:#f6f8fa;padding:8px;max-height:260px;overflow:auto}
.grid{display:flex;flex-wrap:wrap;gap:12px}.grid>div{flex:1 1 480px}
"""


def render(job: JobConfig, metrics: dict, stats: Optional[dict],
           model_ids: Optional[Dict[str, Any]] = None, groups: Optional[dict] = None) -> str:
  """The report page. `stats` is report.json (None when the run wrote none); `groups`
  is groups.json (report_groups.py)."""
  body = [f"<h1>Data selection report</h1><p class='muted'>{_esc(job.output)} · written "
          f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())} · details in "
          "metrics.json, every score in scores/</p>",
          "<p><a href='#run'>Run</a> · <a href='#funnel'>Funnel</a> · <a href='#scores'>"
          "Scores</a> · <a href='#files'>Files</a> · <a href='#examples'>Examples</a></p>",
          _run_card(job, metrics, model_ids or {}), _funnel(metrics, stats)]
  if stats and stats["documents"]:
    body += [_scores(stats), _files(stats), _clusters(stats, metrics), _examples(stats)]
  else:
    body.append("<p>No valid documents: nothing was scored or selected.</p>")
  body += [report_dedup.section(metrics), report_groups.section(groups), _quality_head(metrics),
           _density(metrics),
           report_cascade.section(metrics)]
  if "note" in metrics:
    body.append(f"<p class='muted'>{_esc(metrics['note'])}</p>")
  return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
          "<meta name='viewport' content='width=device-width, initial-scale=1'>"
          f"<title>Data selection report: {_esc(job.output)}</title><style>{_CSS}</style>"
          "</head><body>" + "".join(body) + "</body></html>")


def model_identities(caches: Optional[Dict[str, Any]]) -> Dict[str, Any]:
  """{scorer|embedding: the model's content identity} from the score cache specs."""
  out = {}
  for ns, spec in (caches or {}).items():
    role = "embedding" if ns == "embeddings" else "scorer"
    out.setdefault(role, spec.settings.get("model"))
  return out


class ReportWriter:
  """Writes report.html into a staged run from its report.json and metrics (called by
  the launcher after the run, or by the pipeline's last step)."""

  def __init__(self, job: JobConfig, caches: Optional[Dict[str, Any]] = None):
    self._job = job
    self._ids = model_identities(caches)

  def __call__(self, staging: str, metrics: dict) -> str:
    data_path = FileSystems.join(staging, write_lib.REPORT_DATA_FILE)
    stats = None
    if FileSystems.exists(data_path):
      with FileSystems.open(data_path) as f:
        stats = json.loads(f.read().decode("utf-8"))
    page = render(self._job, metrics, stats, self._ids, report_groups.load(staging))
    path = FileSystems.join(staging, write_lib.REPORT_FILE)
    write_lib.write_bytes_atomic(path, page.encode("utf-8"))
    return path
