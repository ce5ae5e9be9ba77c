"""Density (coverage) scores from an LSH count sketch (DESIGN.md section 3, the RACE idea).

Pass 1 sums a count matrix S[rows, buckets] over the corpus (`DensitySketchCombineFn`);
pass 2 scores each document as the mean over rows of S[r, bucket_r(x)] (`density`).

Hash family: p-stable (Gaussian) projections h(x) = floor((x.w + b) / width). A row's
bucket combines K = hashes_per_row such ids, so two documents share it with probability
p(c)^K (c = their distance), which sharpens the kernel: with K = 1 it is so wide on unit
vectors that density barely varies (measured, see DESIGN.md).

Two ways to get the R*K ids of the rows (`SketchParams.groups`):
- groups=0, independent rows (the default, the classic family): W has R*K columns, row r
  uses columns r*K .. r*K+K-1. 2*dim*R*K flops per document: the matmul sets the speed.
- groups=g > 0, shared projections (Andoni & Indyk's E2LSH trick of reusing hash
  functions): g "left" groups of ceil(K/2) projections and g "right" groups of floor(K/2);
  row r = s*g + i concatenates left group i and right group (i + s) % g, so R <= g^2 rows
  are distinct pairs. Every row still has collision probability p(c)^K and the matmul
  shrinks from R*K to g*K columns (8000 -> 256 for R=1000, K=8), but rows sharing a
  group are correlated (for a pair with half-collision probability q, correlation
  q/(1+q)). Measured on 4,000 real documents (benchmarks/): density ranks are noisier
  (Spearman with the exact kernel 0.42 at g=32 vs 0.77 independent, K=8), yet a 20% IPS
  sample drops near-duplicates exactly as well (0.141 vs 0.144 near-copy share; exact
  kernel 0.138), at ~7x the speed. See recommended_params().

Everything derives from `SketchParams.seed` through np.random.default_rng, so every worker
builds identical hashes; the saved sketch carries a fingerprint of them so that scoring
with a different numpy RNG stream fails loudly instead of silently scoring garbage.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import math
import struct
from typing import Iterable, Iterator, Optional, Tuple

import numpy as np

import apache_beam as beam
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

Hashes = Tuple[np.ndarray, np.ndarray]  # (W [dim, cols] float32, b [cols] float32)

# Exact projections: embeddings are rounded to multiples of 2^-11 and W to multiples of 2^-6,
# so every product is a multiple of 2^-17 and float32 sums stay exact while
# ||x|| * ||w|| < 2^(24-17). Exact sums do not depend on summation order, so a document's
# buckets do not depend on its batch, its offset in it, the BLAS or the thread count (plain
# float32 matmuls differ in the last bits across batch shapes, which flips ~2e-6 of the
# bucket ids and with them the sample). Larger norms fall back to exact float64.
_XQ, _WQ = 2.0 ** 11, 2.0 ** 6
_EXACT32 = 2.0 ** (24 - 17)
DEFAULT_CHUNK = 16384  # docs per matmul chunk: big enough for BLAS, small enough for cache
# Rows go in blocks so that a block's temporaries stay in cache (L3 here is 32 MB):
_PROJ_BLOCK = 1 << 21  # float32 projections per block (independent family; wide matmuls)
_KEY_BLOCK = 1 << 19  # uint64 keys per block (shared groups)
_GROUP_KEYS = 1 << 21  # docs x groups of left/right keys held per chunk (2 x 16 MB)
_BIN_BLOCK = 1 << 20  # count cells per np.bincount call (its int64 output: 8 MB)
_INT32_MAX = np.iinfo(np.int32).max


@dataclasses.dataclass(frozen=True)
class SketchParams:
  """Shape and hash family of a density sketch. Same params -> same hashes everywhere."""
  dim: int
  rows: int
  buckets: int
  hashes_per_row: int
  bucket_width: float
  seed: int
  groups: int = 0  # 0: independent rows; g > 0: shared projection groups (see above)

  def __post_init__(self):
    k = self.hashes_per_row
    if self.dim < 1 or self.rows < 1 or not 1 <= self.buckets < 2**31:
      raise ValueError(f"bad sketch shape: {self}")
    if not self.bucket_width > 0 or not math.isfinite(self.bucket_width):
      raise ValueError(f"bucket_width must be a positive number, got {self.bucket_width}")
    # Ids are packed one byte each into 64-bit keys: 8 exactly, 9-16 folded (see _pack).
    if not (2 <= k <= 16 if self.groups else 1 <= k <= 16):
      raise ValueError(f"hashes_per_row={k} out of range for groups={self.groups}")
    if self.groups and not self.groups ** 2 >= self.rows >= self.groups:
      raise ValueError(f"groups must satisfy groups^2 >= rows >= groups, got {self.groups}")

  @property
  def projections(self) -> int:
    """Columns of W."""
    return (self.groups or self.rows) * self.hashes_per_row

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> "SketchParams":
    return cls(dim=int(d["dim"]), rows=int(d["rows"]), buckets=int(d["buckets"]),
               hashes_per_row=int(d["hashes_per_row"]),
               bucket_width=float(d["bucket_width"]), seed=int(d["seed"]),
               groups=int(d.get("groups", 0)))


def make_hashes(params: SketchParams) -> Hashes:
  """Gaussian projections W [dim, projections] and offsets b ~ U[0, width), from the seed."""
  rng = np.random.default_rng(params.seed)
  w = rng.standard_normal((params.dim, params.projections), dtype=np.float32)
  w = np.rint(w * np.float32(_WQ)) * np.float32(1 / _WQ)  # on the 2^-6 grid, see _XQ
  b = (rng.random(params.projections, dtype=np.float32) * np.float32(params.bucket_width))
  return w, np.minimum(b, np.nextafter(np.float32(params.bucket_width), 0))


@functools.lru_cache(maxsize=16)
def _multipliers(params: SketchParams) -> np.ndarray:
  """Random odd 64-bit multipliers, one per row: multiply-shift hashing of a row's packed
  K ids into [0, buckets) (universal), independent across rows. From the seed only."""
  rng = np.random.default_rng([params.seed, 0x6D756C74])
  return rng.integers(0, 2**63, params.rows, dtype=np.uint64) * np.uint64(2) + np.uint64(1)


def fingerprint(hashes: Hashes) -> str:
  w, b = hashes
  return hashlib.blake2b(w.tobytes() + b.tobytes(), digest_size=16).hexdigest()


def _check(emb: np.ndarray, params: SketchParams) -> np.ndarray:
  emb = np.asarray(emb, dtype=np.float32)
  if emb.ndim == 1:
    emb = emb[None, :]
  if emb.ndim != 2 or emb.shape[1] != params.dim:
    raise ValueError(f"embeddings must be [N, {params.dim}], got {emb.shape}")
  return emb


def _quantize(x: np.ndarray, w: np.ndarray) -> np.ndarray:
  """x on the integer grid (x * 2^11 rounded), float32 when x.w is exact in float32."""
  xi = x * np.float32(_XQ)
  np.rint(xi, out=xi)
  wmax = float(np.sqrt(np.einsum("ij,ij->j", w, w).max()))
  xmax = float(np.sqrt(np.einsum("ij,ij->i", xi, xi).max())) / _XQ
  if not math.isfinite(xmax):  # NaN/inf would hash to garbage silently
    raise ValueError("embeddings contain NaN or inf")
  return xi if xmax * wmax < _EXACT32 else xi.astype(np.float64)


def _ids8(xi: np.ndarray, w: np.ndarray, b: np.ndarray, width: float) -> np.ndarray:
  """floor((x.w + b) / width) for a block of projections, as uint8 (ids mod 256: a bucket
  id is a hash anyway, and unit vectors stay far inside +-128 for any sane width).
  xi: x * 2^11 rounded (see _quantize); the 2^-11 goes into the (small) W block."""
  w = w * (1 / _XQ) if xi.dtype == np.float32 else w.astype(np.float64) * (1 / _XQ)
  p = (xi @ w).astype(np.float32, copy=False)
  p += b
  p *= np.float32(1.0 / width)
  np.floor(p, out=p)
  return p.astype(np.int32).astype(np.uint8)


_KEY_TYPES = {1: "<u1", 2: "<u2", 4: "<u4", 8: "<u8"}


def _fold(key: np.ndarray) -> np.ndarray:
  """A bijective 64-bit mix, so that key_a ^ _fold(key_b) collides only by coincidence."""
  key *= np.uint64(0x9E3779B97F4A7C15)
  key ^= key >> np.uint64(29)
  return key


def _pack(ids8: np.ndarray, k: int) -> np.ndarray:
  """[n, g*k] uint8 ids -> [n, g] uint64 keys, each the little-endian bytes of its k ids
  (a free view for k in 1, 2, 4, 8; injective, so distinct id tuples stay distinct).
  k = 9..16: the first 8 ids' key xor the folded key of the rest (no longer injective,
  but two tuples collide only if two 64-bit values coincide)."""
  n = ids8.shape[0]
  ids8 = ids8.reshape(n, -1, k)
  if k > 8:
    lo = _pack(np.ascontiguousarray(ids8[..., :8]).reshape(n, -1), 8)
    return lo ^ _fold(_pack(np.ascontiguousarray(ids8[..., 8:]).reshape(n, -1), k - 8))
  kp = 1 << (k - 1).bit_length()
  if kp != k:
    padded = np.zeros(ids8.shape[:2] + (kp,), np.uint8)
    padded[..., :k] = ids8
    ids8 = padded
  return ids8.view(_KEY_TYPES[kp])[..., 0].astype(np.uint64)


def _to_flat(keys: np.ndarray, mult: np.ndarray, buckets: int) -> np.ndarray:
  """[n, rb] keys -> int64 ids of row-local flat cells (r - r0) * buckets + bucket.
  Bucket = top 32 bits of key * odd multiplier (multiply-shift), scaled to [0, buckets)."""
  keys *= mult
  keys >>= np.uint64(32)
  keys *= np.uint64(buckets)
  keys >>= np.uint64(32)
  keys += np.arange(keys.shape[1], dtype=np.uint64) * np.uint64(buckets)
  return keys.view(np.int64)


def _row_blocks(x: np.ndarray, params: SketchParams,
                hashes: Hashes) -> Iterator[Tuple[int, int, np.ndarray]]:
  """Yields (r0, r1, flat) for one chunk x: flat [n, r1-r0] row-local cell ids.
  Rows go in blocks so that the temporaries of a block stay in cache."""
  w, b = hashes
  n, k, rows, width = x.shape[0], params.hashes_per_row, params.rows, params.bucket_width
  mult = _multipliers(params)
  x = _quantize(x, w)
  if not params.groups:
    rb = max(1, min(rows, _PROJ_BLOCK // max(1, n * k)))
    for r0 in range(0, rows, rb):
      r1 = min(rows, r0 + rb)
      keys = _pack(_ids8(x, w[:, r0 * k:r1 * k], b[r0 * k:r1 * k], width), k)
      yield r0, r1, _to_flat(keys, mult[r0:r1], params.buckets)
    return
  g, kl = params.groups, (k + 1) // 2
  kr = k - kl
  left, right = np.empty((n, g), np.uint64), np.empty((n, g), np.uint64)
  gb = max(1, _PROJ_BLOCK // max(1, n * k))  # groups per projection block
  for g0 in range(0, g, gb):
    g1 = min(g, g0 + gb)
    cols = np.r_[g0 * kl:g1 * kl, g * kl + g0 * kr:g * kl + g1 * kr]
    ids8 = _ids8(x, w[:, cols], b[cols], width)
    left[:, g0:g1] = _pack(ids8[:, :(g1 - g0) * kl], kl)
    right[:, g0:g1] = _pack(ids8[:, (g1 - g0) * kl:], kr)
  if k <= 8:  # both halves fit one 64-bit key, in disjoint bytes: exact
    right <<= np.uint64(8 * (1 << (kl - 1).bit_length()))
  else:  # 9..16 ids: fold the halves (a collision needs a 64-bit coincidence)
    _fold(right)
  shifts = -(-rows // g)
  sb = max(1, _KEY_BLOCK // max(1, n * g))  # shifts (of g rows each) per block
  for s0 in range(0, shifts, sb):
    s1 = min(shifts, s0 + sb)
    keys = np.empty((n, s1 - s0, g), np.uint64)
    for s in range(s0, s1):  # rows s*g + i: left group i, right group (i + s) % g
      np.bitwise_xor(left[:, :g - s], right[:, s:], out=keys[:, s - s0, :g - s])
      np.bitwise_xor(left[:, g - s:], right[:, :s], out=keys[:, s - s0, g - s:])
    r0, r1 = s0 * g, min(rows, s1 * g)
    yield r0, r1, _to_flat(keys.reshape(n, -1)[:, :r1 - r0], mult[r0:r1], params.buckets)


def _chunk_len(params: SketchParams, chunk_size: int) -> int:
  """Shared groups hold [n, groups] keys per chunk: cap n so they stay ~32 MB."""
  return min(chunk_size, max(1024, _GROUP_KEYS // params.groups)) if params.groups else chunk_size


def _chunks(emb: np.ndarray, chunk_size: int) -> Iterator[Tuple[int, np.ndarray]]:
  for s in range(0, emb.shape[0], chunk_size):
    yield s, emb[s:s + chunk_size]


def bucket_ids(emb: np.ndarray, params: SketchParams, hashes: Optional[Hashes] = None,
               chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
  """[N, dim] embeddings -> [N, rows] int64 bucket ids in [0, buckets).
  Memory beyond the output is one chunk of projections (not N x rows*K)."""
  emb = _check(emb, params)
  hashes = make_hashes(params) if hashes is None else hashes
  out = np.empty((emb.shape[0], params.rows), np.int64)
  for s, x in _chunks(emb, _chunk_len(params, chunk_size)):
    for r0, r1, flat in _row_blocks(x, params, hashes):
      out[s:s + x.shape[0], r0:r1] = flat - np.arange(r1 - r0) * params.buckets
  return out


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
  for _, x in _chunks(emb, _chunk_len(params, chunk_size)):
    for r0, r1, flat in _row_blocks(x, params, hashes):
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
    emb = _check(emb, params)
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
  emb = _check(emb, params)
  hashes = make_hashes(params) if hashes is None else hashes
  out = np.empty(emb.shape[0], np.float64)
  for s, x in _chunks(emb, _chunk_len(params, chunk_size)):
    acc = np.zeros(x.shape[0], np.int64)
    for r0, r1, flat in _row_blocks(x, params, hashes):
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
    emb = _check(emb, self.params)
    acc.pending.append(emb)
    acc.pending_rows += emb.shape[0]
    return self._flush(acc) if acc.pending_rows >= self.chunk_size else acc

  def add_input(self, acc, element):
    return self._add(acc, element)

  def add_inputs(self, acc, elements):
    arrays = [_check(e, self.params) for e in elements]
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


# ---------------------------------------------------------------------------------------
# Artifact


def save_sketch(sketch: Sketch, path: str) -> None:
  """Writes an .npz (counts, n, params as JSON, hash fingerprint) to any Beam filesystem."""
  buf = io.BytesIO()
  np.savez_compressed(buf, counts=sketch.counts, n=np.int64(sketch.n),
                      params=np.array(json.dumps(sketch.params.to_dict())),
                      fingerprint=np.array(fingerprint(make_hashes(sketch.params))))
  with FileSystems.create(path, mime_type="application/octet-stream",
                          compression_type=CompressionTypes.UNCOMPRESSED) as f:
    f.write(buf.getvalue())


def load_sketch(path: str, verify: bool = True) -> Sketch:
  """Reads a saved sketch. verify: rebuild the hashes from the seed and check they are the
  ones the sketch was built with (they would differ if numpy changed its RNG streams)."""
  with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    data = np.load(io.BytesIO(f.read()), allow_pickle=False)
    params = SketchParams.from_dict(json.loads(str(data["params"])))
    sketch = Sketch(params, data["counts"], int(data["n"]))
    if verify and str(data["fingerprint"]) != fingerprint(make_hashes(params)):
      raise ValueError(f"{path}: hashes rebuilt from seed {params.seed} differ from the "
                       "ones the sketch was built with (numpy RNG changed?)")
  return sketch


# ---------------------------------------------------------------------------------------
# Width from the data, and the exact kernel the sketch estimates (for benchmarks).

# Chosen by benchmarks/density_selection.py: near-copy share in a 20% IPS sample is lowest
# at f = 0.1-0.125 for K = 4..16 (K=8: 0.30 / 0.14 / 0.14 / 0.17 at f = 0.05/0.1/0.125/0.15).
AUTO_WIDTH_FACTOR = 0.1


def auto_bucket_width(sample_emb: np.ndarray, hashes_per_row: int,
                      factor: float = AUTO_WIDTH_FACTOR, quantile: float = 0.5,
                      max_docs: int = 500, seed: int = 0) -> float:
  """width = factor * K * d_q, d_q = the `quantile` of pairwise distances of a sample.

  Why K: for c << width, p(c) ~ 1 - sqrt(2/pi) * c / width, so the row kernel
  p(c)^K ~ exp(-0.8 * K * c / width), a Laplace kernel of length width / (0.8 K). Scaling
  width with K keeps that length at (1.25 * factor) * d_q, a fixed fraction of the data's
  own distance scale, while a larger K cuts the far tail harder (p^K).
  """
  x = np.asarray(sample_emb, np.float64)
  if x.shape[0] > max_docs:
    x = x[np.sort(np.random.default_rng(seed).choice(x.shape[0], max_docs, replace=False))]
  if x.shape[0] < 2:
    raise ValueError("need at least 2 sample embeddings")
  sq = (x * x).sum(1)
  d2 = sq[:, None] + sq[None, :] - 2.0 * (x @ x.T)
  d = np.sqrt(np.maximum(d2[np.triu_indices(x.shape[0], 1)], 0.0))
  dq = float(np.quantile(d, quantile))
  if not dq > 0:
    raise ValueError("sample embeddings are all identical: cannot set a width")
  return factor * hashes_per_row * dq


def default_groups(rows: int) -> int:
  """ceil(sqrt(R)): the fewest shared groups whose left x right pairs cover R rows."""
  return math.isqrt(rows - 1) + 1


def recommended_params(sample_emb: np.ndarray, seed: int = 0, rows: int = 1000,
                       buckets: int = 20000, hashes_per_row: int = 8,
                       bucket_width="auto", groups="sqrt") -> SketchParams:
  """The defaults chosen by the benchmarks (see benchmarks/*.py and their reports):
  K=8 and an auto width (0.1 * K * median distance, ~1.1 on MiniLM) cut near-duplicates in
  a 20% IPS sample from 0.43 (random) to 0.14; groups="sqrt" (ceil(sqrt(R)) shared groups)
  selects as well as independent rows there at ~10x the speed. groups=0 gives independent
  rows (better density ranks: Spearman 0.77 vs 0.42 against the exact kernel).
  Score with density(..., debias=True) when n/buckets is not small (see density())."""
  sample_emb = np.asarray(sample_emb, np.float32)
  if bucket_width == "auto":
    bucket_width = auto_bucket_width(sample_emb, hashes_per_row)
  if groups == "sqrt":
    groups = default_groups(rows)
  return SketchParams(sample_emb.shape[1], rows, buckets, hashes_per_row, float(bucket_width),
                      seed, int(groups))


def collision_probability(c: np.ndarray, width: float) -> np.ndarray:
  """P[floor((x.w+b)/width) == floor((y.w+b)/width)] at distance c (Datar et al. 2004)."""
  from scipy.special import ndtr  # scipy: benchmark/test dependency only
  c = np.asarray(c, np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    r = width / c
    p = 1 - 2 * ndtr(-r) - 2 / (np.sqrt(2 * np.pi) * r) * (1 - np.exp(-r * r / 2))
  return np.where(c > 0, p, 1.0)


def exact_kernel_density(emb: np.ndarray, params: SketchParams,
                         chunk_size: int = 1024) -> np.ndarray:
  """density(x) = sum over y of p(||x-y||)^K, brute force (O(N^2)), for benchmarks.
  Distances in float64: near-duplicates sit at ~1e-2, where float32 cancellation hurts."""
  x = np.asarray(emb, np.float64)
  sq = (x * x).sum(1)
  out = np.empty(x.shape[0])
  for s in range(0, x.shape[0], chunk_size):
    d2 = sq[s:s + chunk_size, None] + sq[None, :] - 2.0 * (x[s:s + chunk_size] @ x.T)
    p = collision_probability(np.sqrt(np.maximum(d2, 0.0)), params.bucket_width)
    out[s:s + chunk_size] = (p ** params.hashes_per_row).sum(1)
  return out
