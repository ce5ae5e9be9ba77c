"""Sketch counts: counts and density against brute force, merging, the accumulator coder,
the Beam CombineFn."""
import collections
import pickle

import numpy as np
import pytest
from hypothesis import given, strategies as st

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import BeamAssertException, assert_that

from tests.sketch_helpers import FAMILIES, HYP, emb, params
# The block sizes are globals of the pure modules, where the loops that read them live.
from transforms.algorithms import sketch_counts as pure_counts, sketch_hashing as pure_hashing
from transforms.sketch_counts import (DensitySketchCombineFn, SketchAccumulator,
                                      SketchAccumulatorCoder, density, new_counts, sketch_add,
                                      sketch_from_embeddings, sketch_merge)
from transforms.sketch_hashing import SketchParams, bucket_ids, make_hashes


def _brute_counts(ids, params):
  counts = [[0] * params.buckets for _ in range(params.rows)]
  for doc in ids.tolist():
    for r, bucket in enumerate(doc):
      counts[r][bucket] += 1
  return np.array(counts)


# --- counts, density, merging ------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
@given(n=st.integers(1, 80), seed=st.integers(0, 10), chunk=st.integers(1, 100),
       buckets=st.sampled_from([7, 5000]), small_blocks=st.booleans())
@HYP
def test_counts_and_density_equal_brute_force(monkeypatch, family, n, seed, chunk, buckets,
                                              small_blocks):
  # buckets=5000: few ids per cell, counted by sorting; small blocks: every row block,
  # projection block and count sub-block loop runs many times
  for module, name, small, big in ((pure_counts, "_BIN_BLOCK", 20, 1 << 20),
                                   (pure_hashing, "_PROJ_BLOCK", 64, 1 << 21),
                                   (pure_hashing, "_KEY_BLOCK", 16, 1 << 19)):
    monkeypatch.setattr(module, name, small if small_blocks else big)
  p = params(buckets=buckets, family=family)
  hashes = make_hashes(p)
  x = emb(n, seed=seed)
  ids = bucket_ids(x, p, hashes)
  brute = _brute_counts(ids, p)
  sketch = sketch_from_embeddings([x[:n // 2], x[n // 2:]], p, hashes, chunk_size=chunk)
  np.testing.assert_array_equal(sketch.counts, brute)
  assert sketch.n == n
  np.testing.assert_array_equal(sketch_add(new_counts(p), ids), brute)
  # density = number of documents sharing x's bucket (itself included), mean over rows
  collide = (ids[:, None, :] == ids[None, :, :]).sum(1).mean(1)
  np.testing.assert_allclose(density(x, sketch, hashes, chunk_size=chunk), collide)
  np.testing.assert_allclose(sketch.density(x, normalize=True), collide / n)
  np.testing.assert_allclose(sketch.density(x, debias=True),
                             (collide - n / buckets) * buckets / (buckets - 1))
  assert np.all(collide >= 1)


def _accumulate(fn, parts, how):
  acc = fn.create_accumulator()
  for i, part in enumerate(parts):
    if how == "batch":
      acc = fn.add_inputs(acc, [part])
    elif how == "mixed" and i % 2:
      acc = fn.add_inputs(acc, list(part))
    else:
      for row in part:
        acc = fn.add_input(acc, row)
  return acc


@pytest.mark.parametrize("family", FAMILIES)
@given(data=st.data())
@HYP
def test_merge_in_any_order_and_partition_gives_the_same_counts(family, data):
  p = params(family=family)
  x = emb(data.draw(st.integers(0, 60)), seed=data.draw(st.integers(0, 10)))
  direct = sketch_from_embeddings([x], p)
  fn = DensitySketchCombineFn(p, chunk_size=data.draw(st.integers(1, 30)))
  fn.setup()
  # random partition into accumulators, each fed in random slices and styles
  labels = np.array(data.draw(st.lists(st.integers(0, 4), min_size=len(x), max_size=len(x))),
                    dtype=int)
  accs = []
  for g in range(5):
    part = x[labels == g]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(part)), max_size=3)))
    pieces = [part[a:b] for a, b in zip([0] + cuts, cuts + [len(part)]) if b > a]
    accs.append(_accumulate(fn, pieces, data.draw(st.sampled_from(["one", "batch", "mixed"]))))
  order = data.draw(st.permutations(range(len(accs))))
  # nested merges, optionally through the coder (what the shuffle does)
  coder = fn.get_accumulator_coder()
  accs = [coder.decode(coder.encode(accs[i])) if data.draw(st.booleans()) else accs[i]
          for i in order]
  merged = fn.merge_accumulators([fn.merge_accumulators(accs[:2])] + accs[2:])
  out = fn.extract_output(merged)
  assert out.n == len(x) == direct.n
  np.testing.assert_array_equal(out.counts, direct.counts)
  assert out.counts.dtype == np.int32


