"""Selection inside clusters without Beam: the balanced quotas (Vo et al. 2024) and greedy
SemDeDup (Abbas et al. 2023) of one group, with the hyperplanes that split a large cluster
into groups. The Beam transforms that apply them are in transforms/cluster_sampling.py.
"""
from __future__ import annotations

import functools
import hashlib
import math
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from transforms.algorithms.sampling import uniform_from_id


def balanced_quotas(sizes: Mapping[Any, int], k: int, seed: int,
                    tie_name: Callable[[Any], str] = lambda c: f"cluster\x00{c}"
                    ) -> Tuple[float, Dict[Any, int]]:
  """(cap, {group: quota}): the cap x with sum_c min(x, n_c) = k, as integer quotas.
  Groups are clusters (ints) or any other group key (topics, field values as text).

  The largest integer m with sum min(m, n_c) <= k is every cluster's base; the r
  documents left over go one each to r of the clusters larger than m, chosen by a hash
  of (seed, tie_name(cluster)) (the tie rule). The quotas add up to exactly
  min(k, sum n_c), and the cap returned is m + r / (clusters larger than m).
  """
  sizes = {(c if isinstance(c, str) else int(c)): int(n) for c, n in sizes.items()
           if n > 0}
  k = max(0, min(int(k), sum(sizes.values())))
  if k == 0:
    return 0.0, {c: 0 for c in sizes}
  lo, hi = 0, max(sizes.values())
  while lo < hi:  # the largest m with sum min(m, n_c) <= k
    mid = (lo + hi + 1) // 2
    if sum(min(mid, n) for n in sizes.values()) <= k:
      lo = mid
    else:
      hi = mid - 1
  quotas = {c: min(lo, n) for c, n in sizes.items()}
  left = k - sum(quotas.values())
  over = sorted((c for c, n in sizes.items() if n > lo),
                key=lambda c: (uniform_from_id(seed, tie_name(c)), c))
  for c in over[:left]:
    quotas[c] += 1
  return (lo + left / len(over) if over else float(lo)), quotas


def dedup_group(x: np.ndarray, eps: float, block: int = 256) -> List[Optional[int]]:
  """Greedy SemDeDup of one group of unit vectors, in the given order (best first):
  a vector whose cosine similarity to an already kept one exceeds 1 - eps is a
  duplicate of the most similar kept one. Returns, per row, the row it duplicates
  (None: kept)."""
  x = np.asarray(x, np.float32)
  n = len(x)
  threshold = 1.0 - eps
  out: List[Optional[int]] = [None] * n
  kept: List[int] = []
  for start in range(0, n, block):
    rows = range(start, min(start + block, n))
    xb = x[start:start + block]
    if kept:
      sims = xb @ x[kept].T
      best = sims.argmax(axis=1)
      best_sim = sims[np.arange(len(xb)), best]
    else:
      best_sim = np.full(len(xb), -np.inf, np.float32)
      best = np.zeros(len(xb), np.int64)
    inner = xb @ xb.T
    kept_here: List[int] = []
    for i, row in enumerate(rows):
      sim, dup = float(best_sim[i]), (kept[best[i]] if kept else None)
      if kept_here:
        local = inner[i, kept_here]
        j = int(np.argmax(local))
        if local[j] > sim:
          sim, dup = float(local[j]), start + kept_here[j]
      if sim > threshold:
        out[row] = dup
      else:
        kept_here.append(i)
    kept.extend(start + i for i in kept_here)
  return out


@functools.lru_cache(maxsize=64)
def subgroup_planes(seed: int, bits: int, dim: int) -> np.ndarray:
  """`bits` hyperplanes through the origin from a hash of the seed: a large cluster is
  split by which side of them a document lies on, so near-copies (a small angle apart)
  stay together with probability 1 - angle/pi per plane."""
  digest = hashlib.blake2b(b"%d\x00semdedup" % int(seed), digest_size=8).digest()
  rng = np.random.default_rng(int.from_bytes(digest, "little"))
  return rng.standard_normal((bits, dim)).astype(np.float32)


def subgroup_bits(size: int, max_group: int) -> int:
  """Planes for a cluster of `size`: one more than needed on average, so that most
  sub-groups stay under max_group."""
  if size <= max_group:
    return 0
  return int(math.ceil(math.log2(size / max_group))) + 1
