"""Runs the real job the way a user does, in a subprocess, and times it."""
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_select_data(argv, what="run") -> float:
  """Wall seconds of `python -m beam_pipelines.select_data ARGV` (offline, from the repo);
  exits with the job's last stderr lines when it fails."""
  env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO)
  start = time.time()
  done = subprocess.run([sys.executable, "-m", "beam_pipelines.select_data", *argv],
                        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                        text=True)
  elapsed = time.time() - start
  if done.returncode != 0:
    raise SystemExit(f"{what} failed:\n{done.stderr[-3000:]}")
  return elapsed
