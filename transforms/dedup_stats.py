"""dedup.json: what --dedup did, for metrics.json and the report (one small dict built
from combined counts: the funnel, the largest groups with their kept document's excerpt,
and a histogram of the Jaccard estimates of the MinHash candidate pairs)."""
from __future__ import annotations

from typing import Any, Dict, List

import apache_beam as beam
import numpy as np

from transforms.record_types import COPY_KIND, excerpt

LARGEST_GROUPS = 10
JACCARD_BINS = 20  # histogram of estimates over [0, 1], bins of 0.05


class _Histogram(beam.CombineFn):
  def create_accumulator(self):
    return [0] * JACCARD_BINS

  def add_input(self, acc, value):
    acc[min(JACCARD_BINS - 1, int(value * JACCARD_BINS))] += 1
    return acc

  def merge_accumulators(self, accs):
    return [int(x) for x in np.sum(np.array(list(accs), dtype=np.int64), axis=0)]

  def extract_output(self, acc):
    return list(acc)


def _group_rank(group):
  _, node, copies = group
  return (copies, -node[0])  # the largest first, ties by the kept document's hash


def _summary(_, config, documents, kept, by_kind, top, excerpts, histogram) -> Dict[str, Any]:
  groups: List[Dict[str, Any]] = []
  for kind, node, copies in sorted(top, key=_group_rank, reverse=True):
    groups.append({"kind": kind, "kept_id": node[1], "copies": copies,
                   "excerpt": excerpts.get(node, "")})
  out = {"mode": config.mode, "documents": documents, "kept": kept,
         "duplicates": {"exact": by_kind.get("exact", 0),
                        **({"minhash": by_kind.get("minhash", 0)}
                           if config.mode == "minhash" else {})},
         "largest_groups": groups,
         "normalization": "Unicode NFKC, whitespace runs as one space, trimmed; case kept"}
  if config.mode == "minhash":
    out["minhash"] = {"shingle": config.shingle, "bands": config.bands, "rows": config.rows,
                      "permutations": config.num_perm, "threshold": config.threshold,
                      "rounds": config.rounds}
    out["jaccard_estimates"] = {"bin_width": 1.0 / JACCARD_BINS, "counts": histogram}
  return out


class DedupStats(beam.PTransform):
  """docs (every valid document) -> one dict (see _summary)."""

  def __init__(self, config, kept, duplicates, groups, estimates=None):
    super().__init__()
    self._config = config
    self._kept, self._duplicates, self._groups = kept, duplicates, groups
    self._estimates = estimates

  def expand(self, docs):
    one = beam.pvalue.AsSingleton
    documents = docs | "CountDocuments" >> beam.combiners.Count.Globally()
    kept = self._kept | "CountKept" >> beam.combiners.Count.Globally()
    by_kind = (self._duplicates | "Kind" >> beam.Map(lambda d: d.scores[COPY_KIND])
               | "CountPerKind" >> beam.combiners.Count.PerElement())
    top = self._groups | "Largest" >> beam.combiners.Top.Of(LARGEST_GROUPS, key=_group_rank)
    excerpts = docs | "TopKept" >> beam.FlatMap(_top_excerpt, one(top))
    if self._estimates is not None:
      histogram = one(self._estimates | "Histogram" >> beam.CombineGlobally(_Histogram()))
    else:
      histogram = one(docs.pipeline | "NoEstimates" >> beam.Create([[]]))
    return (docs.pipeline | "Once" >> beam.Create([None])
            | "Summary" >> beam.Map(_summary, self._config, one(documents), one(kept),
                                    beam.pvalue.AsDict(by_kind), one(top),
                                    beam.pvalue.AsDict(excerpts), histogram))


def _top_excerpt(doc, top):
  for _, node, _ in top:
    if node[1] == doc.id and node[2] == doc.source:
      yield node, excerpt(doc.text)
