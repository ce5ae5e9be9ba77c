"""Group minima and connected components in Beam, with no group on one worker.

GroupMin gives every member of a group the group's smallest value and size. A group of a
million members (a million boilerplate pages in one exact-copy key or LSH band bucket) is
never gathered in one place: members are spread over SALTS salted keys; the minimum, the
count and the set of salts holding members are combined per group (CombinePerKey is
distributed: partial results per worker, each at most SALTS small ints) and the minimum
is sent back only to the salts that hold members. Each member crosses two shuffles: one
small record into the combine, itself into the join with its salt's minimum.

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


class _MinCountSalts(beam.CombineFn):
  """[smallest (order, carry), count, the salts holding members] of a group; the salts
  become None (every salt) once they reach SALTS, so no accumulator outgrows SALTS small
  ints. Orders are unique or their carries compare equal, so the carry never decides."""

  def create_accumulator(self):
    return [None, 0, set()]

  def add_input(self, acc, value):
    order_carry, salt = value
    if acc[0] is None or order_carry < acc[0]:
      acc[0] = order_carry
    acc[1] += 1
    if acc[2] is not None:
      acc[2].add(salt)
      if len(acc[2]) >= SALTS:
        acc[2] = None
    return acc

  def merge_accumulators(self, accs):
    out = self.create_accumulator()
    for best, count, salts in accs:
      if best is not None and (out[0] is None or best < out[0]):
        out[0] = best
      out[1] += count
      if out[2] is not None:
        out[2] = None if salts is None else out[2] | salts
        if out[2] is not None and len(out[2]) >= SALTS:
          out[2] = None
    return out

  def extract_output(self, acc):
    return acc


def _spread(element, min_count):
  key, (best, count, salts) = element
  if count < min_count:
    return
  for salt in range(SALTS) if salts is None else sorted(salts):
    yield (key, salt), (best, count)


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
    # One small record per member into a combine (partial results on every worker), and
    # the group's minimum back only to the salts that hold members.
    spread = (salted
              | "OrderOnly" >> beam.Map(lambda kv: (kv[0][0], ((kv[1][0], kv[1][1]),
                                                               kv[0][1])))
              | "MinPerGroup" >> beam.CombinePerKey(_MinCountSalts())
              | "Spread" >> beam.FlatMap(_spread, self._min_count))
    return ({"m": salted, "g": spread} | "JoinMembers" >> beam.CoGroupByKey()
            | "Deliver" >> beam.FlatMap(_deliver))


def record_salt(record: Tuple[int, int]) -> int:
  """A record key is (order hash, hash of (id, source)): its order hash spreads it."""
  return record[0]


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
