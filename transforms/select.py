"""Exact top-k selection and ranking that never gathers the corpus on one worker.

Every document has a sort key (ascending = better; ties are impossible because the key
ends with the document id and its source). The k-th key is found without sorting
everything:

1. `ApproximateQuantiles` cuts the key space into P ranges ("partitions").
2. An exact histogram counts the documents in each partition (a small side input).
3. The partition holding the k-th document (the boundary) is the only one whose keys
   are gathered; its `need`-th key is the exact cutoff.
4. Selected documents are grouped by output file (consecutive partitions), sorted inside
   it, and ranked from the file's first rank (the count of all better partitions).

Side inputs stay small (P keys, P counts); the largest gathered set is one partition,
about N/P documents.
"""
from __future__ import annotations

import bisect
import dataclasses
import decimal
from typing import Callable, Dict, List, Optional

import apache_beam as beam
from apache_beam.transforms import combiners
from apache_beam.transforms.stats import ApproximateQuantiles

from transforms.metrics import counter, stage_clock

NOT_SELECTED = "not_selected"


def resolve_k(n: int, keep_fraction: Optional[float], keep_count: Optional[int]) -> int:
  """How many to select: keep_count, or floor(n * fraction) but at least 1 if n > 0."""
  if n <= 0:
    return 0
  if keep_count is not None:
    return min(int(keep_count), n)
  # Decimal avoids float artefacts such as 0.29 * 100 = 28.999999999999996.
  k = int(decimal.Decimal(repr(float(keep_fraction))) * n)
  return min(n, max(1, k))


def partition_of(key, bounds: List) -> int:
  return bisect.bisect_left(bounds, key)


@dataclasses.dataclass(frozen=True)
class SelectionPlan:
  """Where the k-th document lies, from the exact per-partition counts."""
  n: int
  k: int
  boundary: Optional[int]            # partition holding the k-th document
  need: int                          # how many to take from the boundary partition
  file_of: Dict[int, int]            # selected partition -> output file (its first rank)


def make_plan(n: int, histogram: Dict[int, int], k: int,
              docs_per_file: int = 50_000) -> SelectionPlan:
  """Finds the boundary partition and packs consecutive selected partitions into output
  files of at least `docs_per_file` documents (the last may be smaller)."""
  if k <= 0:
    return SelectionPlan(n, 0, None, 0, {})
  file_of, cumulative, file_start = {}, 0, 0
  for part in sorted(histogram):
    if cumulative - file_start >= docs_per_file:
      file_start = cumulative
    file_of[part] = file_start
    if cumulative + histogram[part] >= k:
      return SelectionPlan(n, k, part, k - cumulative, file_of)
    cumulative += histogram[part]
  raise ValueError(f"k={k} exceeds the {cumulative} documents counted")


def cutoff_key(boundary_keys: List, plan: SelectionPlan):
  """The exact key of the k-th document (None when nothing is selected)."""
  if plan.boundary is None:
    return None
  keys = sorted(boundary_keys)
  if len(keys) < plan.need:
    raise ValueError(f"boundary partition has {len(keys)} keys, needs {plan.need}")
  return keys[plan.need - 1]


class _Split(beam.DoFn):
  """Routes each document: selected (keyed by partition) or not selected."""

  def __init__(self, counter_name: str):
    self._counter_name = counter_name

  def setup(self):
    self._counter = counter(self._counter_name)

  def process(self, keyed, bounds, plan: SelectionPlan, cutoff):
    key, doc = keyed
    part = partition_of(key, bounds)
    if plan.boundary is not None and (
        part < plan.boundary or (part == plan.boundary and key <= cutoff)):
      self._counter.inc()
      yield plan.file_of[part], (key, doc)
    else:
      yield beam.pvalue.TaggedOutput(NOT_SELECTED, doc)


