"""Groups in the job and the report (issue 31): the --balance_by field carried on each
document, groups.json (per group: documents, selected share, each score's median and
quartiles, transforms/group_stats.py) and its report section, "Selected share and scores
per group", which shows a quality signal that favours some groups.

The groups of a run: the --balance_by field's values, else the topics (when the job
computed them); a run with neither writes no groups.json.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from apache_beam.io.filesystems import FileSystems

from beam_pipelines import grouping_options as grouping
from beam_pipelines.report_html import _esc, _num, _table
from transforms.output_layout import GROUPS_FILE

_SHOWN_SCORES = 4  # score columns in the table (the first ones of the run)


def _config(job) -> grouping.GroupingConfig:
  return getattr(job, "grouping", grouping.DEFAULT)


def copy_fields(job) -> List[str]:
  """The input fields read into Document.extra: --keep_fields and, for
  --balance_by=field:a.b, the field's top-level name (its value travels as it is read, a
  dict for a nested one)."""
  fields = list(job.keep_fields or ())
  g = _config(job)
  if g.balance_by == grouping.FIELD:
    top = g.field_path[0]
    for name in (g.field, top):
      if name not in fields:
        fields.append(name)
  return fields


def with_group_field(job, docs):
  """Documents with their --balance_by field's group (transforms.topics.GROUP_FIELD),
  the copied field dropped from Document.extra unless --keep_fields names it."""
  g = _config(job)
  if g.balance_by != grouping.FIELD:
    return docs
  import apache_beam as beam
  from transforms import topics
  return docs | "GroupField" >> beam.Map(
      topics.field_group_fn(g.field_path, job.keep_fields or ()))


def report_kind(job, signal_names) -> Optional[str]:
  """What the report groups by: field:NAME, topic, or None."""
  g = _config(job)
  if g.balance_by == grouping.FIELD:
    return g.spec
  return "topic" if "topics" in signal_names else None


def write_group_stats(job, ranked, rest, staging: str, score_names) -> List[Any]:
  """Adds the steps that write groups.json; returns what finishes when it is written
  (nothing when the run has no groups or no report)."""
  from beam_pipelines.graph import signal_names
  kind = report_kind(job, signal_names(job))
  if kind is None or not job.report:
    return []
  import apache_beam as beam
  from transforms import group_stats, topics
  from transforms import write as write_lib
  names = [n for n in score_names if n not in ("topic", "cluster")]
  group_of = topics.report_group_fn("field" if kind.startswith("field") else "topic")
  selected = group_stats.selected_documents(ranked)
  path = FileSystems.join(staging, GROUPS_FILE)
  stats = ({"selected": selected, "not_selected": rest}
           | "GroupStatistics" >> group_stats.GroupStatistics(group_of, names, kind,
                                                               job.seed))
  return [stats | "WriteGroups" >> beam.Map(lambda s: write_lib.write_json_atomic(path, s))]


def load(staging: str) -> Optional[Dict[str, Any]]:
  path = FileSystems.join(staging, GROUPS_FILE)
  if not FileSystems.exists(path):
    return None
  with FileSystems.open(path) as f:
    return json.loads(f.read().decode("utf-8"))


def _cell(summary: Optional[dict]) -> str:
  if not summary:
    return "–"
  return (f"{_num(summary['median'], 3)} <span class='muted'>[{_num(summary['p25'], 3)}, "
          f"{_num(summary['p75'], 3)}]</span>")


def section(groups: Optional[Dict[str, Any]]) -> str:
  """The report's per-group section (empty without groups.json)."""
  if not groups or not groups.get("groups"):
    return ""
  kind = groups["balance_by"]
  what = "topic (the topic head)" if kind == "topic" else f"the input field {kind[6:]}"
  total, chosen = groups["documents"], groups["selected"]
  overall = chosen / total if total else 0.0
  names = groups["score_names"][:_SHOWN_SCORES]
  rows = []
  for g in groups["groups"]:
    share = g["selected"] / g["documents"] if g["documents"] else 0.0
    rows.append([_esc(g["group"]), g["documents"], g["selected"], f"{share:.1%}",
                 f"{share / overall:.2f}" if overall else "–"]
                + [_cell(g["scores"].get(n)) for n in names])
  shown = len(groups["groups"])
  more = (f" The {shown} largest of {groups['group_count']:,} groups."
          if groups["group_count"] > shown else "")
  return ("<h2 id='groups'>Selected share and scores per group</h2>"
          f"<p class='muted'>Groups: {_esc(what)}; {groups['group_count']:,} groups, "
          f"{chosen:,} of {total:,} documents selected ({overall:.1%}).{more} 'vs all': the "
          "group's selected share over the overall share (1: as random). Scores: median "
          "[25th, 75th percentile] over the group's documents (a sample of at most "
          f"{groups['sample_per_group']:,} per group); a score whose medians differ "
          "widely between groups favours some of them.</p>"
          + _table(["group", "documents", "selected", "share", "vs all", *names], rows,
                   numeric=(1, 2)))
