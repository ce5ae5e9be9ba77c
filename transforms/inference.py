"""The RunInference ModelHandlers of the job: Documents in, their texts to a model
(models/, which knows texts only), each model output row attached back to its Document."""
from __future__ import annotations

import dataclasses
import functools
import logging
import threading
from typing import Any, Callable, Dict, Iterable, Optional, Sequence

from apache_beam.ml.inference.base import ModelHandler

from models import threads
from models.ask_llm import AskLLMConfig, load_scorer, scores_from_probs
from models.embeddings import EmbeddingConfig, load_embedder
from models.perplexity import PerplexityConfig, load_perplexity_scorer, perplexity_scores
from transforms import metrics
from transforms.records import Document
from transforms.score_cache import round_embedding

_LOG = logging.getLogger(__name__)
# A model that fails on more than this share of the documents it has seen (once it has
# seen at least _MIN_DOCS_FOR_RATE) is broken, not the documents: the job stops rather
# than mark everything as failed.
MAX_FAILED_SHARE = 0.05
_MIN_DOCS_FOR_RATE = 200


def error_field(namespace: str) -> str:
  """The score name that holds why a model failed on a document (e.g. `ask_llm_error`)."""
  return f"{namespace}_error"


def _one_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:300] if text else ''}"


class LazyModel:
  """A model loaded on its first use (`load()` or `run()`), once per process. A class with
  methods, so that it also works shared across processes (large_model / model_copies)."""

  def __init__(self, loader: Callable, config):
    self._loader = loader
    self._config = config
    self._model = None
    self._threads = None
    self._lock = threading.Lock()

  def load(self) -> bool:
    """Loads the model if it is not yet; True when this call loaded it."""
    if self._model is not None:
      return False
    with self._lock:
      if self._model is not None:
        return False
      # Local worker processes share the cores: cores // processes threads each.
      self._threads = threads.apply()
      self._model = self._loader(self._config)
      return True

  def run(self, texts):
    self.load()
    return self._model.run(texts)

  def settings(self) -> Dict[str, Any]:
    """What the loaded model decided itself (e.g. whether a chat template is used, its
    precision) and the torch threads of this process."""
    own = self._model.settings() if hasattr(self._model, "settings") else {}
    return {**own, "threads": self._threads}


