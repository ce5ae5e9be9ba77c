"""--dedup's math and transforms: normalisation and exact keys, MinHash signatures against
datasketch (the reference), LSH recall on planted near-copies, the salted group minimum,
connected components, and the kept copy's independence of input order and workers."""
import os
import pickle
import random
import tempfile
import unicodedata

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from datasketch import MinHash
from hypothesis import given, settings
from hypothesis import strategies as st

from beam_pipelines import dedup_options
from beam_pipelines.options import JobConfig, parse_args
from transforms import dedup_groups
from transforms.algorithms import minhash as mh
from transforms.dedup import Deduplicate
from transforms.records import Document

VOCAB = [f"w{i}" for i in range(3000)]


def random_text(rng, n=120):
  return " ".join(rng.choice(VOCAB) for _ in range(n))


def near_copy(rng, text, target, n=5):
  """`text` with trailing words replaced until the word-5-gram Jaccard is about target."""
  words = text.split()
  base = mh.shingle_hashes(text, n)
  for cut in range(len(words), 0, -1):
    other = " ".join(words[:cut] + [rng.choice(VOCAB) for _ in range(len(words) - cut)])
    if mh.jaccard(base, mh.shingle_hashes(other, n)) <= target:
      return other
  return other


# --- the math --------------------------------------------------------------------------

def test_normalize_folds_unicode_forms_and_whitespace_not_case():
  composed = "Caf\u00e9 au lait \uff21"  # é composed, full-width A
  decomposed = unicodedata.normalize("NFD", "Caf\u00e9") + "  au\t\nlait  A "
  assert mh.exact_key(composed) == mh.exact_key(decomposed)
  assert mh.exact_key("US news") != mh.exact_key("us news")
  assert mh.normalize("  a \u00a0 b\n") == "a b"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.sampled_from(VOCAB[:50]), min_size=0, max_size=40), min_size=1,
                max_size=6), st.integers(1, 7), st.sampled_from([16, 64, 128]),
       st.integers(0, 2 ** 31))
def test_signatures_equal_datasketch_affine32(docs, n, num_perm, seed):
  sets = [mh.shingle_hashes(" ".join(d), n) for d in docs]
  sigs = mh.signatures(sets, mh.permutations(num_perm, seed))
  for shingles, sig in zip(sets, sigs):
    ref = MinHash(num_perm=num_perm, seed=seed, hashfunc=lambda x: x, scheme="affine32")
    ref.update_batch([int(v) for v in shingles])
    np.testing.assert_array_equal(sig, ref.hashvalues)


def test_signatures_in_chunks_equal_one_by_one(monkeypatch):
  rng = random.Random(0)
  sets = [mh.shingle_hashes(random_text(rng, rng.randrange(0, 300))) for _ in range(40)]
  perms = mh.permutations(32)
  whole = mh.signatures(sets, perms)
  monkeypatch.setattr(mh, "_CHUNK_SHINGLES", 100)
  np.testing.assert_array_equal(mh.signatures(sets, perms), whole)
  np.testing.assert_array_equal(
      np.vstack([mh.signatures([s], perms) for s in sets]), whole)


def test_short_texts_have_one_shingle_and_wordless_texts_none():
  assert len(mh.shingle_hashes("two words", 5)) == 1
  assert len(mh.shingle_hashes("... !!! ---", 5)) == 0
  assert (mh.signatures([np.zeros(0, np.uint32)], mh.permutations(8)) == 2 ** 32 - 1).all()


def test_band_keys_agree_exactly_when_the_band_agrees():
  rng = np.random.default_rng(0)
  sigs = rng.integers(0, 2 ** 32, (50, 20), dtype=np.uint32)
  sigs[1, :5] = sigs[0, :5]  # band 0 shared
  keys = mh.band_keys(sigs, 4, 5)
  assert keys[0, 0] == keys[1, 0] and (keys[0, 1:] != keys[1, 1:]).all()
  assert len(np.unique(keys[2:])) == keys[2:].size  # no other collision
  with pytest.raises(ValueError):
    mh.band_keys(sigs, 5, 5)


def test_jaccard_estimate_is_close_to_the_truth():
  rng = random.Random(1)
  errors = []
  for target in (0.5, 0.7, 0.9):
    for _ in range(10):
      a = random_text(rng, 300)
      b = near_copy(rng, a, target)
      sa, sb = mh.shingle_hashes(a), mh.shingle_hashes(b)
      sig = mh.signatures([sa, sb], mh.permutations(256))
      errors.append(mh.jaccard_estimate(sig[0], sig[1]) - mh.jaccard(sa, sb))
  assert abs(np.mean(errors)) < 0.03 and np.max(np.abs(errors)) < 0.12


