"""The cascade's part of metrics.json and of report.html (--judge_fraction): what the
judge scored, what it did not, and the recall of the full judge's selection estimated
from the audit (the pipeline writes cascade.json: transforms/cascade.py)."""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

from apache_beam.io.filesystems import FileSystems

from beam_pipelines.report_html import _esc, _table
from transforms import metrics as m
from transforms.output_layout import CASCADE_FILE


def metrics_part(job, staging: str, counters: Optional[Dict[str, int]] = None,
                 stage_times: Optional[Dict[str, float]] = None) -> Optional[Dict[str, Any]]:
  """metrics.json `cascade`: cascade.json, with the judge's time saved at this run's
  measured speed when the runner timed the judge. None without --judge_fraction."""
  config = getattr(job, "cascade", None)
  path = FileSystems.join(staging, CASCADE_FILE)
  if config is None or not config.enabled or not FileSystems.exists(path):
    return None
  with FileSystems.open(path) as f:
    out = json.loads(f.read())
  if counters is not None:
    out["counters"] = {name: counters.get(name, 0) for name in (
        m.CASCADE_POOL, m.CASCADE_AUDITED, m.CASCADE_NOT_JUDGED)}
    inferred = counters.get(m.INFERRED_PREFIX + "ask_llm", 0)
    seconds = (stage_times or {}).get("scored")
    if inferred and seconds:
      out["judge_seconds_per_document"] = round(seconds / inferred, 6)
      out["judge_seconds_saved"] = round(seconds / inferred * out["judge_documents_saved"], 3)
  out["path"] = FileSystems.join(job.output, CASCADE_FILE)
  return out


def _pct(value) -> str:
  return "–" if value is None else f"{100 * value:.1f}%"


def section(metrics: dict) -> str:
  """report.html's cascade section ('' without --judge_fraction)."""
  cascade = metrics.get("cascade")
  if not cascade:
    return ""
  est = cascade["recall"]
  n = cascade["documents"] or 1
  rows = [("cheap signal", _esc(f"{cascade['signal']} ({cascade['score_column']})")),
          ("--judge_fraction / --audit_fraction",
           _esc(f"{cascade['judge_fraction']:g} / {cascade['audit_fraction']:g}")),
          ("judged: the cut", f"{cascade['pool']:,} ({_pct(cascade['pool'] / n)})"),
          ("judged: the audit below the cut",
           f"{cascade['audited']:,} of {est['below']:,}"),
          ("not judged (judge documents saved)",
           f"{cascade['not_judged']:,} ({_pct(cascade['not_judged'] / n)})")]
  if "judge_seconds_saved" in cascade:
    rows.append(("judge time saved (this run's speed)",
                 f"{cascade['judge_seconds_saved']:,.1f} s"))
  if est["recall"] is None:
    rows.append(("recall of the full judge's " + _esc(cascade["recall_of"]),
                 "not estimated (no audited document: --audit_fraction=0 or too few below "
                 "the cut)"))
  else:
    rows.append((f"recall of the full judge's {_esc(cascade['recall_of'])} "
                 f"(k = {est['k']:,})",
                 f"<b>{_pct(est['recall'])}</b> (95% interval {_pct(est['low'])} – "
                 f"{_pct(est['high'])}); {est['audit_hits']} audited documents at or above "
                 f"the estimated judge threshold {est['threshold']:.4g}, standing for "
                 f"~{est['missed']:,.0f} below the cut"))
  return ("<h2 id='cascade'>Cascade</h2><p class='muted'>The judge scored the cheap "
          "signal's top documents and a hash-chosen audit of the rest; judged documents "
          "rank first (by the judge), the others after them by the cheap score. The "
          "recall is the share of the selection the judge would have made on every "
          "document that it scored here, estimated from the audit.</p>"
          + _table(("", "value"), rows))
