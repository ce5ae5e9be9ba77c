"""The statistics behind report.html, computed in the pipeline with combiners.

Nothing here gathers the corpus in one process, so the report costs little at a billion
documents:
- each bundle is summarised (counts per input file, characters, exact min/max, and
  small bounded candidate lists: the scatter sample, the examples) by a ReportTap run
  inside a step that visits every document anyway (the job's scores/ step), and the
  score values are handed on as compact numpy columns;
- percentiles come from Beam's ApproximateQuantiles over those columns, and the
  fixed-bin histograms from a second pass over the columns (not the documents) whose bin
  edges are the exact range found by the first;
- bounded lists are merged by a CombineFn that keeps the best few by a deterministic key
  (a hash of (seed, id), a rank, or the sampler's own sort key), never by a random draw.

The result is one JSON-able dict (report.json; beam_pipelines/report.py draws it). The
Summary is transforms/report_summary.py, the per-document tap transforms/report_tap.py;
their names are re-exported here.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np

from transforms.records import Document, Rejected, safe_str
from transforms.report_summary import (CHARS, DROPPED, EXAMPLES, KEPT, SCATTER_POINTS,
                                       Summary, _Largest, _Smallest)
from transforms.report_tap import (COLUMNS_TAG, EXCERPT_CHARS, SUMMARY_TAG, BundleSummary,
                                   ReportTap, _as_numbers, scatter_seed)
from transforms.sampling import uniform_from_id

# The public names, the Summary's and the tap's re-exported ones included, and the private
# ones the tests use.
__all__ = ["CHARS", "PERCENTILES", "HISTOGRAM_BINS", "SCATTER_POINTS", "EXAMPLES",
           "REJECTED_EXAMPLES", "TOP_FILES", "TOP_CLUSTERS", "EXCERPT_CHARS", "KEPT",
           "DROPPED", "Summary", "scatter_seed", "SUMMARY_TAG", "COLUMNS_TAG", "ReportTap",
           "BundleSummary", "histogram_edges", "assemble", "ReportStatistics",
           "_Smallest", "_Largest", "_as_numbers"]

PERCENTILES = (1, 10, 50, 90, 99)
HISTOGRAM_BINS = 40
REJECTED_EXAMPLES = 3
TOP_FILES = 20
TOP_CLUSTERS = 30  # the largest clusters shown with their selected share
# Log-spaced bins for a score of at least 1 that spans more than this factor (lengths,
# perplexity, densities); probabilities and other scores keep linear bins.
_LOG_SPAN = 100.0


class _SummarizeBundle(beam.DoFn):
  """A ReportTap as a step of its own, for outcomes no other step visits: (Document, rank)
  for the selected, a Document for the others."""

  def __init__(self, tap: ReportTap):
    self._tap = tap

  def start_bundle(self):
    self._bundle = self._tap.start()

  def process(self, outcome):
    doc, rank = (outcome, None) if isinstance(outcome, Document) else outcome
    out = self._bundle.add(doc, rank)
    if out is not None:
      yield beam.pvalue.TaggedOutput(*out)

  def finish_bundle(self):
    for tag, value in self._bundle.finish():
      yield beam.pvalue.TaggedOutput(tag, value)


class _MergeSummaries(beam.CombineFn):

  def __init__(self, names: Sequence[str]):
    self._names = list(names)

  def create_accumulator(self):
    return Summary(self._names)

  def add_input(self, acc, summary):
    return acc.merge(summary)

  def merge_accumulators(self, accs):
    accs = list(accs)
    first = accs[0]
    for acc in accs[1:]:
      first.merge(acc)
    return first

  def extract_output(self, acc):
    return acc.materialize()


def _column_values(chunk: np.ndarray, names: Sequence[str]):
  """((name, kept|dropped), finite values) batches for ApproximateQuantiles."""
  kept = chunk[:, 0] > 0
  for j, name in enumerate([CHARS] + list(names)):
    col = chunk[:, 1 + j]
    for part, mask in ((KEPT, kept), (DROPPED, ~kept)):
      values = col[mask & np.isfinite(col)]
      if values.size:
        yield (name, part), values.tolist()


def histogram_edges(low: float, high: float, bins: int = HISTOGRAM_BINS
                    ) -> Tuple[List[float], bool]:
  """(edges, log): fixed bins over [low, high], log-spaced for a range from at least 1
  wider than _LOG_SPAN; a single value gets one bin around it."""
  if not (math.isfinite(low) and math.isfinite(high)):
    raise ValueError(f"histogram range must be finite, got [{low}, {high}]")
  if high <= low:
    pad = abs(low) * 0.01 or 0.5
    return [low - pad, low + pad], False
  if low >= 1 and high / low > _LOG_SPAN:
    return np.geomspace(low, high, bins + 1).tolist(), True
  return np.linspace(low, high, bins + 1).tolist(), False


def _ranges(summary: Summary, names: Sequence[str]) -> Dict[str, Tuple[List[float], bool]]:
  out = {}
  for name in [CHARS] + list(names):
    lows = [summary.low[(name, p)] for p in (KEPT, DROPPED) if (name, p) in summary.low]
    highs = [summary.high[(name, p)] for p in (KEPT, DROPPED) if (name, p) in summary.high]
    if lows:
      out[name] = histogram_edges(min(lows), max(highs))
  return out


class _Histograms(beam.DoFn):
  """Counts a chunk into each name's fixed bins: {name: (all counts, selected counts)}."""

  def __init__(self, names: Sequence[str]):
    self._names = [CHARS] + list(names)

  def process(self, chunk: np.ndarray, summary: Summary):
    ranges = _ranges(summary, self._names[1:])
    kept = chunk[:, 0] > 0
    out = {}
    for j, name in enumerate(self._names):
      if name not in ranges:
        continue
      edges = np.asarray(ranges[name][0])
      col = chunk[:, 1 + j]
      finite = np.isfinite(col)
      all_counts, _ = np.histogram(col[finite], bins=edges)
      sel_counts, _ = np.histogram(col[finite & kept], bins=edges)
      out[name] = np.stack([all_counts, sel_counts])
    yield out


