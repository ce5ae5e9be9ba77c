"""The report's mergeable Summary of (Document, rank) outcomes: counts per input file and
cluster, characters, the exact min and max of every score, and the bounded lists (the
scatter sample and the examples) that keep the best few by a deterministic key, never by
a random draw. A ReportTap (transforms/report_tap.py) builds one per bundle; the
ReportStatistics transform (transforms/report_stats.py) merges them.
"""
from __future__ import annotations

import heapq
import math
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

# Document length in characters, reported like a score.
CHARS = "chars"
SCATTER_POINTS = 1000
EXAMPLES = 5
KEPT, DROPPED = "kept", "dropped"


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
