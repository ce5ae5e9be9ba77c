"""--dedup in metrics.json and report.html: the duplicate funnel (dedup.json, written by
transforms/dedup.py), the largest groups of copies with the kept document's excerpt, and
the histogram of the MinHash candidate pairs' Jaccard estimates."""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

from apache_beam.io.filesystems import FileSystems

from beam_pipelines.report_html import _esc, _table
from transforms.output_layout import DEDUP_STATS_FILE


def dedup_metrics(job, staging: Optional[str]) -> Optional[Dict[str, Any]]:
  """metrics.json `dedup`: dedup.json as the run wrote it (None without --dedup)."""
  if not job.dedup.enabled or not staging:
    return None
  path = FileSystems.join(staging, DEDUP_STATS_FILE)
  if not FileSystems.exists(path):
    return None
  with FileSystems.open(path) as f:
    return json.loads(f.read().decode("utf-8"))


def section(metrics: dict) -> str:
  """The report's Duplicates section ('' when the run did not deduplicate)."""
  d = metrics.get("dedup")
  if not d:
    return ""
  rows = [("valid documents", f"{d['documents']:,}")]
  for kind, n in d["duplicates"].items():
    rows.append((f"&nbsp;&nbsp;{_esc(kind)} copies removed (never scored)", f"{n:,}"))
  rows.append(("kept: what every model and the selection saw", f"{d['kept']:,}"))
  html = ["<h2 id='dedup'>Duplicates</h2>",
          f"<p class='muted'>--dedup={_esc(d['mode'])}; exact copies: "
          f"{_esc(d['normalization'])}. In each group the document with the smallest hash "
          "of (seed, id) is kept; the others are in scores/ with copy_of.</p>",
          _table(("", "documents"), rows)]
  if d.get("minhash"):
    p = d["minhash"]
    html.append(f"<p class='muted'>MinHash: {p['shingle']}-word shingles, "
                f"{p['permutations']} permutations, {p['bands']} bands x {p['rows']} rows, "
                f"copies at a Jaccard estimate &ge; {p['threshold']:g}.</p>")
  if d["largest_groups"]:
    html.append("<h3>Largest groups</h3>" + _table(
        ("kind", "copies removed", "kept id", "kept document"),
        [(_esc(g["kind"]), f"{g['copies']:,}", _esc(g["kept_id"]),
          f"<div class='excerpt'>{_esc(g['excerpt'])}</div>") for g in d["largest_groups"]]))
  est = d.get("jaccard_estimates")
  if est and sum(est["counts"]):
    width, threshold = est["bin_width"], d["minhash"]["threshold"]
    rows = [(f"{i * width:.2f}-{(i + 1) * width:.2f}", f"{n:,}",
             "copy" if i * width >= threshold - 1e-9 else
             "kept apart" if (i + 1) * width <= threshold + 1e-9 else "by the threshold")
            for i, n in enumerate(est["counts"]) if n]
    html.append("<h3>Jaccard of the candidate pairs</h3><p class='muted'>Every document "
                "sharing an LSH band with its bucket's kept document, by the signatures' "
                "Jaccard estimate.</p>" + _table(("Jaccard estimate", "pairs", "outcome"),
                                                  rows))
  return "".join(html)
