"""The value types of the job's options (argparse's `type=`) and the tables they check
against: each value's own check, the first of the checks that run before the pipeline
(checks.py lists the others in order). A refused value is argparse's one-line error,
`argument --NAME: ...`; where argparse names the type itself ("invalid _seed value:
'x'"), the name is the one these types had in options.py.

Light imports only: the parser (options.py) imports this for --help.
"""
from __future__ import annotations

import argparse
from typing import Callable, Optional, Tuple

from transforms import signals as signal_registry
from transforms.selected_formats import SELECTED_FORMATS


def _number(name: str, cast: Callable, *checks: Tuple[Callable, str], auto: bool = False):
  """An argparse type: cast(value), refused with the message of the first check whose
  test fails; with `auto` the word auto is None. argparse calls it `name`."""

  def parse(value: str):
    if auto and value == "auto":
      return None
    x = cast(value)
    for ok, message in checks:
      if not ok(x):
        raise argparse.ArgumentTypeError(message)
    return x
  parse.__name__ = name
  return parse


# ApproximateQuantiles keeps buffers proportional to the number of ranges (7.3 GB at
# 100 million); 100,000 ranges suit 10 billion documents.
MAX_RANK_PARTITIONS = 100_000
_POSITIVE_INT = (lambda i: i >= 1, "must be a positive integer")
_INF = float("inf")

fraction = _number("_fraction", float, (lambda f: 0.0 < f <= 1.0, "must be in (0, 1]"))
positive_int = _number("_positive_int", int, _POSITIVE_INT)
nonnegative_int = _number("_nonnegative_int", int,
                          (lambda i: i >= 0, "must be 0 or a positive integer"))
positive_float = _number("_positive_float", float,  # (NaN > 0 is false)
                         (lambda f: f > 0 and f != _INF, "must be a positive number"))
seed = _number("_seed", int,
               (lambda i: 0 <= i < 2 ** 63, "must be an integer from 0 to 2^63 - 1"))
rank_partitions = _number(
    "_rank_partitions", int, _POSITIVE_INT,
    (lambda i: i <= MAX_RANK_PARTITIONS,
     f"must be at most {MAX_RANK_PARTITIONS:,} (about N / 100,000 for N documents)"))
sketch_groups = _number(
    "_groups", int,
    (lambda g: g >= 0, "must be auto, 0 (independent rows) or a positive integer"),
    auto=True)
bucket_width = _number(
    "_width", float,
    (lambda w: w > 0 and w != _INF, "must be a positive finite number or auto"),
    auto=True)


def num_clusters(value: str) -> Optional[int]:
  """auto (None) or a positive number of clusters."""
  if value.strip().lower() == "auto":
    return None
  try:
    i = int(value)
  except ValueError:
    i = 0
  if i < 1:
    raise argparse.ArgumentTypeError("must be auto or a positive integer")
  return i


def boolean(value: str) -> bool:
  v = value.strip().lower()
  if v in ("true", "1", "yes"):
    return True
  if v in ("false", "0", "no"):
    return False
  raise argparse.ArgumentTypeError("must be true or false")


# A flag that also takes a value: `--overwrite`, `--overwrite=true`, `--overwrite=false`
# (Flex Template launchers always pass parameters as --name=value).
FLAG = dict(nargs="?", const=True, default=False, type=boolean, metavar="true|false")


def _words(value: str) -> Tuple[str, ...]:
  return tuple(v.strip() for v in value.split(",") if v.strip())


def csv(value: str) -> Tuple[str, ...]:
  words = _words(value)
  if not words:
    raise argparse.ArgumentTypeError("needs at least one word (comma-separated)")
  return words


# --output_format values, as --help describes each: the formats table
# (transforms/selected_formats.py).
OUTPUT_FORMAT_HELP = {f.name: f.help for f in SELECTED_FORMATS.values()}
OUTPUT_FORMATS = tuple(OUTPUT_FORMAT_HELP)


def output_formats(value: str) -> Tuple[str, ...]:
  formats = tuple(dict.fromkeys(_words(value)))
  unknown = [f for f in formats if f not in OUTPUT_FORMATS]
  if unknown or not formats:
    raise argparse.ArgumentTypeError(
        f"{', '.join(unknown) or 'nothing'}: choose from {', '.join(OUTPUT_FORMATS)}")
  return formats


# Names a copied input field cannot take: the outputs' own columns, and every column of
# a registered signal.
RESERVED_FIELDS = ("id", "text", "rank", "source", "selected", "targets", "num_tokens",
                   "other_scores")


def field_names(value: str) -> Tuple[str, ...]:
  names = _words(value)
  taken = set(RESERVED_FIELDS) | {c.name for c in signal_registry.all_columns()}
  clash = [n for n in names if n in taken or n.endswith("_error")]
  if clash:
    raise argparse.ArgumentTypeError(
        f"{', '.join(clash)}: the outputs already have a column of that name")
  if len(set(names)) != len(names):
    raise argparse.ArgumentTypeError("a field is named twice")
  return names


def registered_signals() -> Tuple[str, ...]:
  return tuple(signal_registry.REGISTRY)


def signal_names(value: str) -> Tuple[str, ...]:
  """--signals: names from the registry of signals (transforms/signals.py)."""
  names = tuple(dict.fromkeys(_words(value)))
  unknown = [n for n in names if n not in signal_registry.REGISTRY]
  if unknown:
    raise argparse.ArgumentTypeError(
        f"{', '.join(unknown)}: not a registered signal; choose from "
        f"{', '.join(registered_signals())}")
  return names
