"""Per-group numbers for the report: for each group of a run (the documents' topics, or
the values of the --balance_by field), its documents, how many were selected, and each
score's median and quartiles, so that a quality signal that favours some groups shows.

The quartiles come from a sample of at most SAMPLE documents per group, the same sample
on every run (the documents with the smallest hash of (seed, id)): exact for groups up
to that size, and a bounded memory per group for any corpus.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence

import apache_beam as beam
import numpy as np

from transforms.sampling import uniform_from_id

SAMPLE = 2000
MAX_GROUPS = 100  # the largest groups kept for the report (all are counted)


def _number(value) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return math.nan
  return float(value)


class GroupStatsFn(beam.CombineFn):
  """(selected, hash, [score values]) of one group -> its summary dict."""

  def __init__(self, names: Sequence[str]):
    self._names = list(names)

  def create_accumulator(self):
    return [0, 0, []]

  def add_input(self, acc, element):
    selected, h, values = element
    acc[0] += 1
    acc[1] += int(selected)
    acc[2].append((h, values))
    if len(acc[2]) > 2 * SAMPLE:
      acc[2].sort(key=lambda e: e[0])
      del acc[2][SAMPLE:]
    return acc

  def merge_accumulators(self, accs):
    out = self.create_accumulator()
    for n, s, sample in accs:
      out[0] += n
      out[1] += s
      out[2].extend(sample)
      if len(out[2]) > 2 * SAMPLE:
        out[2].sort(key=lambda e: e[0])
        del out[2][SAMPLE:]
    return out

  def extract_output(self, acc):
    n, selected, sample = acc
    sample = sorted(sample, key=lambda e: e[0])[:SAMPLE]
    return {"documents": n, "selected": selected,
            "scores": summarise([v for _, v in sample], self._names)}


def summarise(rows: List[Sequence[float]], names: Sequence[str]) -> Dict[str, Any]:
  """{score: {median, p25, p75, n}} over the rows' finite values."""
  out = {}
  if not rows:
    return out
  table = np.array(rows, np.float64).reshape(len(rows), len(names))
  for j, name in enumerate(names):
    col = table[:, j]
    col = col[np.isfinite(col)]
    if col.size:
      p25, med, p75 = np.percentile(col, [25, 50, 75])
      out[name] = {"median": round(float(med), 6), "p25": round(float(p25), 6),
                   "p75": round(float(p75), 6), "n": int(col.size)}
  return out


def assemble(groups: List[tuple], kind: str, names: Sequence[str]) -> Dict[str, Any]:
  """(group, summary) pairs -> groups.json: the MAX_GROUPS largest groups, then by name."""
  rows = sorted(groups, key=lambda g: (-g[1]["documents"], str(g[0])))
  return {"balance_by": kind, "score_names": list(names), "group_count": len(rows),
          "documents": sum(g[1]["documents"] for g in rows),
          "selected": sum(g[1]["selected"] for g in rows),
          "sample_per_group": SAMPLE,
          "groups": [{"group": str(g), **s} for g, s in rows[:MAX_GROUPS]]}


class GroupStatistics(beam.PTransform):
  """{"selected": Documents, "not_selected": Documents} -> a singleton groups.json dict.

  Args:
    group_of: Document -> its group's name.
    names: the numeric scores summarised per group.
    kind: what the groups are (for the report's heading).
  """

  def __init__(self, group_of: Callable, names: Sequence[str], kind: str, seed: int):
    super().__init__()
    self._group_of, self._names, self._kind, self._seed = group_of, list(names), kind, seed

  def expand(self, pcolls):
    group_of, names, seed = self._group_of, self._names, self._seed

    def keyed(doc, selected):
      return (str(group_of(doc)),
              (selected, uniform_from_id(seed, "groups\x00" + doc.id),
               [_number(doc.scores.get(n)) for n in names]))

    parts = [pcolls["selected"] | "KeySelected" >> beam.Map(keyed, True),
             pcolls["not_selected"] | "KeyOthers" >> beam.Map(keyed, False)]
    kind = self._kind
    return (parts | "FlattenGroups" >> beam.Flatten()
            | "PerGroup" >> beam.CombinePerKey(GroupStatsFn(names))
            | "AllGroups" >> beam.combiners.ToList()
            | "Assemble" >> beam.Map(assemble, kind, names))


def selected_documents(ranked) -> Optional[Any]:
  """SelectTopK's `ranked` ((rank_start, [(rank, doc), ...]) per file) -> documents."""
  return ranked | "RankedDocuments" >> beam.FlatMap(lambda e: [d for _, d in e[1]])
