"""The Ask-LLM cascade (--judge_fraction): a cheap signal ranks every document, the judge
scores only the cheap signal's top F plus an audit of the rest (a hash of seed and id),
and the audit estimates the recall of the full judge's selection
(transforms/algorithms/cascade_recall.py has the arithmetic).

The documents are marked in two columns of scores/: `cascade_judged` (1: judged, in the
cut; 2: judged, audited below the cut; 0: not judged) and `cascade_score` (the cheap
score the cut used). The samplers rank judged documents by the judge and the others
after them by `cascade_score` (beam_pipelines/samplers.ask_llm_key).
"""
from __future__ import annotations

import array
import math
from typing import Any, Dict, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms import metrics
from transforms import output_files
from transforms.algorithms.cascade_recall import (AUDITED, CASCADE_GROUP, CASCADE_SCORE,
                                                  IN_CUT, NOT_JUDGED, estimate_recall,
                                                  in_audit, keep_k)
from transforms.output_layout import CASCADE_FILE
from transforms.record_types import ASK_LLM_SCORE
from transforms.select import SelectTopK

CASCADE_SIGNAL = "cascade"  # the registry's name for the two columns above
ASK_LLM = "ask_llm"
# Stages that rank by the judge inside them (the cluster quotas of ask_llm_balanced): they
# run after the judge when the judge runs after the cheap signal.
_RANKING_STAGES = ("clusters",)


def signal_order(names: Sequence[str], cheap: str) -> List[str]:
  """The registry's order of `names` (and what they read), changed so that the judge
  runs after the cheap signal and the stages ranking by the judge after the judge;
  otherwise registration order (so the graph is the same on every launch)."""
  from transforms import signals
  base = [s.name for s in signals.in_order(list(names))]
  extra = {ASK_LLM: {cheap}, **{n: {ASK_LLM} for n in _RANKING_STAGES}}
  done: List[str] = []
  pending = list(base)
  while pending:
    ready = [n for n in pending if all(
        r in done or r not in base for r in set(signals.get(n).reads) | extra.get(n, set()))]
    if not ready:
      raise ValueError(f"the cascade's signals read each other in a circle: {pending}")
    done.append(ready[0])
    pending.remove(ready[0])
  return done


def _worst_last(value) -> tuple:
  if value is None or value != value:
    return (1, 0.0)
  return (0, -value)


def cheap_key(column: str):
  """The cut's key: the cheap score, best first, then (id, source)."""
  def key(doc):
    return (_worst_last(doc.scores.get(column)), doc.id, doc.source)
  return key


def _mark(doc, group: int, column: str):
  return doc.with_scores(**{CASCADE_GROUP: group, CASCADE_SCORE: doc.scores.get(column)})


class _ChooseAudit(beam.DoFn):
  """Below the cut: audited (main output) when the hash of (seed, id) says so."""

  def __init__(self, seed: int, fraction: float, column: str):
    self._seed, self._fraction, self._column = seed, fraction, column

  def setup(self):
    self._audited = metrics.counter(metrics.CASCADE_AUDITED)
    self._skipped = metrics.counter(metrics.CASCADE_NOT_JUDGED)

  def process(self, doc):
    if in_audit(self._seed, doc.id, self._fraction):
      self._audited.inc()
      yield _mark(doc, AUDITED, self._column)
    else:
      self._skipped.inc()
      yield beam.pvalue.TaggedOutput("not_judged", _mark(doc, NOT_JUDGED, self._column))


class CascadeCut(beam.PTransform):
  """Documents -> {"pool": the cheap signal's top F, "audited": the audit of the rest,
  "not_judged": the others}, each marked (cascade_judged, cascade_score)."""

  def __init__(self, column: str, judge_fraction: float, audit_fraction: float, seed: int,
               num_partitions: int = 1000):
    super().__init__()
    self._column, self._fraction = column, judge_fraction
    self._audit, self._seed, self._partitions = audit_fraction, seed, num_partitions

  def expand(self, docs):
    column = self._column
    cut = docs | "CheapTopF" >> SelectTopK(
        key_fn=cheap_key(column), keep_fraction=self._fraction, rank=False,
        num_partitions=self._partitions, counter_name=metrics.CASCADE_POOL)
    pool = cut["selected"] | "MarkPool" >> beam.Map(_mark, IN_CUT, column)
    below = cut["not_selected"] | "ChooseAudit" >> beam.ParDo(
        _ChooseAudit(self._seed, self._audit, column)).with_outputs("not_judged",
                                                                    main="audited")
    return {"pool": pool, "audited": below.audited, "not_judged": below.not_judged}