def _rank_file(element):
  """Sorts the documents of one output file and numbers them from its first rank."""
  stage_clock("rank")
  start, items = element
  items = sorted(items, key=lambda kd: kd[0])
  return start, [(start + i, doc) for i, (_, doc) in enumerate(items)]


class SelectTopK(beam.PTransform):
  """Selects exactly k documents with the smallest keys and ranks them.

  Args:
    key_fn: Document -> sortable key, ascending = better; must be unique per document
      (end it with the id and source).
    keep_fraction / keep_count: how many (see resolve_k).
    num_partitions: P, the number of key ranges. One output file holds whole ranges and
      is sorted in one worker's memory, so N / P documents must fit there.
    docs_per_file: consecutive selected ranges are packed into files of at least this
      many documents.
    k_of: optional side input (a number of documents) that k is computed from instead
      of this input's own count, e.g. the whole corpus when selecting from a pool; k is
      capped by the documents present.
    rank: False returns the selected documents unranked (`selected`), without grouping.
    counter_name: the counter of selected documents.

  Returns:
    dict: `ranked` (rank_start, [(rank, Document), ...]) per output file, in rank order
    inside; `not_selected` Documents; `plan` (singleton SelectionPlan).
  """

  def __init__(self, key_fn: Callable, keep_fraction: Optional[float] = None,
               keep_count: Optional[int] = None, num_partitions: int = 1000,
               docs_per_file: int = 50_000, k_of=None, rank: bool = True,
               counter_name: str = "selected"):
    super().__init__()
    if (keep_fraction is None) == (keep_count is None):
      raise ValueError("give exactly one of keep_fraction and keep_count")
    self._key_fn = key_fn
    self._fraction = keep_fraction
    self._count = keep_count
    self._partitions = num_partitions
    self._docs_per_file = docs_per_file
    self._k_of = k_of
    self._rank = rank
    self._counter_name = counter_name

  def expand(self, docs):
    key_fn, fraction, count = self._key_fn, self._fraction, self._count
    per_file = self._docs_per_file
    keyed = docs | "Key" >> beam.Map(lambda d: (key_fn(d), d))
    keys = keyed | "KeysOnly" >> beam.Map(lambda kd: kd[0])
    n = keys | "CountDocuments" >> combiners.Count.Globally()
    bounds = beam.pvalue.AsSingleton(
        keys | "KeyQuantiles" >> ApproximateQuantiles.Globally(self._partitions + 1))
    histogram = (keys
                 | "PartitionOf" >> beam.Map(partition_of, bounds)
                 | "CountPerPartition" >> combiners.Count.PerElement())
    k_of = self._k_of if self._k_of is not None else beam.pvalue.AsSingleton(n)
    plan = n | "Plan" >> beam.Map(
        lambda total, hist, base: make_plan(
            total, hist, min(total, resolve_k(base, fraction, count)), per_file),
        beam.pvalue.AsDict(histogram), k_of)
    plan_si = beam.pvalue.AsSingleton(plan)
    boundary = (keys
                | "InBoundary" >> beam.Filter(
                    lambda key, b, p: p.boundary is not None
                    and partition_of(key, b) == p.boundary, bounds, plan_si)
                | "GatherBoundary" >> beam.combiners.ToList())
    cutoff = boundary | "Cutoff" >> beam.Map(cutoff_key, plan_si)
    split = keyed | "Split" >> beam.ParDo(
        _Split(self._counter_name), bounds, plan_si, beam.pvalue.AsSingleton(cutoff)).with_outputs(
            NOT_SELECTED, main="selected")
    out = {"not_selected": split[NOT_SELECTED], "plan": plan}
    if not self._rank:
      out["selected"] = split.selected | "DropKeys" >> beam.Map(lambda kv: kv[1][1])
      return out
    out["ranked"] = (split.selected
                     | "GroupByFile" >> beam.GroupByKey()
                     | "RankFile" >> beam.Map(_rank_file))
    return out