class _SumHistograms(beam.CombineFn):

  def create_accumulator(self):
    return {}

  def add_input(self, acc, counts):
    for name, c in counts.items():
      acc[name] = acc[name] + c if name in acc else c.copy()
    return acc

  def merge_accumulators(self, accs):
    out = {}
    for acc in accs:
      self.add_input(out, acc)
    return out

  def extract_output(self, acc):
    return acc


def _rejected_example(rejected: Rejected, seed: int):
  key = (uniform_from_id(seed, "rejected\x00" + rejected.source), rejected.source)
  return rejected.reason, (key, {"source": safe_str(rejected.source),
                                 "excerpt": safe_str(rejected.excerpt[:EXCERPT_CHARS]),
                                 "detail": safe_str(rejected.detail[:EXCERPT_CHARS])})


def assemble(summary: Summary, quantiles: Dict[Tuple[str, str], list],
             histograms: Dict[str, np.ndarray], rejected: Dict[str, list],
             names: Sequence[str], ranked_by: Optional[str],
             higher_is_better: bool, order_name: Optional[str] = None) -> Dict[str, Any]:
  """The report's statistics as one JSON-able dict (see ReportStatistics)."""
  ranges = _ranges(summary, names)
  scores = {}
  for name in [CHARS] + list(names):
    if name not in ranges:
      continue
    entry = {"percentiles": {}, "min": {}, "max": {}}
    for part in (KEPT, DROPPED):
      q = quantiles.get((name, part))
      if q:
        # 101 quantiles: q[p] is the p-th percentile, q[0] and q[100] the exact extremes.
        entry["percentiles"][part] = {f"p{p}": q[p] for p in PERCENTILES}
        entry["min"][part] = summary.low[(name, part)]
        entry["max"][part] = summary.high[(name, part)]
    edges, log = ranges[name]
    counts = histograms.get(name)
    entry["histogram"] = {
        "edges": edges, "log": log,
        "all": counts[0].tolist() if counts is not None else [0] * (len(edges) - 1),
        "selected": counts[1].tolist() if counts is not None else [0] * (len(edges) - 1)}
    scores[name] = entry
  cutoff = None
  if ranked_by and (ranked_by, KEPT) in summary.low:
    # The worst score that was kept: everything better was kept too.
    cutoff = (summary.low if higher_is_better else summary.high)[(ranked_by, KEPT)]
  files = sorted(summary.files.items(), key=lambda kv: (-kv[1][0], kv[0]))
  clusters = sorted(summary.clusters.items(), key=lambda kv: (-kv[1][0], kv[0]))
  return {
      "documents": summary.documents, "selected": summary.selected,
      "chars": {"all": summary.chars[0], "selected": summary.chars[1]},
      "file_count": len(files),
      "files": [{"file": f, "documents": n, "selected": k} for f, (n, k) in files[:TOP_FILES]],
      "cluster_count": len(clusters),
      "clusters": [{"cluster": c, "documents": n, "selected": k}
                   for c, (n, k) in clusters[:TOP_CLUSTERS]],
      "score_names": list(names), "ranked_by": ranked_by, "order_name": order_name,
      "higher_is_better": higher_is_better, "cutoff": cutoff, "scores": scores,
      "scatter": {"columns": [CHARS, "selected"] + list(names),
                  "points": [p for _, p in summary.lists["scatter"].items()]},
      "examples": {name: [item for _, item in summary.lists[name].items()]
                   for name in summary.lists if name != "scatter"},
      "rejected_examples": {reason: [item for _, item in sorted(items, key=lambda t: t[0])]
                            for reason, items in sorted(rejected.items())},
  }


