"""LSH hashing for the density sketch (the RACE idea: an LSH kernel density sketch): the hash
family, its parameters, and the bucket of every row for a batch of embeddings.

Hash family: p-stable (Gaussian) projections h(x) = floor((x.w + b) / width). A row's
bucket combines K = hashes_per_row such ids, so two documents share it with probability
p(c)^K (c = their distance), which sharpens the kernel: with K = 1 it is so wide on unit
vectors that density barely varies (measured in benchmarks/density_selection.py).

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
  kernel 0.138), at ~7x the speed. See recommended_params() in
  benchmarks/sketch_reference.py.

Everything derives from `SketchParams.seed` through np.random.default_rng, so every worker
builds identical hashes (sketch_io checks this with a fingerprint when it loads a sketch).
Counting lives in sketch_counts.py, the saved artifact in transforms/sketch_io.py.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Iterator, Optional, Tuple

import numpy as np

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


def check_embeddings(emb: np.ndarray, params: SketchParams) -> np.ndarray:
  """[N, dim] float32 (a single [dim] vector becomes [1, dim]); a wrong shape raises."""
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


def row_blocks(x: np.ndarray, params: SketchParams,
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


def embedding_chunks(emb: np.ndarray, params: SketchParams,
                     chunk_size: int) -> Iterator[Tuple[int, np.ndarray]]:
  """Yields (start, emb[start:start + n]): n = chunk_size, capped for shared groups,
  which hold [n, groups] keys per chunk, so that those stay ~32 MB."""
  if params.groups:
    chunk_size = min(chunk_size, max(1024, _GROUP_KEYS // params.groups))
  for s in range(0, emb.shape[0], chunk_size):
    yield s, emb[s:s + chunk_size]


def bucket_ids(emb: np.ndarray, params: SketchParams, hashes: Optional[Hashes] = None,
               chunk_size: int = DEFAULT_CHUNK) -> np.ndarray:
  """[N, dim] embeddings -> [N, rows] int64 bucket ids in [0, buckets).
  Memory beyond the output is one chunk of projections (not N x rows*K)."""
  emb = check_embeddings(emb, params)
  hashes = make_hashes(params) if hashes is None else hashes
  out = np.empty((emb.shape[0], params.rows), np.int64)
  for s, x in embedding_chunks(emb, params, chunk_size):
    for r0, r1, flat in row_blocks(x, params, hashes):
      out[s:s + x.shape[0], r0:r1] = flat - np.arange(r1 - r0) * params.buckets
  return out


# ---------------------------------------------------------------------------------------
# Parameters from the data.

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


@dataclasses.dataclass(frozen=True)
class SketchOptions:
  """The sketch's shape; bucket_width None means `auto` (from a sample of the data);
  groups None means `auto`: ceil(sqrt(rows)) shared projection groups (see
  above), 5-8x faster than independent rows with the same selection quality
  in benchmarks/density_selection.py; 0 means independent rows (sharper density ranks)."""
  rows: int = 1000
  buckets: int = 20000
  hashes_per_row: int = 8
  bucket_width: Optional[float] = None
  seed: int = 0
  auto_sample: int = 500
  groups: Optional[int] = None

  def resolved_groups(self) -> int:
    if self.groups is not None:
      return self.groups
    # Shared groups need K >= 2 (a left and a right half per row).
    return default_groups(self.rows) if self.hashes_per_row >= 2 else 0
