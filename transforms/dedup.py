"""--dedup: exact and MinHash near-copies removed right after validation, before any model.

Deduplicate takes the valid Documents and returns {"kept", "duplicates", "stats"}:
- exact: documents whose normalised text (algorithms/minhash.normalize: NFKC, whitespace
  collapsed) is the same are one group;
- minhash (after exact, on what exact kept): word n-gram MinHash signatures, LSH band
  buckets (two-integer record keys only), each member of a bucket of two or more confirmed against the
  bucket's smallest member by the signatures' Jaccard estimate (each pair once), then
  connected components (dedup_groups.Components).
In every group the document with the smallest (hash of (seed, id), id, source) is kept,
the same on any runner, worker count and file order. The others get copy_of (the kept
id) and copy_kind, count in duplicates:<kind>, and go straight to scores/.
"""
from __future__ import annotations

from typing import Any, Dict, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms import metrics
from transforms.algorithms import minhash as mh
from transforms.dedup_groups import Components, GroupMin, node_salt, record_salt
from transforms.dedup_stats import DedupStats
from transforms.output_layout import DEDUP_STATS_FILE
from transforms.output_files import write_json_atomic
from transforms.record_types import COPY_KIND, COPY_OF, Document

EXACT, MINHASH = "exact", "minhash"
SIGNAL = "dedup"  # its columns' entry in the registry of signals (builtin_signals.py)
Node = Tuple[int, str, str]


def node_of(doc: Document, seed: int) -> Node:
  """A document's place in the order that picks the kept copy: the smallest is kept."""
  return (mh.order_hash(seed, doc.id), doc.id, doc.source)


def as_copy(doc: Document, kept: Node, kind: str) -> Document:
  return doc.with_scores(**{COPY_OF: kept[1], COPY_KIND: kind})


def _resolve_exact(element, seed: int):
  """(key, smallest, size, document) -> the kept document, or a tagged copy."""
  _, best, size, doc = element
  node = node_of(doc, seed)
  if best is None or best[0] == node:
    if size > 1:
      yield beam.pvalue.TaggedOutput("groups", (EXACT, node, size - 1))
    yield doc
    return
  metrics.counter(metrics.DUPLICATES_PREFIX + EXACT).inc()
  yield beam.pvalue.TaggedOutput("duplicates", (best[0], doc))


class _Signatures(beam.DoFn):
  """Batches of documents -> (node, signature bytes, band keys) for documents with words."""

  def __init__(self, config, seed: int):
    self._config = config
    self._seed = seed
    self._perms = None

  def setup(self):
    self._perms = mh.permutations(self._config.num_perm, 1)

  def process(self, batch):
    c = self._config
    sets = [mh.shingle_hashes(d.text, c.shingle) for d in batch]
    sigs = mh.signatures(sets, self._perms)
    keys = mh.band_keys(sigs, c.bands, c.rows)
    for doc, shingles, sig, k in zip(batch, sets, sigs, keys):
      if len(shingles):
        yield node_of(doc, self._seed), mh.to_bytes(sig), k.tolist()


def record_key(node: Node) -> Tuple[int, int]:
  """(order hash, hash of (id, source)): one record's name in the band and candidate
  shuffles, two integers instead of its id and source (an id read twice is two records;
  two records share a name with probability about 2^-124)."""
  return node[0], mh.record_hash(node[1], node[2])


def _band_members(element):
  """A document's band keys -> (key, (record key, 0, None)): a band's key hashes the
  band's number too, so one key space serves all bands. No id, source or signature:
  most buckets hold one document, and each document has a record per band."""
  node, _, keys = element
  record = record_key(node)
  for key in keys:
    yield key, (record, 0, None)


def _candidate(element):
  """A member of a band bucket of two or more -> (its record key, the bucket's smallest
  record key): its candidate group, named by that smallest member (which joins its own
  group)."""
  _, best, size, (record, _) = element
  if best is not None and size >= 2:
    yield record, best[0]


