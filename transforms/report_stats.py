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

The result is one JSON-able dict (report.json; beam_pipelines/report.py draws it).
"""
from __future__ import annotations

import collections
import heapq
import itertools
import math
import zlib
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms.records import CLUSTER, Document, Rejected, safe_str
from transforms.sampling import uniform_from_id

# Document length in characters, reported like a score.
CHARS = "chars"
PERCENTILES = (1, 10, 50, 90, 99)
HISTOGRAM_BINS = 40
SCATTER_POINTS = 1000
EXAMPLES = 5
REJECTED_EXAMPLES = 3
TOP_FILES = 20
TOP_CLUSTERS = 30  # the largest clusters shown with their selected share
EXCERPT_CHARS = 300
# Columns are handed on in chunks of this many documents (bounds a bundle's memory).
_CHUNK = 10_000
# Log-spaced bins for a score of at least 1 that spans more than this factor (lengths,
# perplexity, densities); probabilities and other scores keep linear bins.
_LOG_SPAN = 100.0
KEPT, DROPPED = "kept", "dropped"


def _finite(value) -> Optional[float]:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  value = float(value)
  return value if math.isfinite(value) else None


def _example(doc: Document, rank: Optional[int], names: Sequence[str]) -> Dict[str, Any]:
  return {"id": safe_str(doc.id), "source": safe_str(doc.source), "rank": rank,
          "chars": len(doc.text), "excerpt": safe_str(doc.text[:EXCERPT_CHARS]),
          "scores": {n: _finite(doc.scores.get(n)) for n in names
                     if doc.scores.get(n) is not None}}


class _Ascending:
  """A heap entry's key, compared by `key` alone. Equality stays identity, so that two
  equal keys (a record read twice) never make a heap compare their items (closures)."""
  __slots__ = ("key",)

  def __init__(self, key):
    self.key = key

  def __lt__(self, other):
    return self.key < other.key

  def __reduce__(self):
    return (type(self), (self.key,))


class _Descending(_Ascending):
  """Reverses the order of a key of any comparable type (tuples of floats and strings)."""
  __slots__ = ()

  def __lt__(self, other):
    return other.key < self.key


class _Smallest:
  """The n smallest (key, item) pairs seen (ties, such as a record read twice, keep
  either; items are never compared). `wants` rejects most keys with one comparison, so
  an item is built only for the few that are kept."""

  def __init__(self, n: int):
    self.n = n
    self.heap: List[Tuple[_Descending, Any]] = []  # a max-heap of the kept keys
    self._worst = None  # the largest kept key, once n are kept

  def wants(self, key) -> bool:
    return self._worst is None or key < self._worst

  def push(self, key, item) -> None:
    if len(self.heap) < self.n:
      heapq.heappush(self.heap, (_Descending(key), item))
    else:
      heapq.heapreplace(self.heap, (_Descending(key), item))
    if len(self.heap) == self.n:
      self._worst = self.heap[0][0].key

  def add(self, key, item) -> None:
    if self.wants(key):
      self.push(key, item)

  def items(self) -> List[Tuple[Any, Any]]:
    """Smallest first."""
    return sorted(((d.key, item) for d, item in self.heap), key=lambda kv: kv[0])


class _Largest(_Smallest):
  """The n largest (key, item) pairs seen (a min-heap)."""

  def wants(self, key) -> bool:
    return self._worst is None or key > self._worst

  def push(self, key, item) -> None:
    if len(self.heap) < self.n:
      heapq.heappush(self.heap, (_Ascending(key), item))
    else:
      heapq.heapreplace(self.heap, (_Ascending(key), item))
    if len(self.heap) == self.n:
      self._worst = self.heap[0][0].key

  def items(self) -> List[Tuple[Any, Any]]:
    """Largest first."""
    return sorted(((a.key, item) for a, item in self.heap), key=lambda kv: kv[0],
                  reverse=True)


def _lists() -> Dict[str, _Smallest]:
  """The bounded lists of a Summary: the scatter sample (smallest hash of (seed, id)),
  the top (smallest ranks), the last selected (largest ranks), the first not selected
  (smallest sort keys) and the bottom (largest sort keys)."""
  return {"scatter": _Smallest(SCATTER_POINTS), "top": _Smallest(EXAMPLES),
          "last_selected": _Largest(EXAMPLES), "first_not_selected": _Smallest(EXAMPLES),
          "bottom": _Largest(EXAMPLES)}


def scatter_seed(seed: int) -> int:
  """The CRC-32 state the scatter hash of every id starts from."""
  return zlib.crc32(b"%d\x00report\x00" % seed)


class Summary:
  """A mergeable summary of (Document, rank) outcomes: what the per-bundle DoFn builds
  and the global CombineFn merges. `columns` are CHARS then the score names; counts,
  characters and extremes are added a chunk of columns at a time (numpy)."""

  def __init__(self, names: Sequence[str]):
    self.names = list(names)
    self.documents = 0
    self.selected = 0
    self.chars = [0, 0]                             # all, selected
    self.files: Dict[str, List[int]] = {}           # file -> [documents, selected]
    self.clusters: Dict[int, List[int]] = {}        # cluster -> [documents, selected]
    self.low: Dict[Tuple[str, str], float] = {}     # (column, kept|dropped) -> min
    self.high: Dict[Tuple[str, str], float] = {}
    self.lists = _lists()

  @property
  def columns(self) -> List[str]:
    return [CHARS] + self.names

  def add_chunk(self, chunk: np.ndarray) -> None:
    """Counts, characters and extremes of a chunk of rows."""
    kept = chunk[:, 0] > 0
    self.documents += len(chunk)
    self.selected += int(kept.sum())
    self.chars[0] += int(chunk[:, 1].sum())
    self.chars[1] += int(chunk[kept, 1].sum())
    for j, name in enumerate(self.columns):
      col = chunk[:, 1 + j]
      finite = np.isfinite(col)
      for part, mask in ((KEPT, kept), (DROPPED, ~kept)):
        values = col[mask & finite]
        if values.size:
          key = (name, part)
          self.low[key] = min(float(values.min()), self.low.get(key, math.inf))
          self.high[key] = max(float(values.max()), self.high.get(key, -math.inf))

  def materialize(self) -> "Summary":
    for bounded in self.lists.values():
      bounded.heap = [(k, item() if callable(item) else item) for k, item in bounded.heap]
    return self

  def merge(self, other: "Summary") -> "Summary":
    self.documents += other.documents
    self.selected += other.selected
    self.chars = [a + b for a, b in zip(self.chars, other.chars)]
    for mine, theirs in ((self.files, other.files), (self.clusters, other.clusters)):
      for f, (n, k) in theirs.items():
        counts = mine.setdefault(f, [0, 0])
        counts[0] += n
        counts[1] += k
    for key, v in other.low.items():
      self.low[key] = min(v, self.low.get(key, v))
    for key, v in other.high.items():
      self.high[key] = max(v, self.high.get(key, v))
    for name, bounded in other.lists.items():
      for key, item in bounded.items():
        self.lists[name].add(key, item)
    return self

  def __getstate__(self):
    # The deferred examples are closures: built before the summary leaves the process.
    self.materialize()
    return self.__dict__


def _number_or_nan(value) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return math.nan
  return float(value)  # inf stays inf: np.isfinite drops it with NaN


_PLAIN_NUMBERS = frozenset((float, int, type(None)))


def _as_numbers(values: List[Any]) -> np.ndarray:
  """Score values as float64, NaN for a missing or non-numeric one (a bool, a text). A
  chunk of only floats, ints and None (the usual case) is converted by numpy at once."""
  if set(map(type, values)) <= _PLAIN_NUMBERS:
    return np.array(values, dtype=np.float64)  # None becomes NaN
  return np.array([_number_or_nan(v) for v in values], dtype=np.float64)


# The tags of a ReportTap's outputs: one Summary per bundle, and the score columns.
SUMMARY_TAG, COLUMNS_TAG = "report_summary", "report_columns"


def _in_global_window(value):
  """For outputs emitted from finish_bundle, which has no element to take a window from."""
  return WindowedValue(value, GlobalWindow().max_timestamp(), [GlobalWindow()])


class ReportTap:
  """The report's per-document part, for a step that visits every outcome anyway.

  The job runs it inside the step that formats the scores/ rows (WriteOutputs), so the
  report adds no Beam step per document: that step's per-element dispatch was most of
  the report's cost. `start()` at each bundle's start gives a BundleSummary; the outputs
  it returns go under their tags (SUMMARY_TAG, COLUMNS_TAG) to ReportStatistics.
  """
  TAGS = (SUMMARY_TAG, COLUMNS_TAG)

  def __init__(self, names: Sequence[str], seed: int, sort_key: Optional[Callable]):
    self._names = list(names)
    self._seed = scatter_seed(seed)
    self._sort_key = sort_key

  def start(self) -> "BundleSummary":
    return BundleSummary(self._names, self._seed, self._sort_key)


class BundleSummary:
  """One bundle's summary of (Document, rank or None) outcomes: a Summary, and the score
  columns handed on as float64 arrays [selected, chars, score...] of at most _CHUNK rows.

  `add` is the hottest code of the report (once per document), so it only appends to
  column lists (and tests a bound for the few selected examples); the input files'
  counts, the scatter sample's hashes, extremes and sums are computed a chunk at a time
  (numpy, list comprehensions, Counter).
  """

  def __init__(self, names: Sequence[str], seed: int, sort_key: Optional[Callable]):
    self._names = list(names)
    self._seed = seed
    self._sort_key = sort_key
    self._summary = Summary(names)
    self._kept: List[bool] = []
    self._chars: List[int] = []
    self._ids: List[str] = []
    self._sources: List[str] = []
    self._scores: List[Any] = []  # n x len(names) values, flat
    self._clusters = self._summary.clusters
    self._scatter = self._summary.lists["scatter"]
    self._scatter_bound = 1 << 32  # above every CRC-32 until the sample is full

  def add(self, doc: Document, rank: Optional[int]) -> Optional[Tuple[str, np.ndarray]]:
    """Adds one outcome; returns (COLUMNS_TAG, chunk) when a chunk is full."""
    kept = rank is not None
    self._kept.append(kept)
    self._chars.append(len(doc.text))
    self._ids.append(doc.id)
    self._sources.append(doc.source)
    scores = doc.scores
    if self._names:
      # One flat list (no container per document): made numbers a chunk at a time.
      self._scores.extend(map(scores.get, self._names))
    if scores:
      cluster = scores.get(CLUSTER)
      if cluster is not None:
        counts = self._clusters.get(cluster)
        if counts is None:
          counts = self._clusters[cluster] = [0, 0]
        counts[0] += 1
        if kept:
          counts[1] += 1
    if kept:
      self._rank_examples(doc, rank)
    if self._sort_key is not None:
      self._order_examples(doc, rank, kept)
    if len(self._kept) >= _CHUNK:
      return COLUMNS_TAG, self._flush()
    return None

  def _rank_examples(self, doc: Document, rank: int) -> None:
    lists, names, key = self._summary.lists, self._names, (rank,)
    if lists["top"].wants(key):
      lists["top"].push(key, lambda: _example(doc, rank, names))
    if lists["last_selected"].wants(key):
      lists["last_selected"].push(key, lambda: _example(doc, rank, names))

  def _order_examples(self, doc: Document, rank: Optional[int], kept: bool) -> None:
    lists, names, order = self._summary.lists, self._names, self._sort_key(doc)
    if not kept and lists["first_not_selected"].wants(order):
      lists["first_not_selected"].push(order, lambda: _example(doc, rank, names))
    if lists["bottom"].wants(order):
      lists["bottom"].push(order, lambda: _example(doc, rank, names))

  def _flush(self) -> np.ndarray:
    n = len(self._kept)
    chunk = np.empty((n, 2 + len(self._names)), dtype=np.float64)
    chunk[:, 0] = self._kept
    chunk[:, 1] = self._chars
    if self._names:
      chunk[:, 2:] = _as_numbers(self._scores).reshape(n, len(self._names))
    self._count_files()
    self._scatter_points(chunk)
    self._kept, self._chars, self._ids, self._sources, self._scores = [], [], [], [], []
    self._summary.add_chunk(chunk)
    return chunk

  def _count_files(self) -> None:
    """Documents and selected per input file (a source is "path:line", "path:#record" or
    "path:after#record"), counted a chunk at a time."""
    sources = self._sources
    files = [s.rpartition(":")[0] for s in sources]
    if "" in files:  # a source without a colon (or starting with one): the slow way
      files = [s[:i] if (i := s.rfind(":")) >= 0 else s for s in sources]
    all_counts = collections.Counter(files)
    kept_counts = collections.Counter(itertools.compress(files, self._kept))
    totals = self._summary.files
    for file, count in all_counts.items():
      counts = totals.get(file)
      if counts is None:
        counts = totals[file] = [0, 0]
      counts[0] += count
      counts[1] += kept_counts.get(file, 0)

  def _scatter_points(self, chunk: np.ndarray) -> None:
    """The scatter sample: the documents with the smallest CRC-32 of (seed, id) (cheap,
    the same on every runner), ties broken by the id and source (unique). The hashes are
    taken a chunk at a time; only those under the bound are looked at, smallest first,
    so that the bound tightens as fast as it can."""
    n = len(self._ids)
    hashes = np.array(list(map(zlib.crc32, map(str.encode, self._ids),
                               itertools.repeat(self._seed, n))), dtype=np.int64)
    candidates = np.flatnonzero(hashes <= self._scatter_bound)
    candidates = candidates[np.argsort(hashes[candidates], kind="stable")]
    scatter = self._scatter
    for i in candidates.tolist():
      h = int(hashes[i])
      if h > self._scatter_bound:
        break
      key = (h, self._ids[i], self._sources[i])
      if scatter.wants(key):
        row = chunk[i]
        scatter.push(key, [float(row[1]), bool(row[0] > 0)]
                     + [float(v) if math.isfinite(v) else None for v in row[2:].tolist()])
        if scatter._worst is not None:
          self._scatter_bound = scatter._worst[0]

  def finish(self) -> List[Tuple[str, WindowedValue]]:
    """The bundle's last outputs (windowed: for finish_bundle)."""
    out = []
    if self._kept:
      out.append((COLUMNS_TAG, _in_global_window(self._flush())))
    if self._summary.documents:
      out.append((SUMMARY_TAG, _in_global_window(self._summary.materialize())))
    return out

  def summary(self) -> "Summary":
    """The bundle's Summary so far, its columns included (for tests)."""
    if self._kept:
      self._flush()
    return self._summary.materialize()


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
