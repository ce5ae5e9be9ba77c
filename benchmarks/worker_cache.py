"""Beam's SDK worker with its bundle-processor cache emptied sooner.

A Beam SDK worker keeps each stage's bundle processor (its operations, their output
streams and buffers of up to about 16 MB each) until the stage has been idle for 60 s
(apache_beam/runners/worker/sdk_worker.py,
DEFAULT_BUNDLE_PROCESSOR_CACHE_SHUTDOWN_THRESHOLD_S), so a job with many short stages in
a row holds many of them at once. `benchmarks.streamed_shuffle --processor_cache_s=S`
starts its workers with `python -m benchmarks.worker_cache`, which sets that threshold
(and the check's period) to S seconds, to measure how much of a worker's memory is that
cache.
"""
from __future__ import annotations

import os
import sys

ENV = "BENCHMARK_PROCESSOR_CACHE_S"


def run_worker() -> None:
  from apache_beam.runners.worker import sdk_worker, sdk_worker_main
  sdk_worker.DEFAULT_BUNDLE_PROCESSOR_CACHE_SHUTDOWN_THRESHOLD_S = float(os.environ[ENV])
  sdk_worker_main.main(sys.argv)


if __name__ == "__main__":
  run_worker()
