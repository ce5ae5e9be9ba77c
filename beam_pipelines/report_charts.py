"""report.html's charts: matplotlib figures drawn as inline SVG (text as <text>, ids the
same on every run), so that the page loads nothing. A chart that cannot be drawn costs
that chart, not the page.
"""
from __future__ import annotations

import io
import logging
import re
from typing import List, Optional

from beam_pipelines.report_html import _esc, _num

_LOG = logging.getLogger(__name__)


def _pyplot():
  import matplotlib
  matplotlib.use("Agg")
  from matplotlib import pyplot as plt
  # Text as <text> (no glyph outlines), and ids that are the same on every run. Labels
  # are file names and the like, never math: "$5_to_$10.jsonl" is drawn as it is.
  matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "report",
                              "text.parse_math": False, "font.size": 9,
                              "axes.spines.top": False, "axes.spines.right": False})
  return plt


def _svg(fig, name: str) -> str:
  plt = _pyplot()
  buf = io.StringIO()
  try:
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
  except Exception as e:  # pylint: disable=broad-except
    # A chart that cannot be drawn costs that chart, not the page.
    _LOG.warning("report.html: chart %s not drawn: %s", name, e)
    return f"<div class='warn'>Chart {_esc(name)} could not be drawn: {_esc(e)}</div>"
  finally:
    plt.close(fig)
  svg = buf.getvalue()
  svg = svg[svg.index("<svg"):]  # no XML prolog or DOCTYPE inside HTML
  # The RDF metadata block names its vocabularies by URL: not needed in a page.
  svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
  return f'<div class="chart" data-chart="{_esc(name)}">{svg}</div>'


def _histogram_chart(name: str, entry: dict, cutoff: Optional[float]) -> str:
  plt = _pyplot()
  hist = entry["histogram"]
  edges = hist["edges"]
  fig, ax = plt.subplots(figsize=(5.2, 2.6))
  widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
  ax.bar(edges[:-1], hist["all"], width=widths, align="edge", color="#afb8c1",
         label="all documents")
  ax.bar(edges[:-1], hist["selected"], width=widths, align="edge", color="#0969da",
         label="selected")
  if hist["log"]:
    ax.set_xscale("log")
  if cutoff is not None:
    ax.axvline(cutoff, color="#cf222e", linestyle="--", linewidth=1.2,
               label=f"cutoff {_num(cutoff)}")
  ax.set_xlabel(name)
  ax.set_ylabel("documents")
  ax.legend(frameon=False, fontsize=8)
  return _svg(fig, f"histogram:{name}")


def _scatter_chart(name: str, columns: List[str], points: List[list],
                   log_x: bool) -> Optional[str]:
  j = columns.index(name)
  pts = [(p[0], p[j], bool(p[1])) for p in points if p[j] is not None and p[0]]
  if not pts:
    return None
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(5.2, 2.6))
  for kept, color, label in ((False, "#afb8c1", "not selected"),
                             (True, "#0969da", "selected")):
    xs = [x for x, _, k in pts if k == kept]
    ys = [y for _, y, k in pts if k == kept]
    if xs:
      ax.scatter(xs, ys, s=6, color=color, label=label, alpha=0.7, linewidths=0)
  if log_x:
    ax.set_xscale("log")
  ax.set_xlabel("characters")
  ax.set_ylabel(name)
  ax.legend(frameon=False, fontsize=8)
  return _svg(fig, f"scatter:{name}")


def _bar_chart(name: str, labels: List[str], values: List[float], xlabel: str,
               color="#0969da") -> str:
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(7.5, 0.28 * len(labels) + 0.8))
  ax.barh(range(len(labels)), values, color=color)
  ax.set_yticks(range(len(labels)), labels, fontsize=8)
  ax.invert_yaxis()
  ax.set_xlabel(xlabel)
  return _svg(fig, name)
