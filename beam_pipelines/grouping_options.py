"""The grouping options (see feature_options.py): --balance_by (the groups the balanced
samplers cap) and --topic_head (the head that gives every embedded document a topic).

Nothing here imports Apache Beam (--help imports this module).
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Optional, Tuple

CLUSTER, TOPIC, FIELD = "cluster", "topic", "field"
FIELD_PREFIX = "field:"
BUNDLED = "bundled"
MISSING_GROUP = "(missing)"


@dataclasses.dataclass(frozen=True)
class GroupingConfig:
  """balance_by: cluster, topic or field; field: the field's dotted path (field only);
  topic_head: `bundled` or the path of a topic head .npz."""
  balance_by: str = CLUSTER
  field: Optional[str] = None
  topic_head: str = BUNDLED

  @property
  def field_path(self) -> Tuple[str, ...]:
    return tuple(self.field.split(".")) if self.field else ()

  @property
  def spec(self) -> str:
    """As given on the command line (cluster, topic, field:NAME)."""
    return FIELD_PREFIX + self.field if self.balance_by == FIELD else self.balance_by


DEFAULT = GroupingConfig()


def parse_balance_by(value: str) -> Tuple[str, Optional[str]]:
  """'cluster' | 'topic' | 'field:a.b' -> (kind, dotted path or None)."""
  value = value.strip()
  if value in (CLUSTER, TOPIC):
    return value, None
  if value.startswith(FIELD_PREFIX):
    path = value[len(FIELD_PREFIX):]
    if not path or any(not part for part in path.split(".")):
      raise ValueError(f"--balance_by={value}: give a field name after field: (a dotted "
                       "path such as field:meta.source for a nested field)")
    return FIELD, path
  raise ValueError(f"--balance_by={value}: use cluster, topic or field:NAME")


def _balance_by(value: str) -> str:
  try:
    parse_balance_by(value)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None
  return value


def add_options(parser: argparse.ArgumentParser) -> None:
  g = parser.add_argument_group(
      "grouping", "The groups the balanced samplers cap, and the topic of each document.")
  g.add_argument(
      "--balance_by", type=_balance_by, default=CLUSTER, metavar="cluster|topic|field:NAME",
      help="The groups whose sizes the balanced samplers (balanced, balanced_far, "
           "ask_llm_balanced, quality_head_balanced) cap: cluster (default: k-means "
           "clusters of the embeddings), topic (the topic head's WebOrganizer topic: the "
           "better choice for topic coverage on skewed corpora), or field:NAME (an input "
           "field's value, a dotted path for a nested field, e.g. field:meta.source; "
           "records without it form one \"(missing)\" group).")
  g.add_argument(
      "--topic_head", default=BUNDLED, metavar="bundled|PATH",
      help="The topic head that gives every embedded document topic, topic_name and "
           "topic_confidence: bundled (default; fitted on the bundled embedding model's "
           "vectors, so used only with it) or a .npz written by scripts/fit_topic_head.py "
           "on this --embedding_model.")


def from_args(args: argparse.Namespace) -> GroupingConfig:
  kind, field = parse_balance_by(getattr(args, "balance_by", CLUSTER) or CLUSTER)
  topic_head = getattr(args, "topic_head", BUNDLED) or BUNDLED
  sampler = getattr(args, "sampler", None)
  if kind != CLUSTER and sampler is not None:
    from beam_pipelines import samplers
    balanced = [s.name for s in samplers.SAMPLERS.values() if s.quota_key is not None]
    if sampler not in balanced:
      raise ValueError(f"--balance_by={args.balance_by} applies to the balanced samplers "
                       f"({', '.join(balanced)}), not --sampler={sampler}")
  if kind == TOPIC and topic_head == BUNDLED and getattr(
      args, "embedding_model", "default") != "default":
    raise ValueError(
        "--balance_by=topic with the bundled topic head needs the bundled embedding model "
        f"(it reads its vectors), not --embedding_model={args.embedding_model}: pass "
        "--topic_head=PATH fitted on this model (scripts/fit_topic_head.py)")
  if topic_head != BUNDLED and "://" not in topic_head:  # a local file: read it now
    import os
    if not os.path.isfile(topic_head):
      raise ValueError(f"--topic_head={topic_head} does not exist")
    from models import topic_head as topic_head_lib
    with open(topic_head, "rb") as f:
      topic_head_lib.head_from_bytes(f.read(), topic_head)  # one-line ValueError
  return GroupingConfig(balance_by=kind, field=field, topic_head=topic_head)


def computes_topics(job) -> bool:
  """Whether a job that embeds also gives each document its topic: always with a
  --topic_head file; with the bundled head only on the bundled embedding model."""
  grouping = getattr(job, "grouping", DEFAULT)
  if grouping.topic_head != BUNDLED or grouping.balance_by == TOPIC:
    return True
  return getattr(job.embedding, "model", "default") == "default"
