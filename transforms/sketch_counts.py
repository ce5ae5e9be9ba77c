"""Density (coverage) counts of the LSH sketch (the RACE idea).

Pass 1 sums a count matrix S[rows, buckets] over the corpus (`DensitySketchCombineFn`, or
`sketch_from_embeddings` in memory); pass 2 scores each document as the mean over rows of
S[r, bucket_r(x)] (`density`). The buckets come from sketch_hashing.py.
"""
from __future__ import annotations

import dataclasses
import struct
from typing import Iterable, Optional, Tuple

import numpy as np

import apache_beam as beam

from transforms.sketch_hashing import (DEFAULT_CHUNK, Hashes, SketchParams, check_embeddings,
                                       embedding_chunks, make_hashes, row_blocks)

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


# ---------------------------------------------------------------------------------------
# Beam: the sketch is a sum, so pass 1 is a CombineFn whose accumulator is the counts.


class SketchAccumulator:
  """counts (None = all zeros, so empty accumulators cost nothing), n, and embeddings not
  yet hashed: Beam calls add_input one document at a time, and hashing one vector at a
  time would be ~100x slower than hashing a chunk."""
  __slots__ = ("counts", "n", "pending", "pending_rows")

  def __init__(self, counts=None, n=0, pending=None):
    self.counts = counts
    self.n = n
    self.pending = [] if pending is None else pending
    self.pending_rows = sum(p.shape[0] for p in self.pending)


class SketchAccumulatorCoder(beam.coders.Coder):
  """Raw bytes + shape + n, instead of pickling an 80 MB array. Counts go sparse (flat
  indices + values) when fewer than 1/4 of the cells are set, which is the common case for
  the partial sketch of a small bundle. Pending embeddings go as raw float32."""
  _HEAD = struct.Struct("<4sqBqqqq")  # magic, n, mode, rows, buckets, nnz|0, pending_rows
  _MAGIC = b"DSA1"

  def encode(self, acc: SketchAccumulator) -> bytes:
    c = acc.counts
    pend = (np.concatenate(acc.pending) if acc.pending else np.zeros((0, 0), np.float32))
    parts = []
    if c is None:
      mode, shape, nnz = 0, (0, 0), 0
    else:
      shape, flat = c.shape, c.reshape(-1)
      idx = np.flatnonzero(flat)
      nnz = idx.size
      wide = c.dtype == np.int64
      if nnz * (8 + flat.itemsize) < flat.nbytes:
        mode = 3 + wide
        parts = [idx.astype("<i8").tobytes(), flat[idx].astype("<i8" if wide else "<i4").tobytes()]
      else:
        mode, nnz = 1 + wide, 0
        parts = [flat.astype("<i8" if wide else "<i4").tobytes()]
    head = self._HEAD.pack(self._MAGIC, acc.n, mode, shape[0], shape[1], nnz, pend.shape[0])
    dim = struct.pack("<q", pend.shape[1] if pend.size else 0)
    return b"".join([head, dim] + parts + [pend.astype("<f4").tobytes()])

  def decode(self, data: bytes) -> SketchAccumulator:
    magic, n, mode, rows, buckets, nnz, prow = self._HEAD.unpack_from(data, 0)
    if magic != self._MAGIC:
      raise ValueError("not a density sketch accumulator")
    off = self._HEAD.size
    (dim,) = struct.unpack_from("<q", data, off)
    off += 8
    counts = None
    if mode:
      dt = np.dtype("<i8" if mode in (2, 4) else "<i4")
      if mode in (1, 2):
        counts = np.frombuffer(data, dt, rows * buckets, off).reshape(rows, buckets).copy()
        off += rows * buckets * dt.itemsize
      else:
        idx = np.frombuffer(data, "<i8", nnz, off)
        vals = np.frombuffer(data, dt, nnz, off + 8 * nnz)
        off += nnz * (8 + dt.itemsize)
        counts = np.zeros(rows * buckets, dt)
        counts[idx] = vals
        counts = counts.reshape(rows, buckets)
      counts = counts.astype(dt.newbyteorder("="), copy=False)
    pending = []
    if prow:
      pending = [np.frombuffer(data, "<f4", prow * dim, off).reshape(prow, dim).copy()]
    return SketchAccumulator(counts, n, pending)

  def is_deterministic(self) -> bool:
    return True

  def to_type_hint(self):
    return SketchAccumulator


beam.coders.registry.register_coder(SketchAccumulator, SketchAccumulatorCoder)


class DensitySketchCombineFn(beam.CombineFn):
  """Embeddings -> Sketch. Inputs: a 1-D embedding (one document) or a 2-D batch.
  Merging is a sum, so the result does not depend on bundling or merge order."""

  def __init__(self, params: SketchParams, chunk_size: int = DEFAULT_CHUNK):
    self.params = params
    self.chunk_size = chunk_size
    self._hashes = None  # built once per instance on a worker, never pickled

  def __getstate__(self):
    return {"params": self.params, "chunk_size": self.chunk_size, "_hashes": None}

  def setup(self, *args, **kwargs):
    self.hashes()

  def hashes(self) -> Hashes:
    if self._hashes is None:
      self._hashes = make_hashes(self.params)
    return self._hashes

  def create_accumulator(self) -> SketchAccumulator:
    return SketchAccumulator()

  def _flush(self, acc: SketchAccumulator) -> SketchAccumulator:
    if not acc.pending_rows:
      return acc
    emb = acc.pending[0] if len(acc.pending) == 1 else np.concatenate(acc.pending)
    acc.pending, acc.pending_rows = [], 0
    n = acc.n + emb.shape[0]
    if acc.counts is None:
      acc.counts = new_counts(self.params, n)
    elif acc.counts.dtype != _counts_dtype(n):
      acc.counts = acc.counts.astype(np.int64)
    _add_embeddings(acc.counts, emb, self.params, self.hashes(), self.chunk_size)
    acc.n = n
    return acc

  def _add(self, acc: SketchAccumulator, emb: np.ndarray) -> SketchAccumulator:
    emb = check_embeddings(emb, self.params)
    acc.pending.append(emb)
    acc.pending_rows += emb.shape[0]
    return self._flush(acc) if acc.pending_rows >= self.chunk_size else acc

  def add_input(self, acc, element):
    return self._add(acc, element)

  def add_inputs(self, acc, elements):
    arrays = [check_embeddings(e, self.params) for e in elements]
    return self._add(acc, np.concatenate(arrays)) if arrays else acc

  def merge_accumulators(self, accumulators):
    it = iter(accumulators)  # may be a lazy iterable of 80 MB arrays: hold two at a time
    first = self._flush(next(it, None) or self.create_accumulator())
    for other in it:
      other = self._flush(other)
      first.counts, first.n = sketch_merge(first.counts, first.n, other.counts, other.n)
    return first

  def compact(self, acc):
    return self._flush(acc)  # Beam calls this before shipping a partial accumulator

  def extract_output(self, acc) -> Sketch:
    acc = self._flush(acc)
    counts = new_counts(self.params, acc.n) if acc.counts is None else acc.counts
    return Sketch(self.params, counts, acc.n)

  def get_accumulator_coder(self):
    return SketchAccumulatorCoder()
