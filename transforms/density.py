"""Density (coverage) transforms: embed, build the LSH sketch (a CombineFn), score every
document against it (a side input), and turn density into sampling keys.

The pure parts live in transforms/algorithms/: sketch_hashing.py (hashes, buckets),
sketch_counts.py (counting), density.py (the parameters from a sample, density and weight)
and sampling.py (deterministic keys); the sketch's CombineFn is in transforms/
sketch_counts.py. This module is the Beam edge.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import apache_beam as beam
import numpy as np

from models.embeddings import EmbeddingConfig
from transforms import sketch_counts
from transforms.algorithms import sketch_hashing
from transforms.algorithms.density import _params_from_sample, density_and_weight
from transforms.algorithms.sampling import uniform_from_id
from transforms.algorithms.sketch_hashing import SketchOptions
from transforms.inference import EmbeddingModelHandler
from transforms.metrics import stage_clock
from transforms.score import ScoreDocuments

# Documents per vectorised density/key computation.
_DENSITY_BATCH = 1024


class EmbedDocuments(ScoreDocuments):
  """Attaches a unit-norm sentence embedding to every Document (RunInference).

  Args:
    config: the embedding model, its token budget and device.
    large_model / model_copies: share the model across processes on a worker VM.
    Others as ScoreDocuments.
  """

  def __init__(self, config: EmbeddingConfig, batch_tokens: int = 8192,
               max_batch_size: int = 256, large_model: bool = False,
               model_copies: Optional[int] = None, total=None, cache=None,
               progress_interval_s: float = 30.0):
    super().__init__(EmbeddingModelHandler(config, large_model=large_model,
                                           model_copies=model_copies),
                     stage="embedded", max_tokens=config.max_tokens, frame_tokens=2,
                     batch_tokens=batch_tokens, max_batch_size=max_batch_size, total=total,
                     cache=cache, progress_interval_s=progress_interval_s)


class _SketchWithParamsFromSideInput(sketch_counts.DensitySketchCombineFn):
  """The sketch CombineFn when the parameters are computed in the pipeline (the `auto`
  bucket width comes from a sample of the data): Beam passes them as a side input."""

  def __init__(self, chunk_size: int = sketch_hashing.DEFAULT_CHUNK):
    super().__init__(params=None, chunk_size=chunk_size)

  def _bind(self, params):
    if self.params != params:
      self.params, self._hashes = params, None

  def setup(self, *args, **kwargs):
    pass  # The parameters arrive with the first call.

  def create_accumulator(self, params):
    self._bind(params)
    return super().create_accumulator()

  def add_input(self, acc, element, params):
    self._bind(params)
    return super().add_input(acc, element)

  def add_inputs(self, acc, elements, params):
    self._bind(params)
    return super().add_inputs(acc, elements)

  def merge_accumulators(self, accumulators, params):
    self._bind(params)
    return super().merge_accumulators(accumulators)

  def compact(self, acc, params=None):
    if params is not None:
      self._bind(params)
    return super().compact(acc) if self.params is not None else acc

  def extract_output(self, acc, params):
    self._bind(params)
    return super().extract_output(acc)


def _embeddings_batch(docs):
  return np.stack([d.embedding for d in docs]).astype(np.float32, copy=False)


class BuildSketch(beam.PTransform):
  """Documents with embeddings -> one Sketch (a singleton PCollection).

  The count matrix is summed by a CombineFn over batches of embeddings; the hash
  functions come from the seed, so every worker builds the same ones. The parameters
  (embedding size, and the width when `auto`) come from a small sample of the data.
  """

  def __init__(self, options: SketchOptions):
    super().__init__()
    self._options = options

  def expand(self, docs):
    options = self._options
    # The sample is the documents with the smallest hash of (seed, id), not a random
    # draw: the same seed and input give the same width on any runner, with any number
    # of workers, after any retry. Ties (duplicate ids) break by source.
    seed = options.seed
    sample = (docs
              | "HashForParams" >> beam.Map(
                  lambda d: (uniform_from_id(seed, d.id), d.id, d.source, d.embedding))
              | "SampleForParams" >> beam.combiners.Top.Of(
                  max(2, options.auto_sample), key=lambda t: t[:3], reverse=True))
    params = sample | "SketchParams" >> beam.Map(
        lambda rows: _params_from_sample([r[3] for r in rows], options))
    batches = (docs
               | "BatchForSketch" >> beam.BatchElements(min_batch_size=256,
                                                        max_batch_size=_DENSITY_BATCH)
               | "StackEmbeddings" >> beam.Map(_embeddings_batch))
    return batches | "SumCounts" >> beam.CombineGlobally(
        _SketchWithParamsFromSideInput(), beam.pvalue.AsSingleton(params))


class _AttachDensity(beam.DoFn):
  """Scores a batch of documents against the sketch; drops their embeddings."""

  def __init__(self, seed: int):
    self._seed = seed
    self._hashes_for = None
    self._hashes = None

  def process(self, batch, sketch: sketch_counts.Sketch):
    stage_clock("density")
    if self._hashes_for != sketch.params:
      self._hashes, self._hashes_for = sketch_hashing.make_hashes(sketch.params), sketch.params
    dens, weights = density_and_weight(_embeddings_batch(batch), sketch, self._hashes)
    for doc, d, w in zip(batch, dens, np.atleast_1d(weights)):
      yield dataclasses.replace(doc, embedding=None).with_scores(
          density=float(d), sampling_weight=float(w))


class AttachDensity(beam.PTransform):
  """Adds `density` (mean sketch count over rows minus the expected spurious collisions,
  at least 1: an estimate of how many documents lie within the kernel, itself included)
  and `sampling_weight` (1/density)."""

  def __init__(self, sketch, seed: int = 0):
    super().__init__()
    self._sketch = sketch
    self._seed = seed

  def expand(self, docs):
    return (docs
            | "BatchForDensity" >> beam.BatchElements(min_batch_size=64,
                                                      max_batch_size=_DENSITY_BATCH)
            | "Density" >> beam.ParDo(_AttachDensity(self._seed),
                                      beam.pvalue.AsSingleton(self._sketch)))
