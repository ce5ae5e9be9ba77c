"""Runs the real job the way a user does, in a subprocess, and times it."""
import os
import resource
import subprocess
import sys
import time
from typing import Tuple

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_select_data(argv, what="run") -> float:
  """Wall seconds of `python -m beam_pipelines.select_data ARGV` (offline, from the repo);
  exits with the job's last stderr lines when it fails."""
  return time_select_data(argv, what)[0]


def time_select_data(argv, what="run") -> Tuple[float, float]:
  """(wall seconds, CPU seconds: user + system) of one run_select_data. The CPU time is
  the job's own, so other work on a shared machine changes it less than the wall time."""
  env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO)
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.time()
  done = subprocess.run([sys.executable, "-m", "beam_pipelines.select_data", *argv],
                        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                        text=True)
  elapsed = time.time() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  if done.returncode != 0:
    raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  return elapsed, cpu
