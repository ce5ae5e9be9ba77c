"""The topic head: a multinomial logistic head on the document embeddings that predicts
WebOrganizer's topic (Wettig et al. 2025, 24 topics) of a document, with the softmax
probability of that topic as its confidence.

Embeddings in, (topic id, confidence) out; numpy only. The bundled head
(models/data/topic_head.npz) was fitted on the bundled all-MiniLM-L6-v2 embeddings by
scripts/fit_topic_head.py, which records its provenance in the file's metadata.
"""
from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from typing import Any, Dict, Optional, Tuple

import numpy as np

from models.npz_io import npz_bytes

# WebOrganizer's topic taxonomy, by the id its TopicClassifier predicts.
TOPIC_NAMES = (
    "Adult", "Art & Design", "Software Development", "Crime & Law", "Education & Jobs",
    "Hardware", "Entertainment", "Social Life", "Fashion & Beauty", "Finance & Business",
    "Food & Dining", "Games", "Health", "History", "Home & Hobbies", "Industrial",
    "Literature", "Politics", "Religion", "Science & Tech.", "Software",
    "Sports & Fitness", "Transportation", "Travel")

BUNDLED = "bundled"
BUNDLED_FILE = os.path.join("data", "topic_head.npz")


def bundled_path() -> str:
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), BUNDLED_FILE)


def topic_name(topic: Optional[int]) -> Optional[str]:
  if topic is None or not 0 <= int(topic) < len(TOPIC_NAMES):
    return None
  return TOPIC_NAMES[int(topic)]


@dataclasses.dataclass(frozen=True)
class TopicHead:
  """p(topic | x) = softmax(x W + b) over `classes` (the topic ids it was fitted on)."""
  weights: np.ndarray   # [d, C] float64
  bias: np.ndarray      # [C] float64
  classes: np.ndarray   # [C] int64 topic ids
  embedding_model: str = ""
  embedding_max_tokens: Optional[int] = None
  l2: float = 0.0
  provenance: Optional[Dict[str, Any]] = None

  @property
  def dim(self) -> int:
    return int(self.weights.shape[0])

  def probabilities(self, x: np.ndarray) -> np.ndarray:
    """[n, C] softmax probabilities of embeddings x [n, d] (or one [d])."""
    x = np.asarray(x, np.float64)
    if x.ndim == 1:
      x = x[None, :]
    if x.shape[1] != self.dim:
      raise ValueError(f"the topic head reads {self.dim}-dimensional embeddings "
                       f"({self.embedding_model}), not {x.shape[1]}-dimensional ones")
    z = x @ self.weights + self.bias
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)

  def predict(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(topic ids [n] int64, confidences [n] float64: the softmax probability of it)."""
    p = self.probabilities(x)
    best = p.argmax(axis=1)
    return self.classes[best], p[np.arange(len(p)), best]


def head_bytes(head: TopicHead) -> bytes:
  meta = {"embedding_model": head.embedding_model, "l2": head.l2,
          "topic_names": list(TOPIC_NAMES)}
  if head.embedding_max_tokens is not None:
    meta["embedding_max_tokens"] = head.embedding_max_tokens
  if head.provenance is not None:
    meta["provenance"] = head.provenance
  return npz_bytes({"weights": np.asarray(head.weights, np.float64),
                     "bias": np.asarray(head.bias, np.float64),
                     "classes": np.asarray(head.classes, np.int64),
                     "meta": np.array(json.dumps(meta, sort_keys=True, indent=1))})


def head_from_bytes(data: bytes, path: str) -> TopicHead:
  """A saved head; one-line ValueError when the bytes are not one."""
  what = f"{path} is not a topic head"
  if not data.startswith(b"PK"):
    raise ValueError(f"{what}: not an .npz file")
  try:
    npz = np.load(io.BytesIO(data), allow_pickle=False)
    meta = json.loads(str(npz["meta"]))
    head = TopicHead(weights=np.asarray(npz["weights"], np.float64),
                     bias=np.asarray(npz["bias"], np.float64),
                     classes=np.asarray(npz["classes"], np.int64),
                     embedding_model=str(meta.get("embedding_model", "")),
                     embedding_max_tokens=meta.get("embedding_max_tokens"),
                     l2=float(meta.get("l2", 0.0)), provenance=meta.get("provenance"))
  except (KeyError, ValueError, OSError, zipfile.BadZipFile) as e:
    raise ValueError(f"{what}: {e}") from e
  w, b, c = head.weights, head.bias, head.classes
  if w.ndim != 2 or b.shape != (w.shape[1],) or c.shape != (w.shape[1],) or not (
      np.all(np.isfinite(w)) and np.all(np.isfinite(b))):
    raise ValueError(f"{what}: weights {list(w.shape)}, bias {list(b.shape)} and classes "
                     f"{list(c.shape)} do not fit together or are not finite")
  return head


def load_topic_head(spec: str = BUNDLED) -> TopicHead:
  """`bundled` (the package's head) or a path (local or any scheme models/storage
  reads)."""
  path = bundled_path() if spec == BUNDLED else spec
  if spec == BUNDLED or "://" not in path:
    with open(path, "rb") as f:
      return head_from_bytes(f.read(), path)
  from models import storage
  with storage.open_file(path) as f:
    return head_from_bytes(f.read(), path)