def test_counts_promote_to_int64_before_overflow():
  p = params()
  big = np.full((p.rows, p.buckets), 2**30, np.int32)
  counts, n = sketch_merge(big.copy(), 2**30, big, 2**30 + 5)
  assert counts.dtype == np.int64 and n == 2**31 + 5
  assert counts[0, 0] == 2**31
  counts, n = sketch_merge(None, 0, big, 7)
  assert counts is not big and np.array_equal(counts, big)


# --- coder -------------------------------------------------------------------------------

@given(n=st.integers(0, 40), fill=st.floats(0, 1), pending=st.integers(0, 5),
       wide=st.booleans(), empty=st.booleans())
@HYP
def test_coder_round_trips(n, fill, pending, wide, empty):
  rng = np.random.default_rng(n)
  counts = None
  if not empty:
    counts = (rng.random((6, 7)) < fill) * rng.integers(1, 2**31 - 1, (6, 7))
    counts = counts.astype(np.int64 if wide else np.int32)
    if wide:
      counts[0, 0] = 2**40
  pend = [rng.standard_normal((pending, 8)).astype(np.float32)] if pending else []
  acc = SketchAccumulator(counts, n, pend)
  coder = SketchAccumulatorCoder()
  data = coder.encode(acc)
  back = coder.decode(data)
  assert back.n == n and back.pending_rows == pending
  if empty:
    assert back.counts is None
  else:
    assert back.counts.dtype == counts.dtype
    np.testing.assert_array_equal(back.counts, counts)
    back.counts += 1  # decoded arrays are writable (merges are in place)
  for a, b in zip(back.pending, pend):
    np.testing.assert_array_equal(a, b)
  assert coder.encode(coder.decode(data)) == data
  assert coder.is_deterministic()


def test_coder_is_compact():
  p = SketchParams(dim=8, rows=100, buckets=5000, hashes_per_row=4, bucket_width=1.0,
                   seed=1)
  fn = DensitySketchCombineFn(p)
  coder = fn.get_accumulator_coder()
  acc = fn.compact(fn.add_inputs(fn.create_accumulator(), [emb(50)]))
  sparse = coder.encode(acc)
  assert len(sparse) < 20 * 100 * 50 + 100  # <= one cell per row and doc, not 100 x 5000
  acc = fn.compact(fn.add_inputs(acc, [emb(20000, seed=3, clusters=5000)]))
  dense = coder.encode(acc)
  assert len(dense) <= 4 * 100 * 5000 + 100  # raw int32 bytes + a small header
  assert len(coder.encode(fn.create_accumulator())) < 100
  assert SketchAccumulator in beam.coders.registry._coders


def test_combine_fn_pickles_small_and_builds_hashes_once():
  p = SketchParams(dim=384, rows=1000, buckets=20000, hashes_per_row=4, bucket_width=1.0,
                   seed=1)
  fn = DensitySketchCombineFn(p)
  fn.setup()
  w = fn.hashes()[0]
  assert fn.hashes()[0] is w
  blob = pickle.dumps(fn)
  assert len(blob) < 2000  # hashes (6 MB) are not shipped
  assert pickle.loads(blob)._hashes is None


# --- Beam --------------------------------------------------------------------------------

_ENCODED = collections.Counter()


class _CountingCoder(SketchAccumulatorCoder):
  def encode(self, acc):
    _ENCODED["n"] += 1
    return super().encode(acc)


class _CountingCombineFn(DensitySketchCombineFn):
  def get_accumulator_coder(self):
    return _CountingCoder()


@pytest.mark.parametrize("family", FAMILIES)
def test_combine_globally_on_fn_api_runner_matches_numpy(family):
  p = params(dim=16, rows=12, buckets=50, width=0.5, family=family)
  x = emb(300, dim=16, seed=5)
  expected = sketch_from_embeddings([x], p)
  # single documents and small batches, as upstream DoFns would emit them
  elements = [x[i] for i in range(200)] + [x[i:i + 25] for i in range(200, 300, 25)]

  def matches(outputs):
    if len(outputs) != 1:
      raise BeamAssertException(f"expected one sketch, got {len(outputs)}")
    got = outputs[0]
    if got.params != p or got.n != 300 or not np.array_equal(got.counts, expected.counts):
      raise BeamAssertException(f"sketch differs: n={got.n}")

  _ENCODED.clear()
  with test_pipeline.TestPipeline(runner="FnApiRunner") as pipeline:
    sketch = (pipeline
              | beam.Create(elements, reshuffle=False)
              | beam.CombineGlobally(_CountingCombineFn(p, chunk_size=64)))
    assert_that(sketch, matches)
  assert _ENCODED["n"] > 0  # accumulators crossed the shuffle through our coder
