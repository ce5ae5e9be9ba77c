"""The precision options (see feature_options.py): their argparse group and PrecisionConfig.

Nothing here imports Apache Beam (--help imports this module).
"""
from __future__ import annotations

import argparse
import dataclasses


@dataclasses.dataclass(frozen=True)
class PrecisionConfig:
  """(to be filled by the precision feature)"""


DEFAULT = PrecisionConfig()


def add_options(parser: argparse.ArgumentParser) -> None:
  """Adds this feature's argparse group (none yet)."""
  del parser


def from_args(args: argparse.Namespace) -> PrecisionConfig:
  del args
  return DEFAULT
