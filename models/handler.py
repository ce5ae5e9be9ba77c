"""The RunInference ModelHandler shared by every model of the job."""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional, Sequence

from apache_beam.ml.inference.base import ModelHandler

from transforms.records import Document


class DocumentModelHandler(ModelHandler[Document, Document, Any]):
  """Documents in, the same Documents with scores (or embeddings) attached out.

  The loaded model is an object with `score_documents(docs)`, so that it also works
  when it lives in another process (large_model / model_copies pass method calls).
  Batching is done upstream by `beam.SortAndBatchElements` (length-sorted, token
  budget), so use it as `RunInference(handler.with_no_batching())`.

  Args:
    config: the model's small, picklable config.
    loader: a module-level function config -> loaded model, called once per process.
    namespace: the metrics namespace RunInference reports under.
  """

  def __init__(self, config, loader: Callable, namespace: str, large_model: bool = False,
               model_copies: Optional[int] = None):
    super().__init__(large_model=large_model, model_copies=model_copies)
    self._config = config
    self._loader = loader
    self._namespace = namespace

  def load_model(self):
    return self._loader(self._config)

  def run_inference(self, batch: Sequence[Document], model,
                    inference_args: Optional[Dict[str, Any]] = None) -> Iterable[Document]:
    return model.score_documents(batch)

  def get_num_bytes(self, batch: Sequence[Document]) -> int:
    return sum(len(d.text) for d in batch)

  def get_metrics_namespace(self) -> str:
    return self._namespace
