"""Group minima and connected components in Beam, with no group on one worker.

GroupMin gives every member of a group the group's smallest value and size. A group of a
million members (a million boilerplate pages in one exact-copy key or LSH band bucket) is
never gathered in one place: members are spread over SALTS salted keys, the minimum is
combined (CombinePerKey is distributed: partial minima per worker, then per salt, then
per group) and sent back only to the salts that hold members. The only per-group
GroupByKey holds at most SALTS small records.

Components labels the nodes of a hypergraph (nodes in groups) with the smallest node of
their connected component: unrolled rounds of min-label propagation, each a GroupMin
over the groups and a combined minimum per node; one more round checks convergence and
counts the nodes whose label would still change (`dedup_unconverged`).
"""
from __future__ import annotations

from typing import Any, Callable, Tuple

import apache_beam as beam

from transforms import metrics

# Salted keys per group: a group of n members is split into about min(n, SALTS) parts.
SALTS = 256


class _MinCount(beam.CombineFn):
  """(smallest value, count); values are (order, carry) tuples whose orders are unique
  or whose carries compare equal, so the carry never decides."""

  def create_accumulator(self):
    return (None, 0)

  def add_input(self, acc, value):
    return (value if acc[0] is None or value < acc[0] else acc[0], acc[1] + 1)

  def merge_accumulators(self, accs):
    best, count = None, 0
    for value, n in accs:
      if value is not None and (best is None or value < best):
        best = value
      count += n
    return (best, count)

  def extract_output(self, acc):
    return acc


class _MergeMinCount(_MinCount):
  """Combines (value, count) pairs: the smallest value and the summed count."""

  def add_input(self, acc, value):
    return self.merge_accumulators([acc, value])


def _spread(element, min_count):
  key, grouped = element
  found = list(grouped["g"])
  if not found or found[0][1] < min_count:
    return
  for salt in grouped["salts"]:
    yield (key, salt), found[0]


def _deliver(element):
  (key, _), grouped = element
  found = list(grouped["g"])
  best, total = found[0] if found else (None, 1)
  for order, carry, member in grouped["m"]:
    yield key, best, total, (order, carry) if member is None else member


class GroupMin(beam.PTransform):
  """(group key, (order, carry, member)) -> (group key, (order, carry) of the group's
  smallest order, group size, member), one per input (a member None stands for (order,
  carry): no copy of a large carry travels twice). Groups smaller than min_count give
  (key, None, 1, member) (their minimum is not needed: a lone member is its own)."""

  def __init__(self, salt_fn: Callable[[Any], int], min_count: int = 1):
    super().__init__()
    self._salt_fn = salt_fn
    self._min_count = min_count

  def expand(self, pcoll):
    salt_fn = self._salt_fn
    salted = pcoll | "Salt" >> beam.Map(
        lambda kv: ((kv[0], salt_fn(kv[1][0] if kv[1][2] is None else kv[1][2]) % SALTS),
                    kv[1]))
    local = (salted | "OrderOnly" >> beam.Map(lambda kv: (kv[0], (kv[1][0], kv[1][1])))
             | "MinPerSalt" >> beam.CombinePerKey(_MinCount()))
    group = (local | "ByGroup" >> beam.Map(lambda kv: (kv[0][0], kv[1]))
             | "MinPerGroup" >> beam.CombinePerKey(_MergeMinCount()))
    salts = local | "SaltsOfGroup" >> beam.Map(lambda kv: kv[0])
    spread = ({"salts": salts, "g": group} | "JoinSalts" >> beam.CoGroupByKey()
              | "Spread" >> beam.FlatMap(_spread, self._min_count))
    return ({"m": salted, "g": spread} | "JoinMembers" >> beam.CoGroupByKey()
            | "Deliver" >> beam.FlatMap(_deliver))


def node_salt(node: Tuple[int, str, str]) -> int:
  """A node is (order hash, id, source): its hash spreads it over the salts."""
  return node[0]


def _label_messages(element):
  node, grouped = element
  labels = list(grouped["label"])
  label = labels[0] if labels else node
  for group in grouped["groups"]:
    yield group, (label, None, node)


def _received(element):
  _, best, _, node = element
  return node, best[0]


class _Round(beam.PTransform):
  """One round: each node's new label is the smallest label in any of its groups."""

  def __init__(self, memberships):
    super().__init__()
    self._memberships = memberships

  def expand(self, labels):
    return ({"label": labels, "groups": self._memberships} | "ByNode" >> beam.CoGroupByKey()
            | "Messages" >> beam.FlatMap(_label_messages)
            | "GroupMin" >> GroupMin(lambda node: node[0])
            | "Received" >> beam.Map(_received)
            | "MinLabel" >> beam.CombinePerKey(min))


def _changed(element):
  _, grouped = element
  before, after = list(grouped["before"]), list(grouped["after"])
  if before and after and after[0] != before[0]:
    metrics.counter(metrics.DEDUP_UNCONVERGED).inc()
    yield 1


class Components(beam.PTransform):
  """(node, group) memberships -> (node, label) for every node, label the smallest node
  of its connected component after `rounds` rounds; nodes are (hash, id, source) tuples
  so the smallest is the same on any runner, worker count and input order."""

  def __init__(self, rounds: int):
    super().__init__()
    self._rounds = rounds

  def expand(self, memberships):
    memberships = memberships | "Distinct" >> beam.Distinct()
    labels = memberships | "NoLabels" >> beam.Filter(lambda _: False)
    for i in range(self._rounds):
      labels = labels | f"Round{i}" >> _Round(memberships)
    check = labels | "CheckRound" >> _Round(memberships)
    _ = ({"before": labels, "after": check} | "JoinCheck" >> beam.CoGroupByKey()
         | "Unconverged" >> beam.FlatMap(_changed))
    return labels
