"""Sentence embeddings for Density sampling: mean pooling over the attention mask,
L2-normalised. Texts in, vectors out; transforms/inference.py attaches them to Documents."""
from __future__ import annotations

import dataclasses
from typing import Dict, Sequence

import numpy as np

from models import fingerprint, loading, precision as precision_lib
from models.loading import MAX_CHARS_PER_TOKEN, load_pretrained, resolve_device


# Bump when a code change changes this model's outputs: the score cache then misses.
SCORING_VERSION = 1


@dataclasses.dataclass(frozen=True)
class EmbeddingConfig:
  model: str = loading.DEFAULT
  max_tokens: int = 128
  device: str = "auto"
  allow_pickle_weights: bool = False
  trust_remote_code: bool = False
  precision: str = "fp32"               # fp32 | bf16 | auto (the job resolves auto)

  def resolved_precision(self) -> str:
    return precision_lib.resolve(self.precision, "embedding", self.device)

  def cache_settings(self) -> dict:
    """Everything an embedding depends on, for the score cache's fingerprint."""
    return {"model": fingerprint.model_identity(self.model, "embedding"),
            "max_tokens": self.max_tokens, "scoring_version": SCORING_VERSION,
            "precision": self.resolved_precision()}


class Embedder:
  """A loaded encoder + tokenizer: texts -> unit vectors. A class (weak-referenceable,
  with methods) for RunInference, also across processes."""

  def __init__(self, model, tokenizer, config: EmbeddingConfig, device: str, name: str,
               precision: str = "fp32"):
    self.precision = precision
    self.model = model
    self.tokenizer = tokenizer
    self.config = config
    self.device = device
    self.name = name
    self.dim = int(model.config.hidden_size)

  def embed(self, texts: Sequence[str]) -> np.ndarray:
    import torch
    if not texts:
      return np.zeros((0, self.dim), np.float32)
    limit = self.config.max_tokens * MAX_CHARS_PER_TOKEN
    enc = self.tokenizer([t[:limit] for t in texts], padding=True, truncation=True,
                         max_length=self.config.max_tokens, return_tensors="pt")
    enc = {k: v.to(self.device) for k, v in enc.items()
           if k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.inference_mode(), precision_lib.autocast(self.precision, self.device):
      hidden = self.model(**enc).last_hidden_state
    with torch.inference_mode():  # pooling and normalisation in fp32 in every precision
      hidden = hidden.float()
      mask = enc["attention_mask"].unsqueeze(-1).float()
      pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
      pooled = torch.nn.functional.normalize(pooled, dim=-1)
    return pooled.cpu().numpy().astype(np.float32)

  def run(self, texts: Sequence[str]) -> np.ndarray:
    """The RunInference handler's interface (transforms/inference.py): [N, dim]."""
    return self.embed(texts)

  def settings(self) -> Dict[str, str]:
    """Settings decided when the model loaded (for metrics.json)."""
    return {"precision": precision_lib.applied(self.precision, self.device)}


def load_embedder(config: EmbeddingConfig) -> Embedder:
  from transformers import AutoModel
  device = resolve_device(config.device)
  precision = config.resolved_precision()
  precision_lib.warn_if_emulated(precision, device)
  model, tokenizer, resolved = load_pretrained(
      config.model, "embedding", device, (AutoModel, AutoModel),
      allow_pickle=config.allow_pickle_weights, trust_remote_code=config.trust_remote_code,
      precision=precision)
  return Embedder(model, tokenizer, config, device, resolved.name, precision)
