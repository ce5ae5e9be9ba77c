"""The cascade options (see feature_options.py): their argparse group and CascadeConfig.

Nothing here imports Apache Beam (--help imports this module).
"""
from __future__ import annotations

import argparse
import dataclasses


@dataclasses.dataclass(frozen=True)
class CascadeConfig:
  """(to be filled by the cascade feature)"""


DEFAULT = CascadeConfig()


def add_options(parser: argparse.ArgumentParser) -> None:
  """Adds this feature's argparse group (none yet)."""
  del parser


def from_args(args: argparse.Namespace) -> CascadeConfig:
  del args
  return DEFAULT
