"""The dedup options (see feature_options.py): their argparse group and DedupConfig.

Nothing here imports Apache Beam (--help imports this module).
"""
from __future__ import annotations

import argparse
import dataclasses


@dataclasses.dataclass(frozen=True)
class DedupConfig:
  """(to be filled by the dedup feature)"""


DEFAULT = DedupConfig()


def add_options(parser: argparse.ArgumentParser) -> None:
  """Adds this feature's argparse group (none yet)."""
  del parser


def from_args(args: argparse.Namespace) -> DedupConfig:
  del args
  return DEFAULT
