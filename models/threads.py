"""Threads per worker process for the models' matrix products.

torch uses one thread per core in every process. With `--direct_num_workers=N
--direct_running_mode=multi_processing` the local runner starts N worker processes, each
with a model, so N x cores threads fight over the cores and two processes ran slower than
one. Each process gets cores // N threads instead (at least 1).

The local runner's worker processes cannot see the pipeline options (their
PIPELINE_OPTIONS are empty), so the launcher notes N and its own process id in an
environment variable that the worker processes inherit (note_local_workers); a model
process other than the launcher applies it. Other runners (Dataflow) are left alone.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Mapping, MutableMapping, Optional

_LOG = logging.getLogger(__name__)
ENV = "ASKLLM_LOCAL_WORKER_PROCESSES"  # "N@launcher pid"
_APPLIED_LOCK = threading.Lock()
_applied: Optional[int] = None


def threads_per_process(cores: int, workers: int) -> int:
  """The intra-op threads of each of `workers` processes sharing `cores` cores."""
  return max(1, int(cores) // max(1, int(workers)))


def note_local_workers(workers: int, running_mode: Optional[str],
                       environ: MutableMapping[str, str] = os.environ) -> None:
  """Called by the launcher before the run: how many local worker processes it starts."""
  n = workers if running_mode == "multi_processing" else 1
  environ[ENV] = f"{n}@{os.getpid()}"


def local_worker_processes(environ: Mapping[str, str] = os.environ) -> int:
  """How many local worker processes share this machine: the launcher's number when this
  process is one of its worker processes, else 1."""
  workers, _, launcher = environ.get(ENV, "").partition("@")
  try:
    workers, launcher = int(workers), int(launcher)
  except ValueError:
    return 1
  if launcher == os.getpid():
    return 1  # the launcher itself (models run in the worker processes)
  return workers if workers > 0 else available_cores()  # 0: one per core


def available_cores() -> int:
  """The cores this process may run on (its affinity, e.g. a container's cpuset)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not on Linux
    return os.cpu_count() or 1


def apply(environ: Mapping[str, str] = os.environ, cores: Optional[int] = None) -> int:
  """Sets torch's threads for this process (once) and returns them."""
  global _applied
  import torch
  with _APPLIED_LOCK:
    workers = local_worker_processes(environ)
    if workers > 1:
      n = threads_per_process(cores or available_cores(), workers)
      if n != _applied:
        torch.set_num_threads(n)
        _LOG.info("%d local worker processes: %d torch threads in this one", workers, n)
      _applied = n
    return torch.get_num_threads()
