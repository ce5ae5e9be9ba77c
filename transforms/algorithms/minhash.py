"""Duplicate detection math, no Beam: text normalisation, the exact-copy key, word
n-gram shingles, MinHash signatures, LSH band keys and the Jaccard estimate.

Signatures follow datasketch 2.0's "affine32" scheme bit for bit (tests compare them):
each 32-bit shingle hash is pre-mixed with the MurmurHash3 finalizer, then permutation k
is h -> a_k * h + b_k mod 2^32 with a_k odd (a bijection, so no collisions are added),
its parameters drawn from numpy's RandomState(seed) as datasketch draws them. A batch of
documents is one matrix product-free numpy pass: every shingle of the batch times every
permutation, then a per-document minimum (np.minimum.reduceat).
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from typing import List, Sequence, Tuple

import numpy as np

_SPACE = re.compile(r"\s+")
# Words for shingles: runs of letters/digits (punctuation and case are not part of a
# near-copy's identity; datatrove and Dolma drop them too).
_WORD = re.compile(r"\w+")
_U32 = np.uint32
_MASK32 = (1 << 32) - 1
_EMPTY = np.uint32(_MASK32)  # the signature value of an empty set (datasketch's too)
# Rows of (shingle x permutation) worked on at once: 64k x 128 uint32 = 32 MiB.
_CHUNK_SHINGLES = 65536


def normalize(text: str) -> str:
  """The text an exact copy is judged on: Unicode NFKC (composed accents, full-width and
  compatibility forms folded), every run of whitespace as one space, no leading or
  trailing space. Case is kept: 'US' and 'us' pages are not copies."""
  return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip()


def exact_key(text: str) -> bytes:
  """16 bytes of blake2b of the normalised text: equal for exact copies."""
  return hashlib.blake2b(normalize(text).encode("utf-8"), digest_size=16).digest()


def order_hash(seed: int, doc_id: str) -> int:
  """The 62-bit hash of (seed, id) that picks the copy kept: the smallest is kept (62
  bits: Beam's integer coder takes signed 64-bit values, with room for a sentinel)."""
  data = b"dedup\x00%d\x00" % int(seed) + doc_id.encode("utf-8", "surrogatepass")
  return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 2


def record_hash(doc_id: str, source: str) -> int:
  """A 62-bit hash of (id, source): with the order hash, a record's name in the shuffles."""
  data = doc_id.encode("utf-8", "surrogatepass") + b"\x00" + source.encode(
      "utf-8", "surrogatepass")
  return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big") >> 2


def words(text: str) -> List[str]:
  """The lower-cased words of the normalised text."""
  return _WORD.findall(normalize(text).lower())


def _fmix32(h: np.ndarray) -> np.ndarray:
  h = h ^ (h >> _U32(16))
  h = h * _U32(0x85EBCA6B)
  h = h ^ (h >> _U32(13))
  h = h * _U32(0xC2B2AE35)
  return h ^ (h >> _U32(16))


def shingle_hashes(text: str, n: int = 5) -> np.ndarray:
  """The distinct 32-bit hashes of the text's word n-grams (uint32); a text of fewer than
  n words is one shingle of all its words; a text with no word has none."""
  ws = words(text)
  if not ws:
    return np.zeros(0, _U32)
  wh = np.fromiter((zlib.crc32(w.encode("utf-8")) for w in ws), np.uint64, len(ws))
  wh = _fmix64(wh + np.uint64(0x9E3779B97F4A7C15))
  m = max(1, len(ws) - n + 1)
  acc = np.zeros(m, np.uint64)
  with np.errstate(over="ignore"):
    for k in range(min(n, len(ws))):  # a polynomial in the word hashes, wrapping mod 2^64
      acc = acc * np.uint64(0x100000001B3) + wh[k:k + m]
    acc = _fmix64(acc)
  return np.unique((acc >> np.uint64(32)).astype(_U32))


def _fmix64(h: np.ndarray) -> np.ndarray:
  with np.errstate(over="ignore"):
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def permutations(num_perm: int, seed: int = 1) -> Tuple[np.ndarray, np.ndarray]:
  """(a, b), uint32 of length num_perm, drawn as datasketch's affine32 scheme draws them."""
  gen = np.random.RandomState(seed)
  a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * _U32(2) + _U32(1)
  b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
  return a, b


def signatures(shingle_sets: Sequence[np.ndarray], perms: Tuple[np.ndarray, np.ndarray]
               ) -> np.ndarray:
  """MinHash signatures, (documents x permutations) uint32, of sets of 32-bit hashes. An
  empty set's signature is all 0xFFFFFFFF."""
  a, b = perms
  out = np.full((len(shingle_sets), len(a)), _EMPTY, _U32)
  start = 0
  while start < len(shingle_sets):  # documents in chunks of about _CHUNK_SHINGLES shingles
    stop, size = start, 0
    while stop < len(shingle_sets) and (size == 0 or size + len(shingle_sets[stop]) <=
                                        _CHUNK_SHINGLES):
      size += len(shingle_sets[stop])
      stop += 1
    sets = shingle_sets[start:stop]
    lengths = np.fromiter((len(s) for s in sets), np.int64, len(sets))
    nonempty = np.flatnonzero(lengths)
    if len(nonempty):
      hv = _fmix32(np.concatenate([sets[i] for i in nonempty]).astype(_U32))
      with np.errstate(over="ignore"):
        phv = hv[:, None] * a[None, :] + b[None, :]
      offsets = np.concatenate([[0], np.cumsum(lengths[nonempty])[:-1]])
      out[start + nonempty] = np.minimum.reduceat(phv, offsets, axis=0)
    start = stop
  return out


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
  """(documents x bands) int64: a 64-bit hash of each band's `rows` signature values (band
  i is columns i*rows .. i*rows+rows-1). Two documents share a band key when the band's
  values agree (up to 2^-64 collisions)."""
  if bands * rows > sigs.shape[1]:
    raise ValueError(f"bands x rows = {bands * rows} is more than the {sigs.shape[1]} "
                     "permutations")
  s = sigs[:, :bands * rows].astype(np.uint64).reshape(len(sigs), bands, rows)
  acc = np.full((len(sigs), bands), np.uint64(0xCBF29CE484222325))
  with np.errstate(over="ignore"):
    for r in range(rows):
      acc = _fmix64(acc * np.uint64(0x100000001B3) + s[:, :, r] + np.uint64(1))
    acc = _fmix64(acc + np.arange(bands, dtype=np.uint64))  # band i's keys differ from j's
  return acc.view(np.int64)


def jaccard_estimate(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
  """The fraction of permutations whose minimum agrees: an unbiased Jaccard estimate."""
  return float(np.mean(sig_a == sig_b))


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
  """The exact Jaccard similarity of two sets of shingle hashes (1.0 for two empty)."""
  union = len(np.union1d(a, b))
  return len(np.intersect1d(a, b)) / union if union else 1.0


def lsh_probability(j: float, bands: int, rows: int) -> float:
  """The chance two documents at Jaccard j share at least one band: 1 - (1 - j^r)^b."""
  return 1.0 - (1.0 - j ** rows) ** bands


def to_bytes(sig: np.ndarray) -> bytes:
  return np.ascontiguousarray(sig, dtype="<u4").tobytes()


def from_bytes(data: bytes) -> np.ndarray:
  return np.frombuffer(data, dtype="<u4")
