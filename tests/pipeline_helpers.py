"""Shared Beam test plumbing."""
import apache_beam as beam
from apache_beam.ml.inference.base import RunInference


def run_handler(p, docs, handler, max_batch_size=2):
  """Documents through length-sorted batches and RunInference, as the job scores them."""
  return (p | beam.Create(docs)
          | beam.SortAndBatchElements(min_batch_size=1, max_batch_size=max_batch_size,
                                      max_batch_weight=10_000,
                                      element_size_fn=lambda d: len(d.text))
          | RunInference(handler.with_no_batching()))