class DocumentModelHandler(ModelHandler[Document, Document, Any]):
  """Documents in, the same Documents with scores (or embeddings) attached out.

  The loaded model is an object with `run(texts)` returning one row per text (a method,
  so that it also works when the model lives in another process: large_model /
  model_copies pass method calls). `attach(doc, row)` puts a row on its Document.
  Batching is done upstream by `beam.SortAndBatchElements` (length-sorted, token
  budget), so use it as `RunInference(handler.with_no_batching())`.

  One document never fails the job: when a batch raises, its documents are scored one
  by one, and a document that fails alone comes out with `<namespace>_error` (the
  reason) instead of scores, counted as `scoring_failed:<namespace>`; the job ranks it
  last. A batch whose every document fails alone, or a failure rate above
  MAX_FAILED_SHARE, means the model itself is broken, and that does fail the job.

  Args:
    config: the model's small, picklable config.
    loader: a module-level function config -> loaded model, called once per process.
    namespace: the metrics namespace RunInference reports under.
    attach: a picklable function (Document, model output row) -> Document.
  """

  def __init__(self, config, loader: Callable, namespace: str,
               attach: Callable[[Document, Any], Document], large_model: bool = False,
               model_copies: Optional[int] = None):
    super().__init__(large_model=large_model, model_copies=model_copies)
    self._config = config
    self._loader = loader
    self._namespace = namespace
    self._attach = attach
    self._lock = threading.Lock()
    self._seen = 0
    self._failed = 0
    self.progress_interval_s = 30.0

  def __getstate__(self):
    state = dict(self.__dict__)
    state.pop("_lock", None)
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def load_model(self):
    # Loaded on the first batch, not when the step starts: a run whose documents all
    # come from the score cache never loads the model.
    return LazyModel(self._loader, self._config)

  @property
  def namespace(self) -> str:
    return self._namespace

  @property
  def attach(self) -> Callable[[Document, Any], Document]:
    return self._attach

  def _score(self, docs: Sequence[Document], model) -> list:
    rows = model.run([d.text for d in docs])
    # zip would silently drop documents a model returned no row for.
    if len(rows) != len(docs):
      raise RuntimeError(f"{self._namespace}: the model returned {len(rows)} rows for "
                         f"{len(docs)} texts")
    return [self._attach(d, row) for d, row in zip(docs, rows)]

  def run_inference(self, batch: Sequence[Document], model,
                    inference_args: Optional[Dict[str, Any]] = None) -> Iterable[Document]:
    progress = metrics.ModelProgress.for_stage(self._namespace, self.progress_interval_s)
    # Outside the per-document fallback: a model that cannot load fails the job.
    progress.loading(True)
    try:
      if model.load():
        metrics.counter(metrics.MODEL_LOADS_PREFIX + self._namespace).inc()
        for key, value in sorted(model.settings().items()):
          metrics.counter(f"{metrics.MODEL_SETTING_PREFIX}{self._namespace}:{key}={value}"
                          ).inc()
    finally:
      progress.loading(False)
    out = self._run_batch(batch, model)
    progress.batch_done(len(batch))
    metrics.counter(metrics.INFERRED_PREFIX + self._namespace).inc(len(batch))
    return out

  def _run_batch(self, batch: Sequence[Document], model) -> list:
    try:
      out = self._score(batch, model)
      self._account(len(batch), 0)
      return out
    except Exception as e:  # pylint: disable=broad-except
      _LOG.warning("%s: a batch of %d documents failed (%s); scoring them one by one",
                   self._namespace, len(batch), _one_line(e))
    out, failures = [], []
    for doc in batch:
      try:
        out.extend(self._score([doc], model))
      except Exception as e:  # pylint: disable=broad-except
        failures.append(e)
        out.append(doc.with_scores(**{error_field(self._namespace): _one_line(e)}))
    if failures and len(failures) == len(batch) and len(batch) > 1:
      raise RuntimeError(f"{self._namespace}: every document of a batch of {len(batch)} "
                         f"failed alone; the model is broken: {_one_line(failures[0])}"
                         ) from failures[0]
    self._account(len(batch), len(failures))
    if failures:
      metrics.counter(metrics.SCORING_FAILED_PREFIX + self._namespace).inc(len(failures))
      _LOG.warning("%s: %d of %d documents failed alone and are ranked last: %s",
                   self._namespace, len(failures), len(batch), _one_line(failures[0]))
    return out

  def _account(self, seen: int, failed: int) -> None:
    with self._lock:
      self._seen += seen
      self._failed += failed
      if (self._seen >= _MIN_DOCS_FOR_RATE
          and self._failed > MAX_FAILED_SHARE * self._seen):
        raise RuntimeError(
            f"{self._namespace}: {self._failed} of {self._seen} documents failed to score "
            f"(over {MAX_FAILED_SHARE:.0%}); the model or its settings are broken, not "
            "the documents. See the worker logs for the errors.")

  def get_num_bytes(self, batch: Sequence[Document]) -> int:
    return sum(len(d.text) for d in batch)

  def get_metrics_namespace(self) -> str:
    return self._namespace


# The attach functions are module-level so that the handlers pickle.
def attach_ask_llm(doc: Document, probs, mode: str) -> Document:
  p_yes, p_no = probs
  return doc.with_scores(**scores_from_probs(p_yes, p_no, mode))


def attach_perplexity(doc: Document, mean_nll) -> Document:
  return doc.with_scores(**perplexity_scores(mean_nll))


def attach_embedding(doc: Document, vector) -> Document:
  # float16 as in the score cache, so that cached and fresh runs select alike.
  return dataclasses.replace(doc, embedding=round_embedding(vector))


class AskLLMModelHandler(DocumentModelHandler):
  """RunInference handler: Documents in, with `ask_llm_score`, `p_yes`, `p_no` out."""

  def __init__(self, config: AskLLMConfig, large_model: bool = False,
               model_copies: Optional[int] = None):
    super().__init__(config, load_scorer, "ask_llm",
                     functools.partial(attach_ask_llm, mode=config.score),
                     large_model=large_model, model_copies=model_copies)


class PerplexityModelHandler(DocumentModelHandler):
  """RunInference handler: Documents in, with `perplexity` and `mean_nll` out."""

  def __init__(self, config: PerplexityConfig, large_model: bool = False,
               model_copies: Optional[int] = None):
    super().__init__(config, load_perplexity_scorer, "perplexity", attach_perplexity,
                     large_model=large_model, model_copies=model_copies)


class EmbeddingModelHandler(DocumentModelHandler):
  """RunInference handler: Documents in, the same Documents with `embedding` set."""

  def __init__(self, config: EmbeddingConfig, large_model: bool = False,
               model_copies: Optional[int] = None):
    super().__init__(config, load_embedder, "embeddings", attach_embedding,
                     large_model=large_model, model_copies=model_copies)
