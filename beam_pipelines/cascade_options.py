"""The cascade options (see feature_options.py): their argparse group and CascadeConfig.

--judge_fraction=F puts a cheap signal (--cascade_signal, default the bundled quality
head) in front of the Ask-LLM judge: the judge scores only the cheap signal's top F, plus
an audit (a hash-chosen --audit_fraction of the documents below the cut) from which every
run estimates the recall of the cascade (transforms/cascade.py).

Nothing here imports Apache Beam (--help imports this module).
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Optional

from beam_pipelines.option_types import fraction

# The samplers that rank by the judge (a cascade is meaningless for the others).
JUDGE_SAMPLERS = ("ask_llm", "ask_llm_density", "ask_llm_balanced")
HEAD_SIGNAL = "quality_head"
# 2% of the documents below the cut: at F = 0.3 the audit costs 1.4% more judge calls,
# and on a million documents kept at 10% it finds ~100 of the judge's selection below
# the cut when the recall is 95%, which puts the recall's interval at about +-1 point.
# On small corpora pass a larger one (the interval says how little 2% found).
DEFAULT_AUDIT_FRACTION = 0.02


@dataclasses.dataclass(frozen=True)
class CascadeConfig:
  """judge_fraction: the share of documents the judge scores by the cheap signal's rank
  (None: no cascade, the judge scores everything); audit_fraction: the share of the
  documents below the cut judged as well (the recall estimate); signal: the cheap
  signal (a registered signal name)."""
  judge_fraction: Optional[float] = None
  audit_fraction: float = DEFAULT_AUDIT_FRACTION
  signal: str = HEAD_SIGNAL

  @property
  def enabled(self) -> bool:
    return self.judge_fraction is not None

  @property
  def uses_head(self) -> bool:
    """The cheap signal is the quality head (it needs the embeddings and a head)."""
    return self.enabled and self.signal == HEAD_SIGNAL

  @property
  def column(self) -> Optional[str]:
    """The cheap signal's score column, the cut's key."""
    return cheap_column(self.signal)


DEFAULT = CascadeConfig()


def _unit_interval(value: str) -> float:
  try:
    f = float(value)
  except ValueError:
    raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
  if not 0.0 <= f <= 1.0:
    raise argparse.ArgumentTypeError(f"{value} must be in [0, 1]")
  return f


def add_options(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group(
      "cascade", "A cheap signal in front of the Ask-LLM judge: the judge scores only the "
      "cheap signal's best documents and an audit of the rest, and the run estimates "
      "what the cut cost (recall of the full judge's selection, with a 95%% interval).")
  group.add_argument("--judge_fraction", type=fraction, default=None,
                     help=f"{', '.join(JUDGE_SAMPLERS)}: the judge scores only the top F "
                          "of the documents by --cascade_signal (plus the audit); they "
                          "rank first, by the judge, the others after them by the cheap "
                          "score. F must hold the selection (and the quality pool). "
                          "Default: none (the judge scores everything).")
  group.add_argument("--audit_fraction", type=_unit_interval, default=DEFAULT_AUDIT_FRACTION,
                     help="With --judge_fraction: the share of the documents below the cut, "
                          "chosen by a hash of --seed and id, that the judge scores as "
                          "well, to estimate the cascade's recall (0: no estimate). "
                          f"Default: {DEFAULT_AUDIT_FRACTION}.")
  group.add_argument("--cascade_signal", default=HEAD_SIGNAL,
                     help="With --judge_fraction: the cheap signal that ranks every "
                          "document: quality_head (the bundled head, or --quality_head="
                          "PATH) or a registered simple signal with a higher-is-better "
                          f"score. Default: {HEAD_SIGNAL}.")


def _check_signal(name: str) -> None:
  if name == HEAD_SIGNAL:
    return
  from transforms import signals  # the registry: light, no Beam
  signal = signals.REGISTRY.get(name)
  if signal is None or signal.per_document is None or cheap_column(name) is None:
    raise ValueError(f"--cascade_signal={name} is not a cheap signal: use {HEAD_SIGNAL} or a "
                     "registered simple signal with a higher-is-better float score")


def cheap_column(name: str) -> Optional[str]:
  """The score column of a cheap signal (its first higher-is-better float column)."""
  from transforms import signals
  signal = signals.REGISTRY.get(name)
  for column in (signal.writes if signal is not None else ()):
    if column.dtype == signals.FLOAT and column.higher_is_better:
      return column.name
  return None


def from_args(args: argparse.Namespace) -> CascadeConfig:
  fraction = getattr(args, "judge_fraction", None)
  audit = getattr(args, "audit_fraction", DEFAULT_AUDIT_FRACTION)
  signal = getattr(args, "cascade_signal", HEAD_SIGNAL)
  if fraction is None:
    if audit != DEFAULT_AUDIT_FRACTION or signal != HEAD_SIGNAL:
      raise ValueError("--audit_fraction and --cascade_signal apply with --judge_fraction")
    return DEFAULT
  if args.sampler not in JUDGE_SAMPLERS:
    raise ValueError(f"--judge_fraction cascades the Ask-LLM judge: use it with "
                     f"--sampler={' or '.join(JUDGE_SAMPLERS)}, not --sampler={args.sampler}")
  if getattr(args, "keep_fraction", None) is None:
    raise ValueError("--judge_fraction needs --keep_fraction (the cut is a share of the "
                     "documents; --keep_count and --keep_tokens are not supported yet)")
  _check_signal(signal)
  if signal == HEAD_SIGNAL and (getattr(args, "teacher_field", None) is not None
                                or getattr(args, "teacher_fraction", None) is not None):
    raise ValueError("the cascade applies a saved quality head (the bundled one, or "
                     "--quality_head=PATH): drop --teacher_field/--teacher_fraction")
  needed, what = args.keep_fraction, "the selection"
  if args.sampler == "ask_llm_density":
    needed, what = min(1.0, args.keep_fraction * args.quality_pool_factor), "the quality pool"
  if fraction < needed - 1e-12:
    raise ValueError(f"--judge_fraction={fraction:g} cannot hold {what} ({needed:g} of the "
                     f"documents): give --judge_fraction of at least {needed:g}")
  return CascadeConfig(judge_fraction=fraction, audit_fraction=audit, signal=signal)
