"""Density (coverage) counts of the LSH sketch (the RACE idea).

Pass 1 sums a count matrix S[rows, buckets] over the corpus (`DensitySketchCombineFn` in
transforms/sketch_counts.py, or `sketch_from_embeddings` in memory); pass 2 scores each
document as the mean over rows of S[r, bucket_r(x)] (`density`). The buckets come from
sketch_hashing.py.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Optional, Tuple

import numpy as np

from transforms.algorithms.sketch_hashing import (DEFAULT_CHUNK, Hashes, SketchParams,
                                                  check_embeddings, embedding_chunks,
                                                  make_hashes, row_blocks)

_BIN_BLOCK = 1 << 20  # count cells per np.bincount call (its int64 output: 8 MB)
_INT32_MAX = np.iinfo(np.int32).max


# ---------------------------------------------------------------------------------------
# Counts: int32 [rows, buckets] (80 MB at R=1000, B=20000), promoted to int64 only when the
# number of documents could overflow a cell (one cell holds at most n).


def _counts_dtype(n: int):
  return np.int32 if n <= _INT32_MAX else np.int64


def new_counts(params: SketchParams, n: int = 0) -> np.ndarray:
  return np.zeros((params.rows, params.buckets), _counts_dtype(n))


def _add_counts(cells: np.ndarray, flat: np.ndarray) -> None:
  """cells[flat] += 1 with repeats. bincount is ~10x faster than np.add.at per id, but
  costs a pass over every cell: when ids are few (a small flush), sort them instead."""
  if flat.size * 8 < cells.size:
    ids, n = np.unique(flat, return_counts=True)
    cells[ids] += n.astype(cells.dtype)
  else:
    np.add(cells, np.bincount(flat, minlength=cells.size), out=cells, casting="unsafe")


def _add_block(counts: np.ndarray, r0: int, r1: int, flat: np.ndarray) -> None:
  """Counts one yielded row block, in sub-blocks of at most _BIN_BLOCK cells."""
  b = counts.shape[1]
  step = max(1, _BIN_BLOCK // b)
  for j0 in range(0, r1 - r0, step):
    j1 = min(r1 - r0, j0 + step)
    sub = flat if (j0, j1) == (0, r1 - r0) else flat[:, j0:j1] - j0 * b
    _add_counts(counts[r0 + j0:r0 + j1].reshape(-1), sub.ravel())


def sketch_add(counts: np.ndarray, ids: np.ndarray) -> np.ndarray:
  """counts[r, ids[i, r]] += 1 for all i, r, in place (bincount on flat ids; np.add.at is
  ~10x slower). Returns counts. The caller promotes to int64 before 2^31 documents."""
  rows, buckets = counts.shape
  ids = np.asarray(ids, np.int64).reshape(-1, rows)
  flat = ids + np.arange(rows, dtype=np.int64) * buckets
  _add_block(counts, 0, rows, flat)
  return counts


def _add_embeddings(counts: np.ndarray, emb: np.ndarray, params: SketchParams,
                    hashes: Hashes, chunk_size: int = DEFAULT_CHUNK) -> None:
  """The fast path: hash and count chunk by chunk, row block by row block, in place."""
  for _, x in embedding_chunks(emb, params, chunk_size):
    for r0, r1, flat in row_blocks(x, params, hashes):
      _add_block(counts, r0, r1, flat)


def sketch_merge(counts: Optional[np.ndarray], n: int, other_counts: Optional[np.ndarray],
                 other_n: int) -> Tuple[Optional[np.ndarray], int]:
  """Adds other into counts (in place when possible). None means all zeros."""
  total = n + other_n
  if other_counts is None:
    return counts, total
  if counts is None:
    return other_counts.copy(), total
  if counts.shape != other_counts.shape:
    raise ValueError(f"sketch shapes differ: {counts.shape} vs {other_counts.shape}")
  if counts.dtype != np.int64 and (total > _INT32_MAX or other_counts.dtype == np.int64):
    counts = counts.astype(np.int64)
  counts += other_counts
  return counts, total


@dataclasses.dataclass
class Sketch:
  """The combined sketch: what pass 2 scores against, and the saved artifact."""
  params: SketchParams
  counts: np.ndarray  # [rows, buckets]
  n: int

  def density(self, emb, hashes=None, normalize=False, chunk_size=DEFAULT_CHUNK,
              debias=False):
    return density(emb, self, hashes, normalize=normalize, chunk_size=chunk_size,
                   debias=debias)


def sketch_from_embeddings(chunks: Iterable[np.ndarray], params: SketchParams,
                           hashes: Optional[Hashes] = None,
                           chunk_size: int = DEFAULT_CHUNK) -> Sketch:
  """Builds a sketch from an iterable of [n, dim] arrays without holding more than one."""
  hashes = make_hashes(params) if hashes is None else hashes
  counts, n = new_counts(params), 0
  for emb in chunks:
    emb = check_embeddings(emb, params)
    if n + emb.shape[0] > _INT32_MAX:
      counts = counts.astype(np.int64, copy=False)
    _add_embeddings(counts, emb, params, hashes, chunk_size)
    n += emb.shape[0]
  return Sketch(params, counts, n)


def density(emb: np.ndarray, sketch: Sketch, hashes: Optional[Hashes] = None,
            normalize: bool = False, chunk_size: int = DEFAULT_CHUNK,
            debias: bool = False) -> np.ndarray:
  """[N] float64: mean over rows of counts[r, bucket_r(x)], divided by n if normalize.
  A document counted in the sketch scores at least 1 (it collides with itself).

  debias: subtract the spurious collisions of the B-bucket hash. A document at kernel k
  from x shares x's cell with probability k + (1 - k)/B, so E[count] = sum_y k(x, y) +
  (n - sum_y k)/B, and (count - n/B) * B/(B-1) estimates the kernel sum itself. At scale
  n/B is large (364M docs / 20,000 buckets = 18,000 per cell) and drowns the signal of a
  sharp kernel: measured with n/B = 14, a 20% IPS sample keeps 0.36 near-copies raw and
  0.14 debiased (benchmarks/density_selection.py). The estimate can fall below 1 for a
  document in the sketch: clamp it there before 1/density."""
  params = sketch.params
  emb = check_embeddings(emb, params)
  hashes = make_hashes(params) if hashes is None else hashes
  out = np.empty(emb.shape[0], np.float64)
  for s, x in embedding_chunks(emb, params, chunk_size):
    acc = np.zeros(x.shape[0], np.int64)
    for r0, r1, flat in row_blocks(x, params, hashes):
      acc += np.take(sketch.counts[r0:r1].reshape(-1), flat).sum(axis=1, dtype=np.int64)
    out[s:s + x.shape[0]] = acc
  out /= params.rows
  if debias:
    b = params.buckets
    out -= sketch.n / b
    out *= b / (b - 1) if b > 1 else 1.0
  if normalize:
    out /= max(sketch.n, 1)
  return out