# --- options ---------------------------------------------------------------------------

def _job(*extra):
  return JobConfig.from_args(parse_args(["--input=x", "--output=y", *extra])[0])


def test_options_default_exact_and_refuse_minhash_settings_without_minhash():
  assert _job().dedup == dedup_options.DedupConfig(mode="exact")
  assert _job("--dedup=minhash", "--minhash_bands=10").dedup.bands == 10
  assert _job("--dedup=minhash", "--minhash_permutations=128").dedup.num_perm == 128
  with pytest.raises(ValueError, match="apply with --dedup=minhash"):
    dedup_options.from_args(_job_args("--minhash_rows=4"))
  with pytest.raises(ValueError, match="fewer than"):
    dedup_options.from_args(_job_args("--dedup=minhash", "--minhash_permutations=50"))


def _job_args(*extra):
  import argparse
  parser = argparse.ArgumentParser()
  dedup_options.add_options(parser)
  return parser.parse_args(list(extra))


# --- the transforms --------------------------------------------------------------------

def _run(docs, config, options=None):
  """(kept ids, {copy id: (kept id, kind)}, stats) of Deduplicate on the FnApiRunner."""
  path = os.path.join(tempfile.mkdtemp(), "out.pickle")
  with TestPipeline(runner="FnApiRunner", options=options) as p:
    out = p | beam.Create(docs) | Deduplicate(config, seed=7)
    kept = out["kept"] | "KeptIds" >> beam.Map(lambda d: d.id)
    copies = out["duplicates"] | "CopyIds" >> beam.Map(
        lambda d: (d.id, (d.scores["copy_of"], d.scores["copy_kind"])))
    both = ((kept | "K" >> beam.Map(lambda i: ("kept", i)),
             copies | "C" >> beam.Map(lambda c: ("copy", c)),
             out["stats"] | "S" >> beam.Map(lambda s: ("stats", s)))
            | beam.Flatten() | beam.combiners.ToList())
    _ = both | beam.Map(lambda rows: pickle.dump(rows, open(path, "wb")))
  with open(path, "rb") as f:
    rows = pickle.load(f)
  return (sorted(v for k, v in rows if k == "kept"),
          dict(v for k, v in rows if k == "copy"),
          next(v for k, v in rows if k == "stats"))


def _planted(rng, n_base=30):
  base = [Document(f"b{i:03d}", random_text(rng), f"f1:{i}") for i in range(n_base)]
  docs = list(base)
  for i in range(0, 6):  # exact copies: other whitespace and Unicode forms
    t = base[i].text.replace(" ", "  \n", 3)
    docs.append(Document(f"e{i:03d}", unicodedata.normalize("NFKD", " " + t), f"f2:{i}"))
  for i in range(6, 16):  # near-copies at Jaccard ~0.9 and their exact copies
    near = near_copy(rng, base[i].text, 0.9)
    docs.append(Document(f"n{i:03d}", near, f"f3:{i}"))
    docs.append(Document(f"m{i:03d}", near + " ", f"f4:{i}"))
  for i in range(16, 20):  # far: Jaccard ~0.3, not copies
    docs.append(Document(f"x{i:03d}", near_copy(rng, base[i].text, 0.3), f"f5:{i}"))
  return docs


def test_exact_keeps_one_per_group_whatever_the_whitespace_and_unicode_form():
  docs = _planted(random.Random(2))
  kept, copies, stats = _run(docs, dedup_options.DedupConfig(mode="exact"))
  assert len(copies) == 6 + 10 and stats["duplicates"] == {"exact": 16}
  assert stats["kept"] == len(kept) == len(docs) - 16 and stats["documents"] == len(docs)
  for i in range(6):
    pair = {f"b{i:03d}", f"e{i:03d}"}
    (copy,) = pair - set(kept)
    assert copies[copy] == ((pair - {copy}).pop(), "exact")
  assert {c for c, (_, kind) in copies.items() if kind == "exact"} <= {
      d.id for d in docs if d.id[0] in "bemn"}