def recall_k(total: int, keep_fraction: float, pool_factor: Optional[float]) -> int:
  """The size of what the full judge would choose: the selection, or the quality pool
  (pool_factor, as graph._select takes it)."""
  if pool_factor is not None:
    return keep_k(total, min(1.0, keep_fraction * pool_factor))
  return keep_k(total, keep_fraction)


class GatherJudgeScores(beam.CombineFn):
  """(group, judge score) pairs -> (the cut's scores, the audit's scores), as arrays of
  doubles (8 bytes a document on the one worker that estimates the recall)."""

  def create_accumulator(self):
    return array.array("d"), array.array("d")

  def add_input(self, acc, pair):
    group, score = pair
    acc[1 if group == AUDITED else 0].append(score)
    return acc

  def merge_accumulators(self, accs):
    accs = iter(accs)
    pool, audit = next(accs)
    for p, a in accs:
      pool.extend(p)
      audit.extend(a)
    return pool, audit

  def extract_output(self, acc):
    return acc


def summary(scores, total: int, settings: Dict[str, Any], keep_fraction: float,
            pool_factor: Optional[float]) -> Dict[str, Any]:
  """cascade.json: the counts, the documents the judge did not score, and the recall
  estimate, from the judge's scores of the cut and of the audit (NaN: it failed)."""
  pool, audit = scores
  judged = len(pool) + len(audit)
  k = recall_k(total, keep_fraction, pool_factor)
  estimate = estimate_recall(pool, audit, total - len(pool), k)
  return {**settings, "documents": total, "judged": judged, "pool": len(pool),
          "audited": len(audit), "not_judged": total - judged,
          "judge_documents_saved": total - judged,
          "judged_share": round(judged / total, 6) if total else None,
          "recall_of": "quality pool" if pool_factor is not None else "selection",
          "recall": estimate.to_dict()}


class CascadeRecall(beam.PTransform):
  """Judged documents -> cascade.json at `path` (a PCollection done once written)."""

  def __init__(self, path: str, total, settings: Dict[str, Any], keep_fraction: float,
               pool_factor: Optional[float]):
    super().__init__()
    self._path, self._total, self._settings = path, total, settings
    self._keep, self._factor = keep_fraction, pool_factor

  def expand(self, judged):
    path = self._path

    def pair(doc):
      score = doc.scores.get(ASK_LLM_SCORE)
      return (doc.scores[CASCADE_GROUP], math.nan if score is None else float(score))

    return (judged | "JudgeScores" >> beam.Map(pair)
            | "GatherJudgeScores" >> beam.CombineGlobally(GatherJudgeScores())
            | "EstimateRecall" >> beam.Map(summary, self._total, self._settings,
                                           self._keep, self._factor)
            | "WriteCascade" >> beam.Map(lambda s: output_files.write_json_atomic(path, s)))


def judge_cascade(ctx, docs, score):
  """The ask_llm stage under --judge_fraction: cut, audit, judge the judged documents
  (`score`: the Ask-LLM transform, with its cache), write cascade.json."""
  job = ctx.job
  config = job.cascade
  column = config.column
  parts = docs | "CascadeCut" >> CascadeCut(column, config.judge_fraction,
                                            config.audit_fraction, job.seed,
                                            job.num_rank_partitions)
  judged = (parts["pool"], parts["audited"]) | "FlattenJudged" >> beam.Flatten()
  scored = judged | "ScoreAskLLM" >> score
  settings = {"judge_fraction": config.judge_fraction,
              "audit_fraction": config.audit_fraction, "signal": config.signal,
              "score_column": column}
  factor = job.quality_pool_factor if job.sampler.pool_key is not None else None
  ctx.written.append(scored | "CascadeRecall" >> CascadeRecall(
      FileSystems.join(ctx.staging, CASCADE_FILE), ctx.total, settings, job.keep_fraction,
      factor))
  return (scored, parts["not_judged"]) | "MergeNotJudged" >> beam.Flatten()


def columns_stage(ctx, docs):
  """The `cascade` signal only declares the columns the judge's stage writes."""
  del ctx
  return docs
