"""The density sketch's pass 1 in Beam: a CombineFn whose accumulator is the counts, and
that accumulator's coder.

The counting and the density themselves are in transforms/algorithms/sketch_counts.py
(pure numpy); their names are importable from here as before.
"""
from __future__ import annotations

import struct

import numpy as np

import apache_beam as beam

from transforms.algorithms.sketch_counts import (  # noqa: F401  (re-exported)
    Sketch, _add_embeddings, _counts_dtype, density, new_counts, sketch_add,
    sketch_from_embeddings, sketch_merge)
from transforms.algorithms.sketch_hashing import (DEFAULT_CHUNK, Hashes, SketchParams,
                                                  check_embeddings, make_hashes)


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
