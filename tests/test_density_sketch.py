"""Density sketch: hashes, counts, merging, coder, Beam CombineFn, artifact, kernel."""
import collections
import dataclasses
import math
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import BeamAssertException, assert_that

from transforms import density_sketch as ds

FAMILIES = ["independent", "shared"]
HYP = settings(max_examples=20, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])


def _family(name, rows, k=None):
  """Independent rows (K=3), or rows sharing projection groups (K=5, ~3 rows per group)."""
  if name == "independent":
    return dict(hashes_per_row=k or 3, groups=0)
  return dict(hashes_per_row=k or 5, groups=max(math.isqrt(rows - 1) + 1, rows // 3))


def _params(dim=8, rows=6, buckets=7, width=1.0, seed=3, family="independent", **kw):
  kw = {**_family(family, rows), **kw}
  return ds.SketchParams(dim=dim, rows=rows, buckets=buckets, bucket_width=width, seed=seed,
                         **kw)


def _emb(n, dim=8, seed=0, clusters=3):
  """Unit vectors in a few tight clusters, so that buckets really collide."""
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((clusters, dim))
  x = centres[rng.integers(0, clusters, n)] + 0.05 * rng.standard_normal((n, dim))
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute_counts(ids, params):
  counts = [[0] * params.buckets for _ in range(params.rows)]
  for doc in ids.tolist():
    for r, bucket in enumerate(doc):
      counts[r][bucket] += 1
  return np.array(counts)


def _p_stable_ids(x, params, hashes):
  """The spec formula floor((x.w + b) / width) per projection, in float64, on the
  documented 2^-11 grid of x; and how close each value is to a bucket boundary."""
  w, b = hashes
  xq = np.rint(np.asarray(x, np.float64) * 2**11) / 2**11
  v = (xq @ w.astype(np.float64) + b) / params.bucket_width
  return np.floor(v).astype(np.int64), np.abs(v - np.rint(v))


# --- params and hashes -------------------------------------------------------------------

def test_params_round_trip_and_validation():
  p = _params(family="shared")
  assert ds.SketchParams.from_dict(p.to_dict()) == p
  classic = p.to_dict()
  del classic["groups"]  # params saved without the field read as the classic family
  assert ds.SketchParams.from_dict(classic).groups == 0
  for bad in (dict(rows=0), dict(buckets=0), dict(buckets=2**31), dict(width=0.0),
              dict(width=float("nan")), dict(hashes_per_row=17), dict(groups=2),
              dict(groups=7), dict(groups=3, hashes_per_row=1),
              dict(groups=3, hashes_per_row=17)):
    with pytest.raises(ValueError):
      _params(**bad)


@pytest.mark.parametrize("family", FAMILIES)
def test_hashes_come_from_the_seed_only(family):
  p = _params(rows=10, width=0.5, family=family)
  w, b = ds.make_hashes(p)
  cols = (p.groups or 10) * p.hashes_per_row
  assert w.shape == (8, cols) and b.shape == (cols,)
  assert w.dtype == b.dtype == np.float32
  assert np.all((b >= 0) & (b < 0.5))
  w2, b2 = ds.make_hashes(ds.SketchParams.from_dict(p.to_dict()))
  assert np.array_equal(w, w2) and np.array_equal(b, b2)
  assert not np.array_equal(w, ds.make_hashes(_params(rows=10, seed=4, family=family))[0])


# --- bucket ids --------------------------------------------------------------------------

@pytest.mark.parametrize("family,k,groups", [("independent", 3, 0), ("independent", 8, 0),
                                             ("independent", 13, 0), ("shared", 5, 3),
                                             ("shared", 4, 5), ("shared", 12, 4)])
def test_same_bucket_iff_same_k_tuple_of_p_stable_ids(family, k, groups):
  # With 2^31 - 1 buckets, spurious collisions of different K-tuples have probability
  # ~1e-9: two documents share a row's bucket exactly when all K of its ids agree.
  p = _params(rows=9, buckets=2**31 - 1, width=0.7, family=family, hashes_per_row=k,
              groups=groups)
  hashes = ds.make_hashes(p)
  x = _emb(60, seed=1)
  ids = ds.bucket_ids(x, p, hashes)
  assert ids.dtype == np.int64 and ids.shape == (60, 9)
  assert ids.min() >= 0 and ids.max() < p.buckets
  h, margin = _p_stable_ids(x, p, hashes)
  k, g = p.hashes_per_row, p.groups
  if g:  # row r = s*g + i: left group i, right group (i + s) % g
    kl = (k + 1) // 2
    pairs = [(r % g, (r % g + r // g) % g) for r in range(p.rows)]
    assert len(set(pairs)) == p.rows
    split = lambda a: (a[:, :g * kl].reshape(60, g, kl), a[:, g * kl:].reshape(60, g, k - kl))
    (hl, hr), (ml, mr) = split(h), split(margin)
    cols = [np.concatenate([hl[:, i], hr[:, j]], 1) for i, j in pairs]
    near = [np.concatenate([ml[:, i], mr[:, j]], 1) for i, j in pairs]
  else:
    cols = [h[:, r * k:(r + 1) * k] for r in range(p.rows)]
    near = [margin[:, r * k:(r + 1) * k] for r in range(p.rows)]
  checked = 0
  for r in range(p.rows):
    safe = near[r].min(1) > 1e-4  # float32 vs float64 may round differently at a boundary
    same_tuple = (cols[r][:, None, :] == cols[r][None, :, :]).all(-1)
    same_bucket = ids[:, r][:, None] == ids[:, r][None, :]
    both = safe[:, None] & safe[None, :]
    assert np.array_equal(same_tuple[both], same_bucket[both])
    checked += both.sum()
  assert checked > 0.9 * p.rows * 60 * 60
  assert (ids[:, 0][:, None] == ids[:, 0][None, :]).sum() > 60  # clusters do collide


@pytest.mark.parametrize("family", FAMILIES)
@given(data=st.data())
@HYP
def test_bucket_ids_do_not_depend_on_batching(family, data):
  # Exact projections: a document's buckets are the same alone, in any batch, at any
  # offset, with any chunk size; also for large norms (the float64 path).
  p = _params(dim=16, rows=20, buckets=1000, width=0.3, family=family)
  scale = data.draw(st.sampled_from([1.0, 50.0]))
  x = _emb(120, dim=16, seed=data.draw(st.integers(0, 5))) * np.float32(scale)
  ref = ds.bucket_ids(x, p)
  start = data.draw(st.integers(0, 119))
  stop = data.draw(st.integers(start + 1, 120))
  chunk = data.draw(st.integers(1, 64))
  np.testing.assert_array_equal(ds.bucket_ids(x[start:stop], p, chunk_size=chunk),
                                ref[start:stop])


def test_non_finite_and_wrong_shape_are_rejected():
  p = _params()
  x = _emb(4)
  x[2, 3] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    ds.bucket_ids(x, p)
  with pytest.raises(ValueError, match="embeddings must be"):
    ds.bucket_ids(np.zeros((3, 5), np.float32), p)


# --- counts, density, merging ------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
@given(n=st.integers(1, 80), seed=st.integers(0, 10), chunk=st.integers(1, 100),
       buckets=st.sampled_from([7, 5000]), small_blocks=st.booleans())
@HYP
def test_counts_and_density_equal_brute_force(monkeypatch, family, n, seed, chunk, buckets,
                                              small_blocks):
  # buckets=5000: few ids per cell, counted by sorting; small blocks: every row block,
  # projection block and count sub-block loop runs many times
  for name, small, big in (("_BIN_BLOCK", 20, 1 << 20), ("_PROJ_BLOCK", 64, 1 << 21),
                           ("_KEY_BLOCK", 16, 1 << 19)):
    monkeypatch.setattr(ds, name, small if small_blocks else big)
  p = _params(buckets=buckets, family=family)
  hashes = ds.make_hashes(p)
  x = _emb(n, seed=seed)
  ids = ds.bucket_ids(x, p, hashes)
  brute = _brute_counts(ids, p)
  sketch = ds.sketch_from_embeddings([x[:n // 2], x[n // 2:]], p, hashes, chunk_size=chunk)
  np.testing.assert_array_equal(sketch.counts, brute)
  assert sketch.n == n
  np.testing.assert_array_equal(ds.sketch_add(ds.new_counts(p), ids), brute)
  # density = number of documents sharing x's bucket (itself included), mean over rows
  collide = (ids[:, None, :] == ids[None, :, :]).sum(1).mean(1)
  np.testing.assert_allclose(ds.density(x, sketch, hashes, chunk_size=chunk), collide)
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
  p = _params(family=family)
  x = _emb(data.draw(st.integers(0, 60)), seed=data.draw(st.integers(0, 10)))
  direct = ds.sketch_from_embeddings([x], p)
  fn = ds.DensitySketchCombineFn(p, chunk_size=data.draw(st.integers(1, 30)))
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
  p = _params()
  big = np.full((p.rows, p.buckets), 2**30, np.int32)
  counts, n = ds.sketch_merge(big.copy(), 2**30, big, 2**30 + 5)
  assert counts.dtype == np.int64 and n == 2**31 + 5
  assert counts[0, 0] == 2**31
  counts, n = ds.sketch_merge(None, 0, big, 7)
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
  acc = ds.SketchAccumulator(counts, n, pend)
  coder = ds.SketchAccumulatorCoder()
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
  p = ds.SketchParams(dim=8, rows=100, buckets=5000, hashes_per_row=4, bucket_width=1.0,
                      seed=1)
  fn = ds.DensitySketchCombineFn(p)
  coder = fn.get_accumulator_coder()
  acc = fn.compact(fn.add_inputs(fn.create_accumulator(), [_emb(50)]))
  sparse = coder.encode(acc)
  assert len(sparse) < 20 * 100 * 50 + 100  # <= one cell per row and doc, not 100 x 5000
  acc = fn.compact(fn.add_inputs(acc, [_emb(20000, seed=3, clusters=5000)]))
  dense = coder.encode(acc)
  assert len(dense) <= 4 * 100 * 5000 + 100  # raw int32 bytes + a small header
  assert len(coder.encode(fn.create_accumulator())) < 100
  assert ds.SketchAccumulator in ds.beam.coders.registry._coders


def test_combine_fn_pickles_small_and_builds_hashes_once():
  p = ds.SketchParams(dim=384, rows=1000, buckets=20000, hashes_per_row=4, bucket_width=1.0,
                      seed=1)
  fn = ds.DensitySketchCombineFn(p)
  fn.setup()
  w = fn.hashes()[0]
  assert fn.hashes()[0] is w
  blob = pickle.dumps(fn)
  assert len(blob) < 2000  # hashes (6 MB) are not shipped
  assert pickle.loads(blob)._hashes is None


# --- Beam --------------------------------------------------------------------------------

_ENCODED = collections.Counter()


class _CountingCoder(ds.SketchAccumulatorCoder):
  def encode(self, acc):
    _ENCODED["n"] += 1
    return super().encode(acc)


class _CountingCombineFn(ds.DensitySketchCombineFn):
  def get_accumulator_coder(self):
    return _CountingCoder()


@pytest.mark.parametrize("family", FAMILIES)
def test_combine_globally_on_fn_api_runner_matches_numpy(family):
  p = _params(dim=16, rows=12, buckets=50, width=0.5, family=family)
  x = _emb(300, dim=16, seed=5)
  expected = ds.sketch_from_embeddings([x], p)
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


# --- artifact, kernel, width -------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip(tmp_path, family):
  p = _params(family=family)
  x = _emb(50)
  sketch = ds.sketch_from_embeddings([x], p)
  path = str(tmp_path / "sub" / "sketch.npz")
  ds.save_sketch(sketch, path)
  back = ds.load_sketch(path)
  assert back.params == p and back.n == 50
  np.testing.assert_array_equal(back.counts, sketch.counts)
  np.testing.assert_array_equal(back.density(x), sketch.density(x))
  # an artifact whose hashes cannot be rebuilt from its params is refused
  with np.load(path) as data:
    fields = dict(data)
  fields["fingerprint"] = np.array("0" * 32)
  bad = str(tmp_path / "bad.npz")
  np.savez(bad, **fields)
  with pytest.raises(ValueError, match="differ"):
    ds.load_sketch(bad)
  assert ds.load_sketch(bad, verify=False).n == 50


def test_collision_probability_matches_the_hash():
  # Datar et al.'s formula against the real hash: many K=1 rows, two points at distance c.
  for c, width in ((0.3, 1.0), (1.0, 1.0), (0.5, 2.0)):
    p = ds.SketchParams(dim=4, rows=20000, buckets=2**31 - 1, hashes_per_row=1,
                        bucket_width=width, seed=11)
    x = np.array([[0.5, 0, 0, 0], [0.5 + c, 0, 0, 0]], np.float32)
    ids = ds.bucket_ids(x, p)
    assert np.mean(ids[0] == ids[1]) == pytest.approx(
        float(ds.collision_probability(c, width)), abs=0.015)
  assert float(ds.collision_probability(0.0, 1.0)) == 1.0
  probs = ds.collision_probability(np.linspace(0.01, 5, 50), 1.0)
  assert np.all(np.diff(probs) < 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_sketch_density_estimates_the_exact_kernel(family):
  p = ds.SketchParams(dim=16, rows=400, buckets=2**14, bucket_width=1.2, seed=2,
                      **_family(family, 400, k=4))
  x = _emb(200, dim=16, seed=4, clusters=8)
  x[100:] = _emb(100, dim=16, seed=9, clusters=100)  # half sparse, half clustered
  exact = ds.exact_kernel_density(x, p, chunk_size=64)
  est = ds.sketch_from_embeddings([x], p).density(x)
  assert np.corrcoef(exact, est)[0, 1] > 0.95
  np.testing.assert_allclose(est.mean(), exact.mean(), rtol=0.1)
  # with few buckets, spurious collisions add ~n/B to every raw count; debias removes it
  few = dataclasses.replace(p, buckets=8)
  sketch = ds.sketch_from_embeddings([x], few)
  assert sketch.density(x).mean() > exact.mean() + 0.8 * 200 / 8
  np.testing.assert_allclose(sketch.density(x, debias=True).mean(), exact.mean(), rtol=0.1)


def test_auto_width_scales_with_k_and_distance():
  x = _emb(300, dim=16, seed=1, clusters=30)
  w1 = ds.auto_bucket_width(x, 1)
  assert w1 > 0
  assert ds.auto_bucket_width(x, 4) == pytest.approx(4 * w1)
  assert ds.auto_bucket_width(2 * x, 4) == pytest.approx(8 * w1, rel=1e-6)
  assert ds.auto_bucket_width(x, 2, max_docs=100) == ds.auto_bucket_width(x, 2, max_docs=100)
  with pytest.raises(ValueError):
    ds.auto_bucket_width(np.ones((5, 16)), 2)


def test_recommended_params():
  x = _emb(300, dim=16, seed=1, clusters=30)
  p = ds.recommended_params(x, seed=5)
  assert (p.dim, p.rows, p.buckets, p.hashes_per_row, p.groups, p.seed) == (
      16, 1000, 20000, 8, 32, 5)
  assert p.bucket_width == pytest.approx(ds.auto_bucket_width(x, 8))
  assert ds.recommended_params(x, bucket_width=0.5, groups=0).groups == 0
