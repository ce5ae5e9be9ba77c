"""Perplexity filtering: the perplexity of a document under a causal language model.
Texts in, numbers out; transforms/inference.py attaches them to Documents.

The score is exp(mean negative log-likelihood) over the document's predicted tokens (one
forward pass, teacher forcing, no prompt). Low perplexity = text the model finds typical.
Only causal (decoder-only) models: an encoder-decoder model has no likelihood of the text
itself without choosing an input for it, so it is refused.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Sequence

import numpy as np

from models import fingerprint, loading, precision as precision_lib
from models.ask_llm import special_affixes
from models.loading import MAX_CHARS_PER_TOKEN, load_pretrained, resolve_device


# Full logits are needed at every position ([rows, width, vocab] floats, 49152 wide for
# SmolLM2), so a batch is run in chunks of rows holding at most this many logits
# (2**27 float32 = 512 MB, plus as much for the log-softmax). Scores do not depend on it.
_MAX_LOGITS_PER_CHUNK = 1 << 27


# Bump when a code change changes this model's outputs: the score cache then misses.
SCORING_VERSION = 1


@dataclasses.dataclass(frozen=True)
class PerplexityConfig:
  """Everything needed to build the perplexity scorer on a worker (small, picklable)."""
  model: str = loading.DEFAULT
  max_tokens: int = 512                 # tokens per document (context token included)
  device: str = "auto"                  # auto | cpu | cuda
  allow_pickle_weights: bool = False
  trust_remote_code: bool = False
  precision: str = "fp32"               # fp32 | bf16 | auto (the job resolves auto)

  def resolved_precision(self) -> str:
    return precision_lib.resolve(self.precision, "perplexity", self.device)

  def cache_settings(self) -> dict:
    """Everything the mean NLL depends on, for the score cache's fingerprint."""
    return {"model": fingerprint.model_identity(self.model, "scorer"),
            "max_tokens": self.max_tokens, "scoring_version": SCORING_VERSION,
            "precision": self.resolved_precision()}


def _not_causal_error(name: str, model_type: str) -> ValueError:
  return ValueError(
      f"perplexity needs a causal (decoder-only) language model, but {name} is an "
      f"encoder-decoder model ({model_type}): it has no likelihood of a text by itself. "
      "Use a decoder-only model (e.g. the default SmolLM2) for perplexity.")


def context_ids(tokenizer) -> List[int]:
  """The token(s) every document is scored after, so that its first token is predicted too.

  The special tokens the tokenizer puts before any text (BOS for Llama-style tokenizers);
  if it adds none, its BOS token, else its EOS token (the document separator of GPT-2-style
  models), as lm-evaluation-harness does. Empty only when the tokenizer has neither.
  """
  prefix, _ = special_affixes(tokenizer)
  if prefix:
    return list(prefix)
  for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
    if token_id is not None:
      return [int(token_id)]
  return []


