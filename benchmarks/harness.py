"""What the benchmarks share: data arguments, the real job in a subprocess, interleaved
A/B timing, and ROC AUC with bootstrap intervals.

Every benchmark is a module of this package, run from the repository root:

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.NAME --help

Data arguments (the FineWeb-Edu and WebOrganizer dev files) are required: no benchmark
knows where the data lives, and nothing from it is copied into the repository.

- Data: add_data_argument, read_jsonl.
- The job as a user runs it (`python -m beam_pipelines.select_data`, offline, from the
  repository, in a subprocess): run_select_data (wall seconds), time_select_data (wall
  and CPU seconds), start_select_data (a Popen, for a run to be killed).
- Interleaved timing (drift on a shared machine falls on every variant):
  interleaved_order (round r rotates the variants by r: A B, B A, A B, ...), abba_order
  (A B B A, B A A B, ...), run_interleaved (calls each variant in that order), stopwatch,
  ratios, median_ratio.
- AUC: auc / auc_pos_neg (scipy's Mann-Whitney U divided by n_pos * n_neg: P(positive
  scores above negative), ties counting 1/2, the same number as scikit-learn's
  roc_auc_score), stratified_resamples (the draws of a stratified bootstrap, the same for
  every method so that paired differences have intervals too), bootstrap_aucs, ci95
  (percentile interval), auc_with_ci.
"""
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import (Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence,
                    Tuple)

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The dev files the benchmarks read (names only: their location is an argument).
FINEWEB_EDU = "fineweb_edu_annotated_dev.jsonl"
WEBORGANIZER = "weborganizer_topics_dev.jsonl"
_DESCRIPTIONS = {
    FINEWEB_EDU: "the FineWeb-Edu annotated dev file (JSON Lines with id, text, edu_score)",
    WEBORGANIZER: "the WebOrganizer topics dev file (JSON Lines with id, text, topic_id)",
}


# ---------------------------------------------------------------------------- data

def add_data_argument(parser, flag: str = "--data", dataset: str = FINEWEB_EDU,
                      help: Optional[str] = None):  # pylint: disable=redefined-builtin
  """A required PATH argument for one of the dev files (no default: the data is not in
  the repository)."""
  described = _DESCRIPTIONS.get(dataset, dataset)
  return parser.add_argument(
      flag, required=True, metavar="PATH",
      help=help or f"{described}, e.g. .../{dataset}")


def read_jsonl(path: str) -> List[dict]:
  with open(path, encoding="utf-8") as f:
    return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------------------- the job

def job_env() -> Dict[str, str]:
  """The environment of a job run: offline, with the repository importable."""
  return dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO)


def select_data_command(argv: Sequence[str],
                        module: str = "beam_pipelines.select_data") -> List[str]:
  return [sys.executable, "-m", module, *argv]


def start_select_data(argv: Sequence[str],
                      module: str = "beam_pipelines.select_data") -> subprocess.Popen:
  """The job (or a module that runs it, e.g. benchmarks.streamed_shuffle) started in its
  own session (os.killpg(proc.pid, ...) stops all of it); stdout is discarded, stderr is
  a pipe (bytes)."""
  return subprocess.Popen(select_data_command(argv, module), cwd=REPO, env=job_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          start_new_session=True)


