"""A quality head: ridge regression from document embeddings to a teacher score.

Ask-LLM with a large scorer is the best quality signal but costs a big forward pass per
document. The head learns it (or any teacher score, e.g. labels) from a small teacher set
and costs one dot product per document on top of the embeddings the Density sampler
computes anyway.

The fit needs only sums: X^T X, X^T y, sum y, sum y^2 and n, so it is a CombineFn like
the sketch, merged in any order, solved once, and applied through a side input.

The fit, the prediction and the fit report are in transforms/algorithms/quality_head.py,
without Beam; this module is the CombineFn and the saved head (quality_head.npz).
"""
from __future__ import annotations

import json
import math
from typing import Optional

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from models import loading
from transforms.algorithms.quality_head import (  # noqa: F401  (re-exported)
    MIN_HELD_BACK, QualityHead, RidgeStats, auc, auc_interval, fit_report, solve)
from transforms.npz_files import load_npz, npz_bytes


class RidgeStatsCombineFn(beam.CombineFn):
  """(embeddings [b, d], teacher scores [b]) batches -> RidgeStats. A sum: any order."""

  def create_accumulator(self):
    return RidgeStats()

  def add_input(self, acc, batch):
    x, y = batch
    return acc.add(x, y)

  def merge_accumulators(self, accumulators):
    it = iter(accumulators)
    first = next(it)
    for other in it:
      first.merge(other)
    return first

  def extract_output(self, acc):
    return acc


def head_bytes(head: QualityHead) -> bytes:
  """The head as .npz bytes, the same bytes for the same head."""
  meta = {"bias": head.bias, "l2": head.l2, "n_train": head.n_train,
          "embedding_model": head.embedding_model, "teacher": head.teacher}
  if head.embedding_max_tokens is not None:
    meta["embedding_max_tokens"] = head.embedding_max_tokens
  if head.provenance is not None:
    meta["provenance"] = head.provenance
  return npz_bytes({"weights": np.asarray(head.weights, np.float64),
                    "meta": np.array(json.dumps(meta, sort_keys=True, indent=1))})


def save_head(head: QualityHead, path: str) -> None:
  with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    f.write(head_bytes(head))


def head_path(spec: str) -> str:
  """--quality_head's file: `bundled` is the head in this installed package (resolved
  where it is loaded, so a Dataflow worker reads its own copy)."""
  return loading.bundled_quality_head_path() if spec == loading.BUNDLED_HEAD else spec


def weights_problem(head: QualityHead) -> Optional[str]:
  """What is wrong with a head's numbers (one finite weight per embedding dimension and a
  finite bias), or None."""
  w = head.weights
  if w.ndim != 1 or w.size == 0 or not np.issubdtype(w.dtype, np.floating):
    return f"its weights are {w.dtype} {list(w.shape)}, not a vector of floats"
  if not (np.all(np.isfinite(w)) and math.isfinite(head.bias)):
    return "its weights or bias are not finite"
  return None


def load_head(path: str, embedding_model: Optional[str] = None) -> QualityHead:
  """Reads a saved head (or `bundled`); refuses one fitted on another embedding model."""
  path = head_path(path)
  with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    data = load_npz(f.read(), path, "quality_head.npz", ("weights", "meta"))
    meta = json.loads(str(data["meta"]))
    tokens = meta.get("embedding_max_tokens")
    head = QualityHead(weights=data["weights"], bias=float(meta["bias"]), l2=float(meta["l2"]),
                       n_train=int(meta["n_train"]), embedding_model=meta["embedding_model"],
                       teacher=meta["teacher"],
                       embedding_max_tokens=None if tokens is None else int(tokens),
                       provenance=meta.get("provenance"))
  problem = weights_problem(head)
  if problem:
    raise ValueError(f"{path} is not a valid quality_head.npz: {problem}")
  if embedding_model is not None and head.embedding_model != embedding_model:
    raise ValueError(
        f"{path} was fitted on embeddings of {head.embedding_model!r}, but this run embeds "
        f"with {embedding_model!r}: a head only works on the embeddings it was fitted on. "
        "Pass the same --embedding_model, or fit a new head.")
  return head
