"""Deterministic weighted sampling without replacement (Efraimidis-Spirakis keys).

Each document gets the key log(u) / w (Efraimidis & Spirakis 2006) with u in (0, 1) from a
hash of (seed, document id), and the k largest keys are the sample. Keeping the k largest
keys of independent log(u)/w draws is exactly successive sampling with probability
proportional to w. u depends only on (seed, id): the same seed and input give the same
sample on any runner, with any bundling, after any retry.

The sort keys of Documents built on these are in transforms/sampling.py.
"""
from __future__ import annotations

import hashlib
import math
from typing import Dict, List

import numpy as np

_SCALE = 2.0 ** -53


def uniform_from_id(seed: int, doc_id: str) -> float:
  """u in (0, 1), from blake2b of (seed, id); never Python's hash(), never a stream RNG.

  52 hash bits k give u = (2k + 1) / 2^53: the centres of 2^52 equal cells, so u is
  never 0 or 1 (plain k / 2^53 can be 0, and 64-bit k / 2^64 rounds up to 1.0).
  """
  data = b"%d\x00" % int(seed) + doc_id.encode("utf-8")
  k = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 12
  return (2 * k + 1) * _SCALE


def sampling_key(seed: int, doc_id: str, weight: float) -> float:
  """log(u) / weight: larger keys are drawn earlier. Keys are <= 0 (log u < 0)."""
  if not weight > 0:  # also rejects NaN
    raise ValueError(f"sampling weight must be > 0, got {weight!r} for {doc_id!r}")
  return math.log(uniform_from_id(seed, doc_id)) / weight


def ips_weight(density, min_density: float = 1e-12):
  """Inverse propensity weight 1 / density. A density of 0 (a document scored against a
  sketch that does not contain it, in an empty region) is clamped to min_density, which
  makes it all but certain to be drawn: nothing like it is in the corpus yet. For
  documents counted in the sketch pass min_density=1 (each collides with itself): a
  debiased density (sketch_counts.density(debias=True)) can fall below 1 by noise."""
  d = np.asarray(density, dtype=np.float64)
  if np.any(np.isnan(d)) or np.any(d < 0):
    raise ValueError("density must be >= 0 and not NaN")
  w = 1.0 / np.maximum(d, min_density)
  return float(w) if w.ndim == 0 else w


def select_top_k_keys(keys: Dict[str, float], k: int) -> List[str]:
  """Reference helper for tests: ids of the k largest keys, ties broken by id ascending."""
  return [i for i, _ in sorted(keys.items(), key=lambda kv: (-kv[1], kv[0]))[:max(k, 0)]]
