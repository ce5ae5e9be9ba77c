"""Spherical k-means on unit vectors: the math of transforms/kmeans.py, without Beam.

The embeddings are unit vectors, so the nearest centroid is the one with the largest
cosine similarity, and a centroid is the normalised mean of its documents.

- k-means++ seeding on a sample, its draws from a hash of (seed, round).
- Assignment to the nearest centroid; ties go to the lower index.
- Per-cluster sums of the vectors in fixed point: exact integers, so the same in any merge
  order, on any number of workers, and so are the centroids.
- The update: a cluster that ends an iteration empty keeps its previous centroid.
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import numpy as np

from transforms.algorithms.sampling import uniform_from_id

# Fixed point of a vector component in the sums: |x| <= 1 for unit vectors, so a
# cluster can hold 2^33 (8.6 billion) documents before an int64 sum could overflow.
SCALE = float(1 << 30)


def fixed_point(x: np.ndarray) -> np.ndarray:
  return np.rint(np.asarray(x, np.float64) * SCALE).astype(np.int64)


def assign(x: np.ndarray, centroids: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
  """(cluster, cosine distance to its centroid) per row; ties go to the lower index."""
  x = np.asarray(x, np.float32)
  sims = x @ np.asarray(centroids, np.float32).T
  labels = np.argmax(sims, axis=1)
  return labels.astype(np.int64), (1.0 - sims[np.arange(len(x)), labels]).astype(np.float64)


@dataclasses.dataclass
class ClusterSums:
  """Per-cluster sums of the fixed-point vectors and counts: exact, so associative."""
  sums: Optional[np.ndarray] = None    # [k, d] int64
  counts: Optional[np.ndarray] = None  # [k] int64

  def add(self, x: np.ndarray, labels: np.ndarray, k: int) -> "ClusterSums":
    q = fixed_point(x)
    labels = np.asarray(labels, np.int64)
    sums = np.zeros((k, q.shape[1]), np.int64)
    counts = np.bincount(labels, minlength=k).astype(np.int64)
    if len(labels):
      # Rows sorted by cluster, then one vectorised sum per run of equal labels
      # (np.add.at does the same one element at a time, about 10x slower).
      order = np.argsort(labels, kind="stable")
      present = np.flatnonzero(counts)
      starts = np.concatenate([[0], np.cumsum(counts[present])[:-1]])
      sums[present] = np.add.reduceat(q[order], starts, axis=0)
    return self.merge(ClusterSums(sums, counts))

  def merge(self, other: "ClusterSums") -> "ClusterSums":
    if other.sums is None:
      return self
    if self.sums is None:
      self.sums, self.counts = other.sums.copy(), other.counts.copy()
    else:
      self.sums += other.sums
      self.counts += other.counts
    return self


def update(sums: ClusterSums, previous: np.ndarray) -> np.ndarray:
  """New centroids: the normalised mean of each cluster; an empty cluster (or one whose
  vectors cancel out) keeps its previous centroid."""
  out = np.array(previous, np.float32, copy=True)
  if sums.sums is None:
    return out
  mean = sums.sums.astype(np.float64)
  norms = np.linalg.norm(mean, axis=1)
  ok = (sums.counts > 0) & (norms > 0)
  out[ok] = (mean[ok] / norms[ok, None]).astype(np.float32)
  return out


def check_num_clusters(k: int, documents: int) -> None:
  if k < 1:
    raise ValueError(f"--num_clusters must be at least 1, got {k}")
  if documents < k:
    raise ValueError(f"{documents} documents are fewer than --num_clusters={k}: lower "
                     "--num_clusters (or use more documents)")


def kmeans_plus_plus(ids, x: np.ndarray, k: int, seed: int) -> np.ndarray:
  """k-means++ seeding (squared chord distance 2 - 2 cos) with its draws from a hash of
  (seed, round): the same centroids for the same sample, whatever order it came in.

  When the sample holds fewer than k distinct vectors, the extra centroids repeat one
  (their clusters stay empty: ties go to the lower index).
  """
  order = sorted(range(len(ids)), key=lambda i: (uniform_from_id(seed, "kmeans\x00" + ids[i]),
                                                 ids[i]))
  x = np.asarray(x, np.float32)[order]
  check_num_clusters(k, len(x))
  chosen = [0]
  d2 = np.maximum(2.0 - 2.0 * (x @ x[0]).astype(np.float64), 0.0)
  for j in range(1, k):
    total = d2.sum()
    if total <= 0:
      chosen.append(chosen[-1])
      continue
    u = uniform_from_id(seed, f"kmeans++\x00{j}")
    pick = int(np.searchsorted(np.cumsum(d2), u * total, side="right"))
    pick = min(pick, len(x) - 1)
    chosen.append(pick)
    d2 = np.minimum(d2, np.maximum(2.0 - 2.0 * (x @ x[pick]).astype(np.float64), 0.0))
  return x[chosen].copy()


def _sample_key(seed: int):
  return lambda t: (-uniform_from_id(seed, "kmeans\x00" + t[0]), t[0])
