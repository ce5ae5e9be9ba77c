"""Option groups that live beside the feature they configure.

Each module listed in FEATURES has `add_options(parser)` (its argparse group) and
`from_args(args)` (a frozen dataclass held on JobConfig under the module's NAME; raises
ValueError with a one-line message for values that cannot be used together). Keeping
them apart keeps options.py and config.py small, and one feature's options in one file.
Nothing here imports Apache Beam (--help imports this module).
"""
from __future__ import annotations

import argparse
import importlib
from typing import Any, Dict

# NAME -> module (the JobConfig field of the same name holds its config).
FEATURES = {
    "dedup": "beam_pipelines.dedup_options",
    "cascade": "beam_pipelines.cascade_options",
    "grouping": "beam_pipelines.grouping_options",
    "precision": "beam_pipelines.precision_options",
}


def _module(name: str):
  return importlib.import_module(FEATURES[name])


def add_all(parser: argparse.ArgumentParser) -> None:
  for name in FEATURES:
    _module(name).add_options(parser)


def configs(args: argparse.Namespace) -> Dict[str, Any]:
  """{NAME: its config} for JobConfig(**...)."""
  return {name: _module(name).from_args(args) for name in FEATURES}


def defaults() -> Dict[str, Any]:
  """{NAME: its default config} (a JobConfig built without a command line)."""
  return {name: _module(name).DEFAULT for name in FEATURES}
