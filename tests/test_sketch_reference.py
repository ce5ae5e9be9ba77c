"""The reference implementations (benchmarks/sketch_reference.py) against the real sketch:
the collision probability, the exact kernel density, the recommended params."""
import dataclasses

import numpy as np
import pytest

from benchmarks.sketch_reference import (collision_probability, exact_kernel_density,
                                         recommended_params)
from tests.sketch_helpers import FAMILIES, emb, family_kw
from transforms.sketch_counts import sketch_from_embeddings
from transforms.sketch_hashing import SketchParams, auto_bucket_width, bucket_ids


def test_collision_probability_matches_the_hash():
  # Datar et al.'s formula against the real hash: many K=1 rows, two points at distance c.
  for c, width in ((0.3, 1.0), (1.0, 1.0), (0.5, 2.0)):
    p = SketchParams(dim=4, rows=20000, buckets=2**31 - 1, hashes_per_row=1,
                     bucket_width=width, seed=11)
    x = np.array([[0.5, 0, 0, 0], [0.5 + c, 0, 0, 0]], np.float32)
    ids = bucket_ids(x, p)
    assert np.mean(ids[0] == ids[1]) == pytest.approx(
        float(collision_probability(c, width)), abs=0.015)
  assert float(collision_probability(0.0, 1.0)) == 1.0
  probs = collision_probability(np.linspace(0.01, 5, 50), 1.0)
  assert np.all(np.diff(probs) < 0)


@pytest.mark.parametrize("family", FAMILIES)
def test_sketch_density_estimates_the_exact_kernel(family):
  p = SketchParams(dim=16, rows=400, buckets=2**14, bucket_width=1.2, seed=2,
                   **family_kw(family, 400, k=4))
  x = emb(200, dim=16, seed=4, clusters=8)
  x[100:] = emb(100, dim=16, seed=9, clusters=100)  # half sparse, half clustered
  exact = exact_kernel_density(x, p, chunk_size=64)
  est = sketch_from_embeddings([x], p).density(x)
  assert np.corrcoef(exact, est)[0, 1] > 0.95
  np.testing.assert_allclose(est.mean(), exact.mean(), rtol=0.1)
  # with few buckets, spurious collisions add ~n/B to every raw count; debias removes it
  few = dataclasses.replace(p, buckets=8)
  sketch = sketch_from_embeddings([x], few)
  assert sketch.density(x).mean() > exact.mean() + 0.8 * 200 / 8
  np.testing.assert_allclose(sketch.density(x, debias=True).mean(), exact.mean(), rtol=0.1)


def test_recommended_params():
  x = emb(300, dim=16, seed=1, clusters=30)
  p = recommended_params(x, seed=5)
  assert (p.dim, p.rows, p.buckets, p.hashes_per_row, p.groups, p.seed) == (
      16, 1000, 20000, 8, 32, 5)
  assert p.bucket_width == pytest.approx(auto_bucket_width(x, 8))
  assert recommended_params(x, bucket_width=0.5, groups=0).groups == 0
