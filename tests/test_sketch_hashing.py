"""Sketch hashing: params, hashes from the seed, bucket ids, the auto width."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

from tests.sketch_helpers import FAMILIES, HYP, emb, params
from transforms.sketch_hashing import SketchParams, auto_bucket_width, bucket_ids, make_hashes


def _p_stable_ids(x, params, hashes):
  """The spec formula floor((x.w + b) / width) per projection, in float64, on the
  documented 2^-11 grid of x; and how close each value is to a bucket boundary."""
  w, b = hashes
  xq = np.rint(np.asarray(x, np.float64) * 2**11) / 2**11
  v = (xq @ w.astype(np.float64) + b) / params.bucket_width
  return np.floor(v).astype(np.int64), np.abs(v - np.rint(v))


# --- params and hashes -------------------------------------------------------------------

def test_params_round_trip_and_validation():
  p = params(family="shared")
  assert SketchParams.from_dict(p.to_dict()) == p
  classic = p.to_dict()
  del classic["groups"]  # params saved without the field read as the classic family
  assert SketchParams.from_dict(classic).groups == 0
  for bad in (dict(rows=0), dict(buckets=0), dict(buckets=2**31), dict(width=0.0),
              dict(width=float("nan")), dict(hashes_per_row=17), dict(groups=2),
              dict(groups=7), dict(groups=3, hashes_per_row=1),
              dict(groups=3, hashes_per_row=17)):
    with pytest.raises(ValueError):
      params(**bad)


@pytest.mark.parametrize("family", FAMILIES)
def test_hashes_come_from_the_seed_only(family):
  p = params(rows=10, width=0.5, family=family)
  w, b = make_hashes(p)
  cols = (p.groups or 10) * p.hashes_per_row
  assert w.shape == (8, cols) and b.shape == (cols,)
  assert w.dtype == b.dtype == np.float32
  assert np.all((b >= 0) & (b < 0.5))
  w2, b2 = make_hashes(SketchParams.from_dict(p.to_dict()))
  assert np.array_equal(w, w2) and np.array_equal(b, b2)
  assert not np.array_equal(w, make_hashes(params(rows=10, seed=4, family=family))[0])


# --- bucket ids --------------------------------------------------------------------------

@pytest.mark.parametrize("family,k,groups", [("independent", 3, 0), ("independent", 8, 0),
                                             ("independent", 13, 0), ("shared", 5, 3),
                                             ("shared", 4, 5), ("shared", 12, 4)])
def test_same_bucket_iff_same_k_tuple_of_p_stable_ids(family, k, groups):
  # With 2^31 - 1 buckets, spurious collisions of different K-tuples have probability
  # ~1e-9: two documents share a row's bucket exactly when all K of its ids agree.
  p = params(rows=9, buckets=2**31 - 1, width=0.7, family=family, hashes_per_row=k,
             groups=groups)
  hashes = make_hashes(p)
  x = emb(60, seed=1)
  ids = bucket_ids(x, p, hashes)
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
  p = params(dim=16, rows=20, buckets=1000, width=0.3, family=family)
  scale = data.draw(st.sampled_from([1.0, 50.0]))
  x = emb(120, dim=16, seed=data.draw(st.integers(0, 5))) * np.float32(scale)
  ref = bucket_ids(x, p)
  start = data.draw(st.integers(0, 119))
  stop = data.draw(st.integers(start + 1, 120))
  chunk = data.draw(st.integers(1, 64))
  np.testing.assert_array_equal(bucket_ids(x[start:stop], p, chunk_size=chunk),
                                ref[start:stop])


def test_non_finite_and_wrong_shape_are_rejected():
  p = params()
  x = emb(4)
  x[2, 3] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    bucket_ids(x, p)
  with pytest.raises(ValueError, match="embeddings must be"):
    bucket_ids(np.zeros((3, 5), np.float32), p)


def test_auto_width_scales_with_k_and_distance():
  x = emb(300, dim=16, seed=1, clusters=30)
  w1 = auto_bucket_width(x, 1)
  assert w1 > 0
  assert auto_bucket_width(x, 4) == pytest.approx(4 * w1)
  assert auto_bucket_width(2 * x, 4) == pytest.approx(8 * w1, rel=1e-6)
  assert auto_bucket_width(x, 2, max_docs=100) == auto_bucket_width(x, 2, max_docs=100)
  with pytest.raises(ValueError):
    auto_bucket_width(np.ones((5, 16)), 2)
