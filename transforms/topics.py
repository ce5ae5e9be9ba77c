"""Topics and groups: the topic head's stage (every embedded document gets its
WebOrganizer topic), and the group of a document the balanced samplers cap (its
cluster, its topic, or the value of an input field).

The head itself is models/topic_head.py (arrays in, arrays out).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Mapping, Optional, Sequence

import apache_beam as beam
import numpy as np

from models import topic_head as topic_head_lib
from transforms import metrics
from transforms.records import CLUSTER, Document

TOPIC, TOPIC_NAME, TOPIC_CONFIDENCE = "topic", "topic_name", "topic_confidence"
MISSING_GROUP = "(missing)"
# Where the value of --balance_by=field:NAME travels on a Document (Document.fields is
# not written to any output; the name cannot clash with an input field's).
GROUP_FIELD = "\x00group"
_BATCH = 256


class _ApplyTopicHead(beam.DoFn):
  """Batches of documents -> the same documents with topic, topic_name and
  topic_confidence (one matrix product per batch)."""

  def __init__(self, spec: str):
    self._spec = spec

  def setup(self):
    self._head = topic_head_lib.load_topic_head(self._spec)
    self._done = metrics.counter(metrics.INFERRED_PREFIX + "topics")

  def process(self, batch):
    metrics.stage_clock("topics")
    x = np.stack([np.asarray(d.embedding, np.float32) for d in batch])
    topics, confidence = self._head.predict(x)
    self._done.inc(len(batch))
    for doc, t, c in zip(batch, topics, confidence):
      yield doc.with_scores(**{TOPIC: int(t), TOPIC_NAME: topic_head_lib.topic_name(t),
                               TOPIC_CONFIDENCE: float(c)})


class AttachTopics(beam.PTransform):
  """Documents with embeddings -> the same with their topic columns."""

  def __init__(self, spec: str = topic_head_lib.BUNDLED):
    super().__init__()
    self._spec = spec

  def expand(self, docs):
    return (docs
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=_BATCH)
            | "ApplyTopicHead" >> beam.ParDo(_ApplyTopicHead(self._spec)))


def topics_stage(ctx, docs):
  """The `topics` signal's stage (transforms/builtin_signals.py)."""
  grouping = getattr(ctx.job, "grouping", None)
  spec = getattr(grouping, "topic_head", topic_head_lib.BUNDLED)
  return docs | "Topics" >> AttachTopics(spec)


# --- Groups --------------------------------------------------------------------------


def value_at(record: Mapping[str, Any], path: Sequence[str]) -> Any:
  """The value at a dotted path: the flat key "a.b" when the record has it, else
  record["a"]["b"] (nested dicts); None when missing."""
  dotted = ".".join(path)
  if dotted in record:
    return record[dotted]
  value: Any = record
  for part in path:
    if not isinstance(value, Mapping) or part not in value:
      return None
    value = value[part]
  return value


def group_label(value: Any) -> str:
  """A field value as a group name: text as it is, anything else as JSON; a missing (or
  null, or empty) value is the one "(missing)" group."""
  if value is None or value == "" or value == [] or value == {}:
    return MISSING_GROUP
  if isinstance(value, str):
    return value
  if isinstance(value, list) and len(value) == 1:  # a one-value tf.train.Example feature
    return group_label(value[0])
  if isinstance(value, bytes):
    return value.decode("utf-8", "replace")
  return json.dumps(value, sort_keys=True, ensure_ascii=False)


def field_group_fn(path: Sequence[str], keep: Sequence[str]) -> Callable[[Document], Document]:
  """Document -> the same with its group (the field's value, as group_label) in
  Document.fields, and the copied field dropped from Document.extra unless --keep_fields
  names it (so it is not written to the outputs)."""
  path, keep = tuple(path), frozenset(keep)

  def attach(doc: Document) -> Document:
    value = value_at(doc.extra, path)
    if value is None:
      value = value_at(doc.fields, path)
    extra = {k: v for k, v in doc.extra.items() if k in keep}
    return dataclasses.replace(doc, extra=extra,
                               fields={**doc.fields, GROUP_FIELD: group_label(value)})
  return attach


def group_of_fn(kind: str) -> Callable[[Document], Any]:
  """The group key a balanced sampler caps: cluster, topic, or field (set by
  field_group_fn)."""
  if kind == "cluster":
    return lambda doc: doc.scores.get(CLUSTER)
  if kind == "topic":
    return lambda doc: doc.scores.get(TOPIC)
  if kind == "field":
    return lambda doc: doc.fields.get(GROUP_FIELD, MISSING_GROUP)
  raise ValueError(f"unknown group kind {kind!r}")


def report_group_fn(kind: str) -> Optional[Callable[[Document], Any]]:
  """The groups the report shows: the field's for field:NAME, else the topics."""
  if kind == "field":
    return group_of_fn("field")

  def topic(doc):
    t = doc.scores.get(TOPIC)
    if t is None:
      return MISSING_GROUP
    return f"{t} {topic_head_lib.topic_name(t) or ''}".strip()
  return topic


class GroupSizes(beam.PTransform):
  """Documents -> a singleton {group: documents}."""

  def __init__(self, group_of: Callable):
    super().__init__()
    self._group_of = group_of

  def expand(self, docs):
    return (docs | "GroupOf" >> beam.Map(self._group_of)
            | "Count" >> beam.combiners.Count.PerElement()
            | "ToDict" >> beam.combiners.ToDict())


def confident_first(within_key: Callable) -> Callable:
  """Inside a topic's quota, the documents the head is surest of first (then within_key):
  a uniform draw inside a predicted topic also takes the pages the head put there by
  mistake, mostly from the large topics, which undoes part of the balance (measured in
  benchmarks/topic_bench.py)."""
  def key(doc):
    conf = doc.scores.get(TOPIC_CONFIDENCE)
    return (-(conf if conf is not None and conf == conf else -1.0), within_key(doc))
  return key


def quota_groups(job, docs, cluster_sizes):
  """(group_of, its sizes singleton, the --balance_by spec, the order a group's quota
  is filled in) of the balanced samplers' cap: the clusters (their sizes already
  counted) or the job's --balance_by groups. `balanced` over topics fills each quota
  confident_first; the other samplers keep their own order."""
  grouping = getattr(job, "grouping", None)
  kind = getattr(grouping, "balance_by", "cluster")
  within = job.sampler.quota_key(job.seed)
  if kind == "cluster":
    return group_of_fn("cluster"), cluster_sizes, "cluster", within
  if kind == "topic" and job.sampler.name == "balanced":
    within = confident_first(within)
  group_of = group_of_fn(kind)
  return group_of, docs | "GroupSizes" >> GroupSizes(group_of), grouping.spec, within