def _signed_members(element):
  """(record key, {sig: (node, signature), group}) -> (group, member carrying its
  signature) for each candidate group; signatures travel only with candidates."""
  _, grouped = element
  groups = list(grouped["group"])
  for node, sig in grouped["sig"]:  # one, unless two records' keys collide
    for group in groups:
      yield group, (node, sig, None)


def _confirm(element, threshold: float):
  """A candidate group's member -> memberships (node, group) of the member and the
  group's smallest member when their Jaccard estimate reaches the threshold."""
  group, best, size, (node, sig) = element
  if best is None or size < 2 or best[0] == node:
    return
  estimate = mh.jaccard_estimate(mh.from_bytes(sig), mh.from_bytes(best[1]))
  yield beam.pvalue.TaggedOutput("estimates", estimate)
  if estimate >= threshold:
    yield node, group
    yield best[0], group


def _resolve_minhash(element):
  node, grouped = element
  labels = list(grouped["label"])
  for doc in grouped["doc"]:
    if labels and labels[0] != node:
      metrics.counter(metrics.DUPLICATES_PREFIX + MINHASH).inc()
      yield beam.pvalue.TaggedOutput("duplicates", as_copy(doc, labels[0], MINHASH))
    else:
      yield doc


# Sorts after every node: an exact copy's place in its kept document's group (below).
_LAST = (1 << 62, "", "")
_LABEL = "label"  # the member that carries a MinHash label into that group


def _final_copy(element):
  """(kept node, smallest label, _, exact copy or _LABEL) -> the copy, pointing at its kept
  document's own kept document when MinHash found that one a near-copy."""
  kept, best, _, doc = element
  if isinstance(doc, Document):
    yield as_copy(doc, kept if best[0] == _LAST else best[0], EXACT)


class _Relabel(beam.PTransform):
  """Exact copies (kept node, document) and the MinHash copies (node, label) -> the
  exact copies with copy_of = the document finally kept. A kept node with a million exact
  copies is salted like any group (GroupMin)."""

  def __init__(self, seed: int, labels=None):
    super().__init__()
    self._seed = seed
    self._labels = labels

  def expand(self, copies):
    if self._labels is None:
      return copies | "AsCopies" >> beam.Map(lambda kv: as_copy(kv[1], kv[0], EXACT))
    seed = self._seed
    members = copies | "CopyMembers" >> beam.Map(lambda kv: (kv[0], (_LAST, None, kv[1])))
    labels = self._labels | "LabelMembers" >> beam.Map(
        lambda kv: (kv[0], (kv[1], None, _LABEL)))
    return ((members, labels) | "Members" >> beam.Flatten()
            | "KeptOfKept" >> GroupMin(
                lambda d: 0 if isinstance(d, str) else mh.order_hash(seed, d.id))
            | "FinalCopy" >> beam.FlatMap(_final_copy))


class _Exact(beam.PTransform):
  def __init__(self, seed: int):
    super().__init__()
    self._seed = seed

  def expand(self, docs):
    seed = self._seed
    return (docs
            | "ExactKey" >> beam.Map(lambda d: (mh.exact_key(d.text),
                                                (node_of(d, seed), None, d)))
            | "ExactGroups" >> GroupMin(lambda d: mh.order_hash(seed, d.id), min_count=2)
            | "ResolveExact" >> beam.FlatMap(_resolve_exact, seed).with_outputs(
                "duplicates", "groups", main="kept"))


