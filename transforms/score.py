"""Scoring transforms: Ask-LLM through RunInference, in length-sorted token-budget batches."""
from __future__ import annotations

from typing import Optional

import apache_beam as beam
from apache_beam.ml.inference.base import RunInference

from models.ask_llm import AskLLMConfig, AskLLMModelHandler
from transforms.metrics import LogProgress, stage_clock
from transforms.records import Document

# Rough tokens per byte of text, for batching before the tokenizer is at hand; the
# scorer truncates exactly. Only the batch sizes depend on it, never a score.
_BYTES_PER_TOKEN = 4
_PROMPT_TOKENS_ESTIMATE = 100


def estimated_tokens(doc: Document, max_tokens: int) -> int:
  return min(max_tokens, _PROMPT_TOKENS_ESTIMATE + len(doc.text) // _BYTES_PER_TOKEN)


def _clock_in(doc):
  stage_clock("scored")
  return doc


class ScoreAskLLM(beam.PTransform):
  """Attaches `ask_llm_score`, `p_yes` and `p_no` to every Document.

  Args:
    config: the scorer (model, prompt, truncation, yes/no tokens, device).
    batch_tokens: token budget of one batch (padding included, estimated).
    max_batch_size: at most this many documents per batch.
    large_model: load one model per worker VM, shared by its SDK processes (GPU workers).
    model_copies: load exactly this many copies per VM (implies sharing).
    total: optional side input (number of documents) for progress estimates.
  """

  def __init__(self, config: AskLLMConfig, batch_tokens: int = 8192,
               max_batch_size: int = 64, large_model: bool = False,
               model_copies: Optional[int] = None, total=None):
    super().__init__()
    self._config = config
    self._batch_tokens = batch_tokens
    self._max_batch_size = max_batch_size
    self._handler = AskLLMModelHandler(config, large_model=large_model,
                                       model_copies=model_copies)
    self._total = total

  def expand(self, docs):
    max_tokens = self._config.max_tokens
    batches = docs | "ClockIn" >> beam.Map(_clock_in) | "SortAndBatchByTokens" >> beam.SortAndBatchElements(
        min_batch_size=1, max_batch_size=self._max_batch_size,
        max_batch_weight=max(self._batch_tokens, max_tokens),
        element_size_fn=lambda d: estimated_tokens(d, max_tokens))
    scored = batches | "RunInference" >> RunInference(self._handler.with_no_batching())
    extra = [self._total] if self._total is not None else []
    return scored | "LogProgress" >> beam.ParDo(LogProgress("scored"), *extra)
