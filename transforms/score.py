"""Scoring transforms: a model applied through RunInference in length-sorted batches with
a token budget. Ask-LLM, perplexity and embeddings all use the same shape."""
from __future__ import annotations

from typing import Optional

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, RunInference

from models.ask_llm import AskLLMConfig
from transforms.inference import AskLLMModelHandler, PerplexityModelHandler
from transforms.metrics import QUEUED_PREFIX, LogProgress, ModelProgress, counter, stage_clock
from transforms.records import Document
from transforms.score_cache import CacheSpec, LookUpCache, WriteToCache

# Rough tokens per byte of text, for batching before the tokenizer is at hand; the
# models truncate exactly. Only the batch sizes depend on it, never a score.
_BYTES_PER_TOKEN = 4


def estimated_tokens(doc: Document, max_tokens: int, frame_tokens: int = 100) -> int:
  return min(max_tokens, frame_tokens + len(doc.text) // _BYTES_PER_TOKEN)


class _QueueForModel(beam.DoFn):
  """Counts the documents queued for a model in this process, for its progress lines."""

  def __init__(self, stage: str, interval_s: float):
    self._stage = stage
    self._interval = interval_s

  def setup(self):
    self._progress = ModelProgress.for_stage(self._stage, self._interval)
    self._counter = counter(QUEUED_PREFIX + self._stage)

  def process(self, doc):
    self._progress.queued()
    self._counter.inc()
    yield doc


class _ClockIn(beam.DoFn):
  def __init__(self, stage):
    self._stage = stage

  def process(self, doc):
    stage_clock(self._stage)
    yield doc


class ScoreDocuments(beam.PTransform):
  """Runs a Document -> Document ModelHandler over length-sorted, token-budget batches.

  Args:
    handler: a ModelHandler whose run_inference returns the documents with scores.
    stage: name of the stage, its counter (documents done) and its clock.
    max_tokens: a document's token budget (caps its batching weight).
    frame_tokens: tokens the model adds around a document (the prompt), estimated.
    batch_tokens: token budget of one batch (padding included, estimated).
    max_batch_size: at most this many documents per batch.
    total: optional side input (number of documents) for progress estimates.
    progress_interval_s: seconds between progress lines while the model runs.
    cache: where this model's outputs are cached (score_cache.CacheSpec); None: no cache.
      Documents found there skip the model; the others are scored and added to it.
  """

  def __init__(self, handler: ModelHandler, stage: str, max_tokens: int,
               frame_tokens: int = 0, batch_tokens: int = 8192, max_batch_size: int = 64,
               total=None, cache: Optional[CacheSpec] = None,
               progress_interval_s: float = 30.0):
    super().__init__()
    self._handler = handler
    handler.progress_interval_s = progress_interval_s
    self._interval = progress_interval_s
    self._cache = cache
    self._stage = stage
    self._max_tokens = max_tokens
    self._frame = frame_tokens
    self._batch_tokens = batch_tokens
    self._max_batch_size = max_batch_size
    self._total = total

  def expand(self, docs):
    max_tokens, frame = self._max_tokens, self._frame
    docs = docs | "ClockIn" >> beam.ParDo(_ClockIn(self._stage))
    if self._cache is not None:
      looked_up = docs | "LookUpCache" >> LookUpCache(self._cache, self._handler.attach)
      docs = looked_up["misses"]
    docs = docs | "QueueForModel" >> beam.ParDo(
        _QueueForModel(self._handler.namespace, self._interval))
    batches = docs | "SortAndBatchByTokens" >> beam.SortAndBatchElements(
        min_batch_size=1, max_batch_size=self._max_batch_size,
        max_batch_weight=max(self._batch_tokens, max_tokens),
        element_size_fn=lambda d: estimated_tokens(d, max_tokens, frame))
    scored = batches | "RunInference" >> RunInference(self._handler.with_no_batching())
    if self._cache is not None:
      # Fused with RunInference: entries reach disk while the stage still runs.
      scored = scored | "WriteToCache" >> beam.ParDo(WriteToCache(self._cache))
      scored = (looked_up["cached"], scored) | "MergeCached" >> beam.Flatten()
    extra = [self._total] if self._total is not None else []
    return scored | "LogProgress" >> beam.ParDo(LogProgress(self._stage, self._interval),
                                                *extra)


class ScoreAskLLM(ScoreDocuments):
  """Attaches `ask_llm_score`, `p_yes` and `p_no` to every Document.

  Args:
    config: the scorer (model, prompt, truncation, yes/no tokens, device).
    large_model: load one model per worker VM, shared by its SDK processes (GPU workers).
    model_copies: load exactly this many copies per VM (implies sharing).
    Others as ScoreDocuments.
  """

  def __init__(self, config: AskLLMConfig, batch_tokens: int = 8192,
               max_batch_size: int = 64, large_model: bool = False,
               model_copies: Optional[int] = None, total=None,
               cache: Optional[CacheSpec] = None, progress_interval_s: float = 30.0):
    super().__init__(AskLLMModelHandler(config, large_model=large_model,
                                        model_copies=model_copies),
                     stage="scored", max_tokens=config.max_tokens, frame_tokens=100,
                     batch_tokens=batch_tokens, max_batch_size=max_batch_size, total=total,
                     cache=cache, progress_interval_s=progress_interval_s)


class ScorePerplexity(ScoreDocuments):
  """Attaches `perplexity` (per token, over at most max_tokens tokens) and `mean_nll`.

  Args:
    config: a PerplexityConfig (a causal LM, its token budget and device).
    Others as ScoreAskLLM.
  """

  def __init__(self, config, batch_tokens: int = 8192, max_batch_size: int = 64,
               large_model: bool = False, model_copies: Optional[int] = None, total=None,
               cache: Optional[CacheSpec] = None, progress_interval_s: float = 30.0):
    super().__init__(PerplexityModelHandler(config, large_model=large_model,
                                            model_copies=model_copies),
                     stage="perplexity", max_tokens=config.max_tokens, frame_tokens=1,
                     batch_tokens=batch_tokens, max_batch_size=max_batch_size, total=total,
                     cache=cache, progress_interval_s=progress_interval_s)