class _MinHash(beam.PTransform):
  def __init__(self, config, seed: int):
    super().__init__()
    self._config = config
    self._seed = seed

  def expand(self, docs):
    c = self._config
    signed = (docs | "Batch" >> beam.BatchElements(min_batch_size=16, max_batch_size=256)
              | "Signatures" >> beam.ParDo(_Signatures(c, self._seed)))
    # Band buckets carry record keys only; each member of a bucket of two or more is a
    # candidate of the bucket's smallest member, counted once however many bands they
    # share, and confirmed against it with both signatures (salted like any group:
    # GroupMin).
    candidates = (signed | "BandMembers" >> beam.FlatMap(_band_members)
                  | "Buckets" >> GroupMin(record_salt, min_count=2)
                  | "Candidates" >> beam.FlatMap(_candidate)
                  | "DistinctCandidates" >> beam.Distinct())
    sigs = signed | "NodeSignatures" >> beam.Map(lambda s: (record_key(s[0]), (s[0], s[1])))
    confirmed = ({"sig": sigs, "group": candidates} | "JoinSignatures" >> beam.CoGroupByKey()
                 | "SignedMembers" >> beam.FlatMap(_signed_members)
                 | "CandidateGroups" >> GroupMin(node_salt, min_count=2)
                 | "Confirm" >> beam.FlatMap(_confirm, c.threshold).with_outputs(
                     "estimates", main="memberships"))
    labels = confirmed["memberships"] | "Components" >> Components(c.rounds)
    copies = labels | "Copies" >> beam.Filter(lambda kv: kv[1] != kv[0])
    seed = self._seed
    keyed = docs | "ByNode" >> beam.Map(lambda d: (node_of(d, seed), d))
    out = ({"doc": keyed, "label": copies} | "JoinLabels" >> beam.CoGroupByKey()
           | "ResolveMinHash" >> beam.FlatMap(_resolve_minhash).with_outputs(
               "duplicates", main="kept"))
    groups = (copies | "ByLabel" >> beam.Map(lambda kv: (kv[1], 1))
              | "GroupSizes" >> beam.CombinePerKey(sum)
              | "AsGroups" >> beam.Map(lambda kv: (MINHASH, kv[0], kv[1])))
    return {"kept": out["kept"], "duplicates": out["duplicates"], "groups": groups,
            "estimates": confirmed["estimates"], "labels": copies}


class Deduplicate(beam.PTransform):
  """Documents -> {"kept": documents, "duplicates": documents with copy_of and copy_kind,
  "stats": one dict (the funnel, the largest groups, the pairs' Jaccard estimates)}."""

  def __init__(self, config, seed: int):
    super().__init__()
    self._config = config
    self._seed = seed

  def expand(self, docs) -> Dict[str, Any]:
    exact = docs | "Exact" >> _Exact(self._seed)
    kept, duplicates, groups = exact["kept"], [], [exact["groups"]]
    estimates = labels = None
    if self._config.mode == MINHASH:
      near = kept | "MinHash" >> _MinHash(self._config, self._seed)
      kept, estimates, labels = near["kept"], near["estimates"], near["labels"]
      duplicates.append(near["duplicates"])
      groups.append(near["groups"])
    duplicates.append(exact["duplicates"] | "ExactCopies" >> _Relabel(self._seed, labels))
    duplicates = tuple(duplicates) | "AllDuplicates" >> beam.Flatten()
    groups = tuple(groups) | "AllGroups" >> beam.Flatten()
    stats = docs | "DedupStats" >> DedupStats(self._config, kept, duplicates, groups,
                                              estimates)
    return {"kept": kept, "duplicates": duplicates, "stats": stats}


def deduplicate(config, seed: int, docs, valid, staging: str, written: list):
  """The job's dedup step: (documents kept, copies or None, their count as a side input;
  `valid` when nothing is removed). Writes dedup.json into `staging`."""
  if not config.enabled:
    return docs, None, valid
  out = docs | "Deduplicate" >> Deduplicate(config, seed)
  path = FileSystems.join(staging, DEDUP_STATS_FILE)
  written.append(out["stats"] | "WriteDedupStats" >> beam.Map(
      lambda s: write_json_atomic(path, s)))
  kept = beam.pvalue.AsSingleton(out["kept"] | "CountKept" >> beam.combiners.Count.Globally())
  return out["kept"], out["duplicates"], kept


def with_copies(rest, copies):
  """The documents not selected, with the copies --dedup removed."""
  if copies is None:
    return rest
  return (rest, copies) | "WithCopies" >> beam.Flatten()