def time_select_data(argv: Sequence[str], what: str = "run") -> Tuple[float, float]:
  """(wall seconds, CPU seconds: user + system) of `python -m beam_pipelines.select_data
  ARGV` (offline, from the repo); exits with the job's last stderr lines when it fails.
  The CPU time is the job's own, so other work on a shared machine changes it less than
  the wall time."""
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.time()
  done = subprocess.run(select_data_command(argv), cwd=REPO, env=job_env(),
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  elapsed = time.time() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if done.returncode != 0:
    raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return elapsed, cpu


def run_select_data(argv: Sequence[str], what: str = "run") -> float:
  """Wall seconds of one time_select_data."""
  return time_select_data(argv, what)[0]


# ---------------------------------------------------------------------------- timing

def interleaved_order(names: Sequence[Hashable], rounds: int) -> List[Tuple[int, Hashable]]:
  """(round, name) pairs: round r runs the names rotated left by r (two names: A B,
  B A, A B, ...), so that slow spells of a shared machine fall on every variant."""
  names = list(names)
  out = []
  for r in range(rounds):
    k = r % len(names)
    out += [(r, name) for name in names[k:] + names[:k]]
  return out


def abba_order(names: Sequence[Hashable], pairs: int) -> List[Tuple[int, Hashable]]:
  """(pair, name) pairs for two names A, B: pair p runs A B B A when p is even and
  B A A B when odd (a linear drift cancels within each pair)."""
  names = list(names)
  out = []
  for p in range(pairs):
    order = names if p % 2 == 0 else names[::-1]
    out += [(p, name) for name in order + order[::-1]]
  return out


def run_interleaved(runs: Mapping[Hashable, Callable[[], object]],
                    order: Iterable[Tuple[int, Hashable]],
                    after: Optional[Callable[[int, Hashable, object], None]] = None
                    ) -> Dict[Hashable, list]:
  """Calls runs[name]() for each (round, name) of `order` (interleaved_order,
  abba_order); returns {name: [its results in run order]}, keyed in the order of `runs`.
  after(round, name, result) is called after each run (progress lines)."""
  results = {name: [] for name in runs}
  for r, name in order:
    value = runs[name]()
    results[name].append(value)
    if after is not None:
      after(r, name, value)
  return results


def stopwatch(fn: Callable[[], object]) -> Tuple[float, object]:
  """(seconds, fn()) by time.perf_counter."""
  start = time.perf_counter()
  value = fn()
  return time.perf_counter() - start, value


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> List[float]:
  """Per-run ratios, run i of one variant over run i of the other (same round)."""
  return [a / b for a, b in zip(numerators, denominators)]


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float:
  return statistics.median(ratios(numerators, denominators))


# ---------------------------------------------------------------------------- AUC

def auc_pos_neg(pos, neg) -> float:
  """ROC AUC: P(a positive's score > a negative's), ties counting 1/2 (scipy's
  Mann-Whitney U / (n_pos * n_neg)). NaN when either class is empty."""
  from scipy.stats import mannwhitneyu
  pos = np.asarray(pos, np.float64)
  neg = np.asarray(neg, np.float64)
  if not len(pos) or not len(neg):
    return float("nan")
  u = mannwhitneyu(pos, neg, alternative="two-sided", use_continuity=False,
                   method="asymptotic").statistic
  return float(u / (len(pos) * len(neg)))


def auc(scores, labels) -> float:
  """ROC AUC of scores for boolean labels (True = positive); NaN when a class is empty."""
  s = np.asarray(scores, np.float64)
  l = np.asarray(labels, bool)
  return auc_pos_neg(s[l], s[~l])


def stratified_resamples(labels, n: int, seed: int) -> List[Tuple[np.ndarray, np.ndarray]]:
  """n stratified bootstrap draws of (positive indices, negative indices): each class
  resampled with replacement to its own size, from np.random.default_rng(seed) (for
  each draw: the positives, then the negatives)."""
  rng = np.random.default_rng(seed)
  l = np.asarray(labels, bool)
  pos, neg = np.flatnonzero(l), np.flatnonzero(~l)
  return [(rng.choice(pos, len(pos)), rng.choice(neg, len(neg))) for _ in range(n)]


def bootstrap_aucs(scores, resamples) -> np.ndarray:
  """The AUC of scores on each draw of stratified_resamples."""
  s = np.asarray(scores)
  return np.array([auc_pos_neg(s[p], s[q]) for p, q in resamples])


def ci95(values) -> List[float]:
  """The 2.5th and 97.5th percentiles (a 95% percentile interval)."""
  lo, hi = np.percentile(values, [2.5, 97.5])
  return [float(lo), float(hi)]


def auc_with_ci(scores, labels, n: int, seed: int) -> Dict[str, object]:
  """{"auc", "ci95", "boot"}: the AUC and its stratified bootstrap interval (n draws)."""
  boot = bootstrap_aucs(scores, stratified_resamples(labels, n, seed))
  return {"auc": auc(scores, labels), "ci95": ci95(boot), "boot": boot}