class ReportStatistics(beam.PTransform):
  """The report's statistics: a PCollection of one dict (see `assemble`).

  Input: a dict with `rejected` (Rejected records) and either the outputs of `tap()` run
  in another step that visits every outcome (`summaries`, `columns`: what the job does,
  in the scores/ step), or the outcomes themselves (`selected`: (Document, rank),
  `not_selected`: Documents), summarised here in a step of their own.

  Args:
    names: the numeric scores to summarise (missing ones are skipped per document).
    seed: the job's seed (the scatter sample and rejected excerpts are chosen by a hash
      of (seed, id), the same on every runner and worker count).
    sort_key: the order of the examples just past the cutoff and at the bottom
      (ascending = better: the sampler's key, or its quality pool's); None: no such
      examples (a draw's order says little about a document, and costs a hash each).
    ranked_by: the score the sampler ranks by (its cutoff is reported), None for draws.
    order_name: the score sort_key orders by (None: a draw order), for the page.
  """

  def __init__(self, names: Sequence[str], seed: int, sort_key: Callable,
               ranked_by: Optional[str] = None, higher_is_better: bool = True,
               order_name: Optional[str] = None):
    super().__init__()
    self._names = list(names)
    self._seed = seed
    self._sort_key = sort_key
    self._ranked_by = ranked_by
    self._higher = higher_is_better
    self._order_name = order_name

  def tap(self) -> ReportTap:
    """The per-document part, to run in a step of the caller's (see ReportTap)."""
    return ReportTap(self._names, self._seed, self._sort_key)

  def expand(self, pcolls):
    names, seed = self._names, self._seed
    if "summaries" in pcolls:
      summaries, columns = [pcolls["summaries"]], [pcolls["columns"]]
    else:
      # Each input is summarised where it is produced (fused there): the documents are
      # never flattened into one PCollection, which would encode them all once more.
      summaries, columns = [], []
      for label, key in (("Selected", "selected"), ("NotSelected", "not_selected")):
        parts = pcolls[key] | f"Summarize{label}" >> beam.ParDo(
            _SummarizeBundle(self.tap())).with_outputs(*ReportTap.TAGS)
        summaries.append(parts[SUMMARY_TAG])
        columns.append(parts[COLUMNS_TAG])
    summary = (summaries | "FlattenSummaries" >> beam.Flatten()
               | "MergeSummaries" >> beam.CombineGlobally(_MergeSummaries(names)))
    columns = columns | "FlattenColumns" >> beam.Flatten()
    quantiles = (columns
                 | "ValueBatches" >> beam.FlatMap(_column_values, names)
                 | "Percentiles" >> beam.ApproximateQuantiles.PerKey(
                     101, input_batched=True))
    histograms = (columns
                  | "Bin" >> beam.ParDo(_Histograms(names),
                                        beam.pvalue.AsSingleton(summary))
                  | "SumBins" >> beam.CombineGlobally(_SumHistograms()))
    rejected = (pcolls["rejected"]
                | "RejectedExample" >> beam.Map(_rejected_example, seed)
                | "FewPerReason" >> beam.combiners.Top.SmallestPerKey(
                    REJECTED_EXAMPLES, key=lambda t: t[0]))
    ranked_by, higher, order_name = self._ranked_by, self._higher, self._order_name
    return (summary
            | "Assemble" >> beam.Map(
                lambda s, q, h, r: assemble(s, q, h, r, names, ranked_by, higher,
                                            order_name),
                beam.pvalue.AsDict(quantiles), beam.pvalue.AsSingleton(histograms),
                beam.pvalue.AsDict(rejected)))
