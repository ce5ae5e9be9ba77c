"""Exact top-k selection and ranking that never gathers the corpus on one worker.

Every document has a sort key (ascending = better; the key ends with the document id and
its source, so only a record that repeats an (id, source) ties, and the documents tied at
the cutoff are then settled apart, keeping k exact). The k-th key is found without
sorting everything:

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
import logging
from typing import Callable, Dict, List, Optional

import apache_beam as beam
from apache_beam.transforms import combiners
from apache_beam.transforms.stats import ApproximateQuantiles

from transforms.metrics import counter, stage_clock

NOT_SELECTED = "not_selected"
# Documents whose key equals the cutoff when more of them share it than are selected
# (a record that repeats an (id, source)): SettleTies takes the right number.
_TIES = "ties"
_LOG = logging.getLogger(__name__)


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


def make_budget_plan(n: int, histogram: Dict[int, tuple], budget: int,
                     docs_per_file: int = 50_000) -> SelectionPlan:
  """Like make_plan for a budget of weight (tokens) instead of a count: the boundary is
  the partition where the cumulative weight reaches `budget`; `need` is its weight still
  to take (settled by budget_cutoff), and k is filled in there. histogram: partition ->
  (documents, weight). A budget above the total selects everything."""
  file_of, cumulative, weight, file_start = {}, 0, 0, 0
  parts = sorted(histogram)
  if not parts or budget <= 0:
    return SelectionPlan(n, 0, None, 0, {})
  for part in parts:
    if cumulative - file_start >= docs_per_file:
      file_start = cumulative
    file_of[part] = file_start
    count, part_weight = histogram[part]
    if weight + part_weight >= budget or part == parts[-1]:
      # `need` is weight here; k (documents) is known once the boundary is sorted.
      return SelectionPlan(n, cumulative, part, budget - weight, file_of)
    cumulative += count
    weight += part_weight
  raise AssertionError("unreachable")


def _sum_pairs(pairs) -> tuple:
  """(documents, weight) summed (a combiner: its inputs are also its partial sums)."""
  docs = weight = 0
  for d, w in pairs:
    docs += d
    weight += w
  return docs, weight


def budget_cutoff(boundary: List[tuple], plan: SelectionPlan):
  """(cutoff key, final plan) for a budget plan: the boundary's documents are taken in key
  order until their weight reaches the rest of the budget (the last one whole); plan.k
  becomes the documents selected in all."""
  if plan.boundary is None:
    return None, plan
  taken, weight, cutoff = 0, 0, None
  for key, w in sorted(boundary, key=lambda kw: kw[0]):
    taken += 1
    weight += w
    cutoff = key
    if weight >= plan.need:
      break
  else:
    _LOG.warning("The budget is more than the %d documents hold: every document is "
                 "selected", plan.k + taken)
  return cutoff, dataclasses.replace(plan, k=plan.k + taken, need=taken)


def _settle_budget(boundary: List[tuple], draft: SelectionPlan):
  """(with_ties' cutoff, final plan) of a budget plan's gathered boundary."""
  cutoff, plan = budget_cutoff(boundary, draft)
  return with_ties([key for key, _ in boundary], plan, cutoff), plan


def cutoff_key(boundary_keys: List, plan: SelectionPlan):
  """The exact key of the k-th document (None when nothing is selected)."""
  if plan.boundary is None:
    return None
  keys = sorted(boundary_keys)
  if len(keys) < plan.need:
    raise ValueError(f"boundary partition has {len(keys)} keys, needs {plan.need}")
  return keys[plan.need - 1]


def with_ties(boundary_keys: List, plan: SelectionPlan, cutoff) -> Optional[tuple]:
  """(cutoff key, take, tied): of the boundary's `tied` keys equal to the cutoff, `take`
  are selected. Keys end with the id and source, so tied > take only when a record repeats
  an (id, source); k stays exact all the same."""
  if cutoff is None:
    return None
  less = sum(1 for key in boundary_keys if key < cutoff)
  tied = sum(1 for key in boundary_keys if not key < cutoff and not cutoff < key)
  return cutoff, plan.need - less, tied


class _Split(beam.DoFn):
  """Routes each document: selected (keyed by partition), not selected, or one of more
  documents tied at the cutoff than are selected (_TIES, settled by _SettleTies)."""

  def __init__(self, counter_name: str):
    self._counter_name = counter_name

  def setup(self):
    self._counter = counter(self._counter_name)

  def process(self, keyed, bounds, plan: SelectionPlan, cutoff):
    key, doc = keyed
    part = partition_of(key, bounds)
    selected = plan.boundary is not None and part <= plan.boundary
    if selected and part == plan.boundary:
      cut, take, tied = cutoff
      selected = key <= cut
      if selected and take < tied and not key < cut:
        yield beam.pvalue.TaggedOutput(_TIES, (plan.file_of[part], (key, doc)))
        return
    if selected:
      self._counter.inc()
      yield plan.file_of[part], (key, doc)
    else:
      yield beam.pvalue.TaggedOutput(NOT_SELECTED, doc)


class _SettleTies(beam.DoFn):
  """All the documents tied at the cutoff (equal keys: any of them will do) -> `take`
  selected, the rest not."""

  def __init__(self, counter_name: str):
    self._counter_name = counter_name

  def process(self, tied: List, cutoff):
    take = cutoff[1] if cutoff is not None else 0
    # By content, not arrival order: which copy is kept never depends on the workers.
    tied = sorted(tied, key=lambda t: (t[1][1].text, repr(sorted(t[1][1].scores.items()))))
    for i, (file_start, (key, doc)) in enumerate(tied):
      if i < take:
        counter(self._counter_name).inc()
        yield file_start, (key, doc)
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
    weight_fn, keep_weight: instead of a number of documents, select in key order until
      the selected documents' weight_fn (e.g. tokens) adds up to at least keep_weight
      (the last document whole; everything when the input holds less). Exact: the
      boundary partition is found from per-partition weights and settled by sorting it.

  Returns:
    dict: `ranked` (rank_start, [(rank, Document), ...]) per output file, in rank order
    inside; `not_selected` Documents; `plan` (singleton SelectionPlan).
  """

  def __init__(self, key_fn: Callable, keep_fraction: Optional[float] = None,
               keep_count: Optional[int] = None, num_partitions: int = 1000,
               docs_per_file: int = 50_000, k_of=None, rank: bool = True,
               counter_name: str = "selected", weight_fn: Optional[Callable] = None,
               keep_weight: Optional[int] = None):
    super().__init__()
    given = [v for v in (keep_fraction, keep_count, keep_weight) if v is not None]
    if len(given) != 1:
      raise ValueError("give exactly one of keep_fraction, keep_count and keep_weight")
    if (weight_fn is None) != (keep_weight is None):
      raise ValueError("keep_weight needs weight_fn")
    self._weight_fn, self._keep_weight = weight_fn, keep_weight
    self._key_fn = key_fn
    self._fraction = keep_fraction
    self._count = keep_count
    self._partitions = num_partitions
    self._docs_per_file = docs_per_file
    self._k_of = k_of
    self._rank = rank
    self._counter_name = counter_name

  def expand(self, docs):
    key_fn = self._key_fn
    keyed = docs | "Key" >> beam.Map(lambda d: (key_fn(d), d))
    keys = keyed | "KeysOnly" >> beam.Map(lambda kd: kd[0])
    n = keys | "CountDocuments" >> combiners.Count.Globally()
    bounds = beam.pvalue.AsSingleton(
        keys | "KeyQuantiles" >> ApproximateQuantiles.Globally(self._partitions + 1))
    if self._keep_weight is not None:
      plan, cutoff = self._budget_plan(keyed, keys, n, bounds)
    else:
      plan, cutoff = self._count_plan(keys, n, bounds)
    plan_si = beam.pvalue.AsSingleton(plan)
    cutoff_si = beam.pvalue.AsSingleton(cutoff)
    split = keyed | "Split" >> beam.ParDo(
        _Split(self._counter_name), bounds, plan_si, cutoff_si).with_outputs(
            NOT_SELECTED, _TIES, main="selected")
    ties = (split[_TIES]
            | "GatherTies" >> beam.combiners.ToList()
            | "SettleTies" >> beam.ParDo(_SettleTies(self._counter_name), cutoff_si)
            .with_outputs(NOT_SELECTED, main="selected"))
    selected = (split.selected, ties.selected) | "WithTies" >> beam.Flatten()
    out = {"not_selected": (split[NOT_SELECTED], ties[NOT_SELECTED])
                           | "NotSelectedWithTies" >> beam.Flatten(),
           "plan": plan}
    if not self._rank:
      out["selected"] = selected | "DropKeys" >> beam.Map(lambda kv: kv[1][1])
      return out
    out["ranked"] = (selected
                     | "GroupByFile" >> beam.GroupByKey()
                     | "RankFile" >> beam.Map(_rank_file))
    return out

  def _count_plan(self, keys, n, bounds):
    """(plan, cutoff) for k documents."""
    fraction, count, per_file = self._fraction, self._count, self._docs_per_file
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
    return plan, boundary | "Cutoff" >> beam.Map(
        lambda keys, p: with_ties(keys, p, cutoff_key(keys, p)), plan_si)

  def _budget_plan(self, keyed, keys, n, bounds):
    """(plan, cutoff) for a weight budget: per-partition (documents, weight), then the
    boundary partition's (key, weight) pairs, sorted, settle the cutoff and k."""
    weight_fn, budget, per_file = self._weight_fn, self._keep_weight, self._docs_per_file
    weighted = keyed | "KeyWeight" >> beam.Map(lambda kd: (kd[0], int(weight_fn(kd[1]))))
    histogram = (weighted
                 | "PartitionOf" >> beam.Map(lambda kw, b: (partition_of(kw[0], b),
                                                            (1, kw[1])), bounds)
                 | "WeighPartitions" >> beam.CombinePerKey(_sum_pairs))
    draft = n | "Plan" >> beam.Map(
        lambda total, hist: make_budget_plan(total, hist, budget, per_file),
        beam.pvalue.AsDict(histogram))
    draft_si = beam.pvalue.AsSingleton(draft)
    settled = ((weighted
                | "InBoundary" >> beam.Filter(
                    lambda kw, b, p: p.boundary is not None
                    and partition_of(kw[0], b) == p.boundary, bounds, draft_si)
                | "GatherBoundary" >> beam.combiners.ToList())
               | "Settle" >> beam.Map(_settle_budget, draft_si))
    plan = settled | "FinalPlan" >> beam.Map(lambda cp: cp[1])
    return plan, settled | "Cutoff" >> beam.Map(lambda cp: cp[0])
