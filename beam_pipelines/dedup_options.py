"""The dedup options (see feature_options.py): their argparse group and DedupConfig.

--dedup removes copies right after validation, before any model (transforms/dedup.py):
exact copies (same normalised text) by default, near-copies with --dedup=minhash.

Nothing here imports Apache Beam (--help imports this module).
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Optional

from beam_pipelines.option_types import fraction, positive_int

MODES = ("exact", "minhash", "none")
# 20 bands of 5 rows: two documents at Jaccard 0.8 share a band with probability 0.9996,
# at 0.7 0.975, at 0.5 0.47; the signatures' Jaccard estimate (>= --minhash_threshold)
# then confirms each candidate, so the threshold, not the bands, sets precision. 0.8 is
# the threshold of the peers' defaults (datatrove's 14x8 bands: ~0.72 at the 50% point;
# NeMo Curator 0.8).
DEFAULT_SHINGLE, DEFAULT_BANDS, DEFAULT_ROWS, DEFAULT_THRESHOLD = 5, 20, 5, 0.8
# Rounds of min-label propagation over the duplicate groups: a group of near-copies
# linked through k band buckets needs k rounds; most are stars (one round).
DEFAULT_ROUNDS = 6


@dataclasses.dataclass(frozen=True)
class DedupConfig:
  """mode: exact | minhash | none. For minhash (which runs after exact): word n-gram
  size, permutations (at least bands x rows; the extra ones sharpen the confirming
  Jaccard estimate), LSH bands and rows, the confirming Jaccard threshold and the rounds
  of connected components."""
  mode: str = "exact"
  shingle: int = DEFAULT_SHINGLE
  bands: int = DEFAULT_BANDS
  rows: int = DEFAULT_ROWS
  permutations: Optional[int] = None
  threshold: float = DEFAULT_THRESHOLD
  rounds: int = DEFAULT_ROUNDS

  @property
  def enabled(self) -> bool:
    return self.mode != "none"

  @property
  def num_perm(self) -> int:
    return self.permutations or self.bands * self.rows


DEFAULT = DedupConfig()


def add_options(parser: argparse.ArgumentParser) -> None:
  group = parser.add_argument_group(
      "dedup", "Copies removed before any model: in each group of copies one document is "
      "kept (the smallest hash of --seed and id), the others are written to scores/ with "
      "copy_of (the kept id) and copy_kind, never scored and never selected.")
  group.add_argument("--dedup", choices=MODES, default=DEFAULT.mode,
                     help="exact: documents whose text is the same after Unicode NFKC and "
                          "whitespace collapsing; minhash: exact, then near-copies (word "
                          "n-gram MinHash, LSH bands, confirmed by the Jaccard estimate); "
                          "none: keep every document. Default: exact.")
  group.add_argument("--minhash_shingle", type=positive_int, default=DEFAULT_SHINGLE,
                     help=f"--dedup=minhash: words per shingle. Default: {DEFAULT_SHINGLE}.")
  group.add_argument("--minhash_bands", type=positive_int, default=DEFAULT_BANDS,
                     help=f"--dedup=minhash: LSH bands. Default: {DEFAULT_BANDS}.")
  group.add_argument("--minhash_rows", type=positive_int, default=DEFAULT_ROWS,
                     help=f"--dedup=minhash: signature values per band. Default: "
                          f"{DEFAULT_ROWS}.")
  group.add_argument("--minhash_permutations", type=positive_int, default=None,
                     help="--dedup=minhash: MinHash permutations, at least bands x rows. "
                          "Default: bands x rows.")
  group.add_argument("--minhash_threshold", type=fraction, default=DEFAULT_THRESHOLD,
                     help="--dedup=minhash: the Jaccard estimate at or above which two "
                          f"documents sharing a band are copies. Default: {DEFAULT_THRESHOLD}.")
  group.add_argument("--minhash_rounds", type=positive_int, default=DEFAULT_ROUNDS,
                     help="--dedup=minhash: rounds of connected components (a counter "
                          "reports documents whose group had not settled). Default: "
                          f"{DEFAULT_ROUNDS}.")


def from_args(args: argparse.Namespace) -> DedupConfig:
  mode = getattr(args, "dedup", DEFAULT.mode)
  config = DedupConfig(
      mode=mode, shingle=getattr(args, "minhash_shingle", DEFAULT_SHINGLE),
      bands=getattr(args, "minhash_bands", DEFAULT_BANDS),
      rows=getattr(args, "minhash_rows", DEFAULT_ROWS),
      permutations=getattr(args, "minhash_permutations", None),
      threshold=getattr(args, "minhash_threshold", DEFAULT_THRESHOLD),
      rounds=getattr(args, "minhash_rounds", DEFAULT_ROUNDS))
  tuned = dataclasses.replace(config, mode=DEFAULT.mode) != DEFAULT
  if mode != "minhash":
    if tuned:
      raise ValueError("the --minhash_* options apply with --dedup=minhash")
    return DEFAULT if mode == DEFAULT.mode else config
  if config.num_perm < config.bands * config.rows:
    raise ValueError(f"--minhash_permutations={config.num_perm} is fewer than --minhash_bands "
                     f"x --minhash_rows = {config.bands * config.rows}")
  return config
