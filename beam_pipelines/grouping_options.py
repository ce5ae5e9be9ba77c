"""The grouping options (see feature_options.py): their argparse group and GroupingConfig.

Nothing here imports Apache Beam (--help imports this module).
"""
from __future__ import annotations

import argparse
import dataclasses


@dataclasses.dataclass(frozen=True)
class GroupingConfig:
  """(to be filled by the grouping feature)"""


DEFAULT = GroupingConfig()


def add_options(parser: argparse.ArgumentParser) -> None:
  """Adds this feature's argparse group (none yet)."""
  del parser


def from_args(args: argparse.Namespace) -> GroupingConfig:
  del args
  return DEFAULT