class PerplexityScorer:
  """A loaded causal LM + tokenizer: document texts -> mean NLL per token and perplexity.

  A plain class (not a tuple) so that RunInference can hold a weak reference to it, with
  methods so it also works when the model lives in another process (large_model /
  model_copies).
  """

  def __init__(self, model, tokenizer, config: PerplexityConfig, device: str,
               name: str = "", precision: str = "fp32"):
    if getattr(model.config, "is_encoder_decoder", False):
      raise _not_causal_error(name or type(model).__name__, model.config.model_type)
    self.model = model
    self.tokenizer = tokenizer
    self.config = config
    self.device = device
    self.model_name = name
    self.precision = precision
    self.context_ids = context_ids(tokenizer)
    if config.max_tokens < len(self.context_ids) + 1:
      raise ValueError(f"--max_tokens={config.max_tokens} leaves no room for the document")
    pad = tokenizer.pad_token_id
    if pad is None:
      pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    self.pad_id = int(pad)  # Never attended to nor scored: any id works.
    self.vocab_size = int(getattr(model.config, "vocab_size", 0) or len(tokenizer))

  def encode(self, text: str) -> List[int]:
    """The context token(s) and the document's own tokens, at most max_tokens in all."""
    budget = self.config.max_tokens - len(self.context_ids)
    # Cut the text before tokenising so a 10 MB document is not tokenised whole; a token
    # is rarely longer than MAX_CHARS_PER_TOKEN characters, so the first `budget` tokens
    # are unchanged. split_special_tokens: "<|im_end|>" in a document is text.
    doc_ids = self.tokenizer(text[: budget * MAX_CHARS_PER_TOKEN], add_special_tokens=False,
                             split_special_tokens=True,
                             return_attention_mask=False)["input_ids"][:budget]
    return self.context_ids + doc_ids

  def score_ids(self, batch: Sequence[List[int]]) -> np.ndarray:
    """Mean negative log-likelihood (nats per predicted token) of each encoded document.

    Tokens 1..n-1 are predicted from the ones before them. Right padding with an attention
    mask: a causal model's real tokens never see the padding after them, and their
    positions are 0..n-1 as when scored alone. A row with fewer than 2 tokens has nothing
    to predict (only possible when the tokenizer has no BOS/EOS to use as context and the
    text is a single token): its NLL, and so its perplexity, is +inf, so it sorts as the
    least typical document instead of poisoning means with NaN.
    """
    out = np.full(len(batch), np.inf, dtype=np.float64)
    rows = [i for i, ids in enumerate(batch) if len(ids) >= 2]
    # Longest first, so each chunk's width is set by its first row.
    rows.sort(key=lambda i: -len(batch[i]))
    start = 0
    while start < len(rows):
      width = len(batch[rows[start]])
      n = max(1, _MAX_LOGITS_PER_CHUNK // (width * self.vocab_size))
      chunk = rows[start:start + n]
      out[chunk] = self._mean_nll([batch[i] for i in chunk])
      start += n
    return out

  def _mean_nll(self, batch: Sequence[List[int]]) -> np.ndarray:
    import torch
    import torch.nn.functional as F
    n, width = len(batch), max(len(ids) for ids in batch)
    input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, ids in enumerate(batch):
      input_ids[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
      mask[i, : len(ids)] = 1
    input_ids, mask = input_ids.to(self.device), mask.to(self.device)
    with torch.inference_mode(), precision_lib.autocast(self.precision, self.device):
      logits = self.model(input_ids=input_ids, attention_mask=mask).logits
    with torch.inference_mode():
      # Position t predicts token t+1; float32 whatever the model's dtype.
      nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), input_ids[:, 1:],
                            reduction="none")
      predicted = mask[:, 1:].float()
      mean = (nll * predicted).sum(-1) / predicted.sum(-1)
    return mean.double().cpu().numpy()

  def score(self, texts: Sequence[str]) -> np.ndarray:
    """Mean NLL per token of each text."""
    return self.score_ids([self.encode(t) for t in texts])

  def run(self, texts: Sequence[str]) -> np.ndarray:
    """The RunInference handler's interface (transforms/inference.py): [N] mean NLL."""
    return self.score(texts)

  def settings(self) -> Dict[str, str]:
    """Settings decided when the model loaded (for metrics.json)."""
    return {"precision": precision_lib.applied(self.precision, self.device)}


def perplexity_scores(mean_nll: float) -> Dict[str, float]:
  """A document's perplexity scores from its mean NLL per token."""
  mean_nll = float(mean_nll)
  # exp overflows to +inf only for absurd NLLs (> 709 nats); math.exp would raise.
  ppl = math.inf if mean_nll > 709 else math.exp(mean_nll)
  return {"perplexity": ppl, "mean_nll": mean_nll}


def load_perplexity_scorer(config: PerplexityConfig) -> PerplexityScorer:
  """Loads the causal LM once (called by the ModelHandler on each worker process), with
  the same sources and safety rules as the Ask-LLM scorer."""
  from transformers import AutoModelForCausalLM

  def refuse_encoder_decoder(model_config, resolved):
    if getattr(model_config, "is_encoder_decoder", False):  # before any weights load
      raise _not_causal_error(resolved.name, model_config.model_type)

  device = resolve_device(config.device)
  precision = config.resolved_precision()
  precision_lib.warn_if_emulated(precision, device)
  model, tokenizer, resolved = load_pretrained(
      config.model, "scorer", device, (AutoModelForCausalLM, AutoModelForCausalLM),
      allow_pickle=config.allow_pickle_weights, trust_remote_code=config.trust_remote_code,
      check_config=refuse_encoder_decoder, precision=precision)
  return PerplexityScorer(model, tokenizer, config, device, resolved.name, precision)
