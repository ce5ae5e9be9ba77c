"""The saved density sketch (sketch.npz): counts, n, params and a fingerprint of the
hashes, on any Beam filesystem.

The hashes are rebuilt from the seed wherever the sketch is used; the fingerprint makes
scoring with a different numpy RNG stream fail loudly instead of silently scoring garbage.
"""
from __future__ import annotations

import hashlib
import io
import json
from typing import Optional

import numpy as np

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.algorithms.sketch_counts import Sketch
from transforms.algorithms.sketch_hashing import Hashes, SketchParams, make_hashes
from transforms.npz_files import load_npz


ARRAYS = ("counts", "n", "params", "fingerprint")  # what save_sketch writes


def counts_problem(sketch: Sketch) -> Optional[str]:
  """What is wrong with a sketch's counts (the [rows, buckets] non-negative integers its
  params describe), or None."""
  p, counts = sketch.params, sketch.counts
  if counts.shape != (p.rows, p.buckets) or not np.issubdtype(counts.dtype, np.integer):
    return (f"its counts are {counts.dtype} {list(counts.shape)}, its params say integers "
            f"[{p.rows}, {p.buckets}]")
  if sketch.n < 0 or (counts.size and counts.min() < 0):
    return "its counts are negative"
  return None


def fingerprint(hashes: Hashes) -> str:
  w, b = hashes
  return hashlib.blake2b(w.tobytes() + b.tobytes(), digest_size=16).hexdigest()


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
    data = load_npz(f.read(), path, "sketch.npz", ARRAYS)
    params = SketchParams.from_dict(json.loads(str(data["params"])))
    sketch = Sketch(params, data["counts"], int(data["n"]))
    problem = counts_problem(sketch)
    if problem:
      raise ValueError(f"{path} is not a valid sketch.npz: {problem}")
    if verify and str(data["fingerprint"]) != fingerprint(make_hashes(params)):
      raise ValueError(f"{path}: hashes rebuilt from seed {params.seed} differ from the "
                       "ones the sketch was built with (numpy RNG changed?)")
  return sketch
