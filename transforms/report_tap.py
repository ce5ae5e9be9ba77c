"""The report's per-document part, ReportTap and its BundleSummary: run inside a step that
visits every outcome anyway (the job's scores/ step), it summarises each bundle into a
Summary and hands the score values on as compact numpy columns, a chunk at a time, to
ReportStatistics (transforms/report_stats.py).
"""
from __future__ import annotations

import collections
import itertools
import math
import zlib
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.windowed_value import WindowedValue

from transforms.records import CLUSTER, Document, safe_str
from transforms.report_summary import Summary

EXCERPT_CHARS = 300
# Columns are handed on in chunks of this many documents (bounds a bundle's memory).
_CHUNK = 10_000


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


def scatter_seed(seed: int) -> int:
  """The CRC-32 state the scatter hash of every id starts from."""
  return zlib.crc32(b"%d\x00report\x00" % seed)


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
