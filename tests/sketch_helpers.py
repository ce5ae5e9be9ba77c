"""Shared by the sketch tests: small sketch params of both hash families, clustered unit
vectors, hypothesis settings."""
import math

import numpy as np
from hypothesis import HealthCheck, settings

from transforms.sketch_hashing import SketchParams

FAMILIES = ["independent", "shared"]
HYP = settings(max_examples=20, deadline=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture])


def family_kw(name, rows, k=None):
  """Independent rows (K=3), or rows sharing projection groups (K=5, ~3 rows per group)."""
  if name == "independent":
    return dict(hashes_per_row=k or 3, groups=0)
  return dict(hashes_per_row=k or 5, groups=max(math.isqrt(rows - 1) + 1, rows // 3))


def params(dim=8, rows=6, buckets=7, width=1.0, seed=3, family="independent", **kw):
  kw = {**family_kw(family, rows), **kw}
  return SketchParams(dim=dim, rows=rows, buckets=buckets, bucket_width=width, seed=seed, **kw)


def emb(n, dim=8, seed=0, clusters=3):
  """Unit vectors in a few tight clusters, so that buckets really collide."""
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((clusters, dim))
  x = centres[rng.integers(0, clusters, n)] + 0.05 * rng.standard_normal((n, dim))
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
