"""Quality-head transforms (the Beam edge of transforms/quality_head.py): choose the
teacher set, fit the head from additive statistics, apply it through a side input, and
report its fit on held-back teacher documents."""
from __future__ import annotations

import dataclasses
import json
import logging
from typing import Callable, Optional

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

from transforms import quality_head as qh
from transforms.metrics import TEACHER, TEACHER_HELD_BACK, counter, stage_clock
from transforms.records import ASK_LLM_SCORE, QUALITY_SCORE, Document
from transforms.sampling import uniform_from_id

_LOG = logging.getLogger(__name__)
HELD_BACK_FRACTION = 0.2
# At most this many held-back pairs are gathered for the fit report (a uniform sample).
REPORT_SAMPLE = 100_000
_BATCH = 1024


def in_teacher_fraction(seed: int, doc_id: str, fraction: float) -> bool:
  """Deterministic choice of the Ask-LLM teacher set: a hash of (seed, id), never an RNG,
  so every run and every retry picks the same documents."""
  return uniform_from_id(seed, "teacher\x00" + doc_id) < fraction


def is_held_back(seed: int, doc_id: str) -> bool:
  return uniform_from_id(seed, "held_back\x00" + doc_id) < HELD_BACK_FRACTION


def teacher_value_fn(teacher_field: Optional[str]) -> Callable[[Document], Optional[float]]:
  """The teacher score of a document, or None when it has none."""
  if teacher_field:
    return lambda doc: doc.fields.get(teacher_field)
  return lambda doc: doc.scores.get(ASK_LLM_SCORE)


def _xy(batch, teacher):
  x = np.stack([d.embedding for d in batch]).astype(np.float32)
  y = np.array([teacher(d) for d in batch], np.float64)
  return x, y


class FitQualityHead(beam.PTransform):
  """Documents (with embeddings) -> a singleton QualityHead, fitted on the documents
  that have a teacher score and are not held back. Counters: `teacher`,
  `teacher_held_back`."""

  def __init__(self, teacher: Callable, seed: int, l2: float, embedding_model: str,
               teacher_name: str, embedding_max_tokens: Optional[int] = None):
    super().__init__()
    self._tokens = embedding_max_tokens
    self._teacher = teacher
    self._seed = seed
    self._l2 = l2
    self._model = embedding_model
    self._name = teacher_name

  def expand(self, docs):
    teacher, seed = self._teacher, self._seed

    def route(doc):
      if teacher(doc) is None:
        return
      counter(TEACHER).inc()
      if is_held_back(seed, doc.id):
        counter(TEACHER_HELD_BACK).inc()
        return
      yield doc

    train = docs | "TeacherTrainSet" >> beam.FlatMap(route)
    stats = (train
             | "BatchTeacher" >> beam.BatchElements(min_batch_size=64, max_batch_size=_BATCH)
             | "TeacherXY" >> beam.Map(_xy, teacher)
             | "SumStatistics" >> beam.CombineGlobally(qh.RidgeStatsCombineFn()))
    l2, model, name, tokens = self._l2, self._model, self._name, self._tokens
    return stats | "Solve" >> beam.Map(lambda s: qh.solve(s, l2, model, name, tokens))


class _ApplyHead(beam.DoFn):
  def __init__(self, keep_embeddings: bool):
    self._keep = keep_embeddings

  def process(self, batch, head: qh.QualityHead):
    stage_clock("quality_head")
    pred = head.predict(np.stack([d.embedding for d in batch]))
    for doc, p in zip(batch, pred):
      if not self._keep:
        doc = dataclasses.replace(doc, embedding=None)
      yield doc.with_scores(quality_score=float(p))


class ApplyQualityHead(beam.PTransform):
  """Adds `quality_score` to every document, with the head as a side input."""

  def __init__(self, head, keep_embeddings: bool):
    super().__init__()
    self._head = head
    self._keep = keep_embeddings

  def expand(self, docs):
    return (docs
            | "BatchForHead" >> beam.BatchElements(min_batch_size=64, max_batch_size=_BATCH)
            | "Predict" >> beam.ParDo(_ApplyHead(self._keep),
                                      beam.pvalue.AsSingleton(self._head)))


class ReportHeadFit(beam.PTransform):
  """Writes the head's fit on held-back teacher documents to `path` (JSON)."""

  def __init__(self, teacher: Callable, seed: int, path: str):
    super().__init__()
    self._teacher = teacher
    self._seed = seed
    self._path = path

  def expand(self, scored_docs):
    teacher, seed, path = self._teacher, self._seed, self._path
    # At most REPORT_SAMPLE pairs, chosen by a hash of (seed, id) rather than at random,
    # so that the report is the same on every run and worker count.
    pairs = (scored_docs
             | "HeldBack" >> beam.FlatMap(
                 lambda d: [(uniform_from_id(seed, "report\x00" + d.id), d.id, d.source,
                             teacher(d), d.scores[QUALITY_SCORE])]
                 if teacher(d) is not None and is_held_back(seed, d.id) else [])
             | "SamplePairs" >> beam.combiners.Top.Of(
                 REPORT_SAMPLE, key=lambda t: t[:3], reverse=True))
    return pairs | "WriteFitReport" >> beam.Map(_write_report, path)


def _write_report(rows, path):
  report = qh.fit_report([(teacher, score) for *_, teacher, score in rows])
  if report.get("warning"):
    _LOG.warning("Quality head: %s", report["warning"])
  with FileSystems.create(path) as f:
    f.write(json.dumps(report, indent=2).encode("utf-8"))
  return report
