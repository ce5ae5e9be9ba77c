"""Selection inside clusters: the balanced cap (Vo et al. 2024), SemDeDup (Abbas et al.
2023) and SSL prototypes (Sorscher et al. 2022), on the `cluster` and `cluster_distance`
that transforms/kmeans.py attaches.

The final selection is still one SelectTopK over a sort key (beam_pipelines/samplers.py);
what is computed here is what that key reads:
- ClusterQuota marks each document `in_quota` when it is among its cluster's quota of
  best documents by a within-cluster key (a hash draw, or a quality score). The quotas
  add up to k, so the k documents in quota are exactly the selection.
- SemDeDup gives each document `duplicate_of`: the id of the document kept in its place,
  or None when it is kept itself.

The quotas and the greedy SemDeDup themselves are in transforms/algorithms/
cluster_sampling.py, without Beam.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Optional

import apache_beam as beam
import numpy as np

from transforms.algorithms.cluster_sampling import (  # noqa: F401  (re-exported)
    balanced_quotas, dedup_group, subgroup_bits, subgroup_planes)
from transforms.metrics import SEMDEDUP_DUPLICATES, SEMDEDUP_SPLIT_GROUPS, counter
from transforms.records import (ASK_LLM_SCORE, CLUSTER, DUPLICATE_OF, QUALITY_SCORE,
                                Document)
from transforms.sampling import uniform_from_id
from transforms.select import resolve_k
from transforms.topics import MISSING_GROUP


@dataclasses.dataclass(frozen=True)
class QuotaPlan:
  """What the balanced samplers decided, for metrics.json and the report."""
  k: int
  cap: float
  quotas: Dict[Any, int]
  capped: int  # groups larger than their quota
  balance_by: str = "cluster"  # the groups capped: cluster, topic, field:NAME
  missing: Optional[int] = None  # field:NAME: documents without the field

  def summary(self) -> Dict[str, Any]:
    out = {"k": self.k, "cap": round(self.cap, 3), "capped_clusters": self.capped}
    if self.balance_by != "cluster":
      out.update(balance_by=self.balance_by, groups=len(self.quotas),
                 capped_groups=self.capped)
    if self.missing is not None:
      out["missing_field"] = self.missing
    return out


class SmallestKeysFn(beam.CombineFn):
  """(key, quota) pairs of one cluster -> the quota-th smallest key (None for quota 0).

  Holds at most 2 x quota keys: the bound of the balanced samplers' memory, per cluster,
  on the worker that merges it (the quotas of all clusters add up to k).
  """

  def create_accumulator(self):
    return (0, [])

  @staticmethod
  def _trim(quota, keys):
    if len(keys) > 2 * quota:
      keys.sort()
      del keys[quota:]
    return quota, keys

  def add_input(self, acc, element):
    key, quota = element
    keys = acc[1]
    if quota > 0:
      keys.append(key)
    return self._trim(max(acc[0], quota), keys)

  def merge_accumulators(self, accumulators):
    quota, keys = 0, []
    for q, ks in accumulators:
      quota = max(quota, q)
      keys.extend(ks)
      quota, keys = self._trim(quota, keys)
    return quota, keys

  def extract_output(self, acc):
    quota, keys = acc
    if quota <= 0 or not keys:
      return None
    keys.sort()
    return keys[min(quota, len(keys)) - 1]


def _cluster_of(doc: Document) -> Optional[int]:
  return doc.scores.get(CLUSTER)


def cluster_sizes(docs, group_of: Callable = _cluster_of):
  """A singleton {cluster (or group_of's group): documents}."""
  return (docs
          | "ClusterOf" >> beam.Map(group_of)
          | "ClusterSizes" >> beam.combiners.Count.PerElement()
          | "SizesToDict" >> beam.combiners.ToDict())


class ClusterQuota(beam.PTransform):
  """Documents with a `cluster` (or any group, group_of) -> the same documents with
  `in_quota` set, and the plan.

  Args:
    within_key: Document -> sort key inside a cluster (ascending = better), unique per
      document: a hash draw (balanced) or a quality key (ask_llm_balanced).
    sizes: singleton PCollection {cluster: documents} (cluster_sizes).
    total: side input, the number of documents k is computed from (as SelectTopK does).
    keep_fraction / keep_count: k (transforms/select.resolve_k).
    group_of: Document -> its group (default: its cluster); with balance_by, what the
      groups are (cluster, topic, field:NAME), for the plan and the tie rule.

  Returns: dict `documents` and `plan` (a singleton QuotaPlan).
  """

  def __init__(self, within_key: Callable, sizes, total, keep_fraction: Optional[float],
               keep_count: Optional[int], seed: int, group_of: Callable = _cluster_of,
               balance_by: str = "cluster"):
    super().__init__()
    self._key, self._sizes, self._total = within_key, sizes, total
    self._fraction, self._count, self._seed = keep_fraction, keep_count, seed
    self._group_of, self._balance_by = group_of, balance_by

  def expand(self, docs):
    fraction, count, seed, within_key = self._fraction, self._count, self._seed, self._key
    group_of, balance_by = self._group_of, self._balance_by
    # Clusters keep their tie names (the same quotas as before groups existed).
    tie = ((lambda c: f"cluster\x00{c}") if balance_by == "cluster"
           else (lambda c: f"group\x00{c}"))

    def plan_of(sizes, total):
      k = resolve_k(total, fraction, count)
      sizes = {c: n for c, n in sizes.items() if c is not None}
      cap, quotas = balanced_quotas(sizes, k, seed, tie)
      return QuotaPlan(k=k, cap=cap, quotas=quotas,
                       capped=sum(1 for c, n in sizes.items() if n > quotas.get(c, 0)),
                       balance_by=balance_by,
                       missing=(sizes.get(MISSING_GROUP, 0)
                                if balance_by.startswith("field:") else None))

    plan = self._sizes | "Cap" >> beam.Map(plan_of, self._total)
    plan_si = beam.pvalue.AsSingleton(plan)
    thresholds = beam.pvalue.AsDict(
        docs
        | "KeyInCluster" >> beam.Map(
            lambda d, p: (group_of(d), (within_key(d), p.quotas.get(group_of(d), 0))),
            plan_si)
        | "QuotaCutoff" >> beam.CombinePerKey(SmallestKeysFn()))

    def mark(doc, cutoffs):
      cutoff = cutoffs.get(group_of(doc))
      return dataclasses.replace(doc, in_quota=cutoff is not None and within_key(doc) <= cutoff)

    return {"documents": docs | "MarkQuota" >> beam.Map(mark, thresholds), "plan": plan}


# --- SemDeDup ---------------------------------------------------------------------


def _quality_order(doc: Document):
  """Best kept first: the highest quality score when the run computed one, else by id."""
  for name in (QUALITY_SCORE, ASK_LLM_SCORE):
    value = doc.scores.get(name)
    if value is not None and value == value:
      return (0, -value, doc.id, doc.source)
  return (1, 0.0, doc.id, doc.source)


class SemDeDup(beam.PTransform):
  """Documents with `cluster` and their embeddings -> the same with `duplicate_of`.

  A cluster of at most `max_group` documents is deduplicated whole on one worker. A
  larger one is first split by random hyperplanes (subgroup_planes) into sub-groups, and
  a sub-group still larger than max_group into chunks of max_group in hash order; pairs
  that land in different sub-groups or chunks are not compared (counted as
  `semdedup:split_groups`). Cost per group: O(n^2 d), memory O(n d).
  """

  def __init__(self, eps: float, max_group: int, seed: int, sizes):
    """sizes: singleton PCollection {cluster: documents} (cluster_sizes)."""
    super().__init__()
    self._eps, self._max, self._seed, self._sizes = eps, max_group, seed, sizes

  def expand(self, docs):
    max_group, seed = self._max, self._seed

    def group_key(doc, sizes):
      c = _cluster_of(doc)
      bits = subgroup_bits(sizes.get(c, 0), max_group)
      if not bits:
        return (c, 0), doc
      planes = subgroup_planes(seed, bits, len(doc.embedding))
      side = (planes @ np.asarray(doc.embedding, np.float32)) > 0
      return (c, 1 + int(sum(int(b) << i for i, b in enumerate(side)))), doc

    return (docs
            | "GroupKey" >> beam.Map(group_key, beam.pvalue.AsSingleton(self._sizes))
            | "GroupByCluster" >> beam.GroupByKey()
            | "Deduplicate" >> beam.ParDo(_DedupGroup(self._eps, max_group, seed)))


class _DedupGroup(beam.DoFn):

  def __init__(self, eps: float, max_group: int, seed: int):
    self._eps, self._max, self._seed = eps, max_group, seed

  def setup(self):
    self._split = counter(SEMDEDUP_SPLIT_GROUPS)
    self._duplicates = counter(SEMDEDUP_DUPLICATES)

  def process(self, element):
    _, docs = element
    docs = list(docs)
    chunks = [docs]
    if len(docs) > self._max:
      self._split.inc()
      docs.sort(key=lambda d: (uniform_from_id(self._seed, "semdedup\x00" + d.id), d.id,
                               d.source))
      chunks = [docs[i:i + self._max] for i in range(0, len(docs), self._max)]
    for chunk in chunks:
      chunk.sort(key=_quality_order)
      dup = dedup_group(np.stack([d.embedding for d in chunk]), self._eps)
      for doc, j in zip(chunk, dup):
        if j is not None:
          self._duplicates.inc()
        yield dataclasses.replace(doc, embedding=None).with_scores(
            **{DUPLICATE_OF: None if j is None else chunk[j].id})
