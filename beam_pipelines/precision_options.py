"""The precision options (see feature_options.py): their argparse group and PrecisionConfig.

`--precision` is resolved per model when the job is launched (models/precision.py), so
that the score cache's fingerprint and the workers use the same precision.
Nothing here imports Apache Beam (--help imports this module).
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Dict, Optional

from models import precision as precision_lib


@dataclasses.dataclass(frozen=True)
class PrecisionConfig:
  """--precision as given (each model's config holds what it resolved to)."""
  requested: str = precision_lib.AUTO


DEFAULT = PrecisionConfig()


def add_options(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group("precision")
  group.add_argument(
      "--precision", default=precision_lib.AUTO, choices=precision_lib.CHOICES,
      help="Numeric precision of the models' matrix products. auto: bf16 where the device "
           "multiplies bf16 natively (CUDA with bf16; CPUs with AMX-BF16 or AVX512-BF16) "
           "for the models whose quality holds in bf16, fp32 elsewhere; fp32; bf16 (fp16 "
           "on GPUs without bf16). Scores computed at one precision are not reused from "
           "the score cache at another.")


def from_args(args: argparse.Namespace) -> PrecisionConfig:
  value = getattr(args, "precision", precision_lib.AUTO)
  if value not in precision_lib.CHOICES:
    raise ValueError(f"--precision must be one of {', '.join(precision_lib.CHOICES)}, "
                     f"not {value!r}")
  return PrecisionConfig(requested=value)


def resolved(args: argparse.Namespace, role: str) -> str:
  """fp32 or bf16 for one model (`role`: scorer, perplexity, embedding) of this job."""
  return precision_lib.resolve(getattr(args, "precision", precision_lib.AUTO), role,
                               getattr(args, "device", precision_lib.AUTO))


def note_local_workers(options) -> None:
  """Tells the local runner's worker processes how many of them share the cores, so
  that each sets its torch threads (models/threads.py). `options`: PipelineOptions."""
  from apache_beam.options.pipeline_options import DirectOptions
  from models import threads
  direct = options.view_as(DirectOptions)
  workers = 1 if direct.direct_num_workers is None else direct.direct_num_workers
  threads.note_local_workers(workers, direct.direct_running_mode)  # 0: one per core


def metrics_part(job, settings: Optional[Dict[str, Dict[str, Any]]] = None
                 ) -> Dict[str, Any]:
  """metrics.json's `precision`: what was asked for, each model stage's precision, and
  (from the workers' model_setting counters, when a model loaded) what it ran in and
  with how many torch threads per process."""
  stages = {}
  for namespace, config in job.model_stages().items():
    stage = {"precision": config.precision}
    loaded = (settings or {}).get(namespace, {})
    for key in ("precision", "threads"):
      if key in loaded:
        stage[f"{key}_used" if key == "precision" else key] = loaded[key]
    stages[namespace] = stage
  return {"requested": job.precision.requested, "stages": stages}


def report_line(metrics: Dict[str, Any]) -> Optional[str]:
  """The report's one line: `auto: ask_llm bf16, embeddings bf16` (None without models)."""
  part = metrics.get("precision") or {}
  stages = part.get("stages") or {}
  if not stages:
    return None
  shown = []
  for namespace, stage in sorted(stages.items()):
    used = stage.get("precision_used", stage["precision"])
    threads = f", {stage['threads']} threads/process" if stage.get("threads") else ""
    shown.append(f"{namespace} {used}{threads}")
  return f"--precision={part.get('requested')}: " + "; ".join(shown)