def test_minhash_finds_planted_near_copies_and_points_every_copy_at_a_kept_document():
  docs = _planted(random.Random(3))
  kept, copies, stats = _run(docs, dedup_options.DedupConfig(mode="minhash"))
  for i in range(6, 16):
    group = {f"b{i:03d}", f"n{i:03d}", f"m{i:03d}"}
    assert len(group & set(kept)) == 1, group  # recall: every planted copy found
    (keeper,) = group & set(kept)
    assert {copies[c][0] for c in group - {keeper}} == {keeper}
  assert all(f"x{i:03d}" in kept for i in range(16, 20))  # precision: 0.3 kept apart
  assert all(target in kept for target, _ in copies.values())
  assert stats["duplicates"]["exact"] + stats["duplicates"]["minhash"] == len(copies)
  assert stats["largest_groups"][0]["copies"] >= 1 and stats["largest_groups"][0]["excerpt"]
  assert sum(stats["jaccard_estimates"]["counts"]) >= 10


def test_an_id_read_twice_shares_an_order_hash_and_each_record_is_judged_on_its_text():
  # Band buckets and the signature join are keyed by the order hash of (seed, id): two
  # records of one id meet there, and only the one whose text is a near-copy is one.
  rng = random.Random(6)
  a, b = random_text(rng), random_text(rng)
  docs = [Document("same", a, "f1:1"), Document("same", b, "f2:1"),
          Document("other", near_copy(rng, b, 0.9), "f3:1")]
  docs += [Document(f"z{i}", random_text(rng), f"f4:{i}") for i in range(5)]
  kept, copies, _ = _run(docs, dedup_options.DedupConfig(mode="minhash"))
  assert len(kept) == len(docs) - 1 and len(copies) == 1
  (copy, (target, kind)), = copies.items()
  assert kind == "minhash" and {copy, target} == {"same", "other"}
  assert kept.count("same") == (2 if copy == "other" else 1)


def test_the_kept_copy_does_not_depend_on_order_or_workers():
  docs = _planted(random.Random(4), n_base=24)
  config = dedup_options.DedupConfig(mode="minhash")
  first = _run(docs, config)[:2]
  shuffled = list(docs)
  random.Random(5).shuffle(shuffled)
  # Two worker processes (Beam 2.x's multi_threading mode of the FnApiRunner loses
  # elements of a shuffle now and then, with or without --dedup: docs/dedup.md).
  two = PipelineOptions(["--direct_num_workers=2", "--direct_running_mode=multi_processing"])
  assert _run(shuffled, config, options=two)[:2] == first


def test_group_min_spreads_a_huge_group_over_salts_and_still_finds_its_minimum():
  members = [(i * 7919 % 1000, f"m{i}") for i in range(1000)]
  with TestPipeline(runner="FnApiRunner") as p:
    out = (p | beam.Create([("big", ((o, m), None, (o, m))) for o, m in members]
                           + [("lone", ((5, "x"), None, (5, "x")))])
           | dedup_groups.GroupMin(lambda member: member[0], min_count=2)
           | beam.Map(lambda e: (e[0], e[1][0] if e[1] else None, e[2])))
    assert_that(out, equal_to([("big", (0, "m0"), 1000)] * 1000 + [("lone", None, 1)]))


def test_components_label_each_node_with_its_components_smallest():
  # A chain 1-2-3-4-5 through groups, a star around 10, and 20-21.
  edges = [(1, "a"), (2, "a"), (2, "b"), (3, "b"), (3, "c"), (4, "c"), (4, "d"), (5, "d"),
           (10, "s"), (11, "s"), (12, "s"), (13, "s"), (21, "t"), (20, "t")]
  nodes = {n: (n, f"id{n}", "src") for n, _ in edges}
  with TestPipeline(runner="FnApiRunner") as p:
    labels = (p | beam.Create([(nodes[n], g) for n, g in edges])
              | dedup_groups.Components(rounds=4)
              | beam.Map(lambda kv: (kv[0][0], kv[1][0])))
    assert_that(labels, equal_to([(n, 1) for n in (1, 2, 3, 4, 5)]
                                 + [(n, 10) for n in (10, 11, 12, 13)] + [(20, 20), (21, 20)]))


def test_too_few_rounds_are_counted_as_unconverged():
  from apache_beam.metrics.metric import MetricsFilter
  from transforms import metrics
  chain = [(i, g) for g in range(6) for i in (g, g + 1)]  # 0-1-2-...-6: 6 hops
  p = TestPipeline(runner="FnApiRunner")
  _ = (p | beam.Create([((n, f"id{n}", "s"), g) for n, g in chain])
       | dedup_groups.Components(rounds=2))
  result = p.run()
  result.wait_until_finish()
  counters = result.metrics().query(MetricsFilter().with_name(metrics.DEDUP_UNCONVERGED))
  assert sum(c.committed for c in counters["counters"]) > 0
