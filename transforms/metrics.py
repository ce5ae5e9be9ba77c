"""Counters, stage clocks and progress logging, shared by the transforms.

Counts go to Beam metrics (namespace `select_data`, names like `rejected:invalid_json`),
which every runner reports; the launcher turns them into metrics.json after the run.
"""
from __future__ import annotations

import logging
import threading
import time

import apache_beam as beam

NAMESPACE = "select_data"
_LOG = logging.getLogger(__name__)

# Every counter of the job (namespace select_data). Per-stage document counters carry
# the stage's name; families end in ':' and take a suffix (a reason, a model).
READ = "read"                            # records read from the input files
VALID = "valid"                          # records that became Documents
REJECTED_PREFIX = "rejected:"            # + reason (records.py), one per rejected record
SCORED = "scored"                        # documents through Ask-LLM
PERPLEXITY = "perplexity"                # documents through the perplexity scorer
EMBEDDED = "embedded"                    # documents through the embedding model
SCORING_FAILED_PREFIX = "scoring_failed:"  # + model namespace (ask_llm, embeddings, ...)
# The score cache, per model namespace: documents a model stage took from the cache or
# ran the model on (they add up to the documents the stage needed), model loads, and
# the cache's own health.
FROM_CACHE_PREFIX = "from_cache:"
INFERRED_PREFIX = "inferred:"
MODEL_LOADS_PREFIX = "model_loads:"
CACHE_WRITTEN_PREFIX = "cache_written:"              # entries written
CACHE_WRITE_FAILED_PREFIX = "cache_write_failed:"    # entries that could not be written
CACHE_UNREADABLE_PREFIX = "cache_unreadable_files:"  # files skipped (corrupt, wrong shape)
CACHE_INVALID_PREFIX = "cache_invalid_entries:"      # entries skipped (a wrong value)
TEACHER = "teacher"                      # teacher documents the head is fitted on
TEACHER_HELD_BACK = "teacher_held_back"  # teacher documents held back for its fit report
QUALITY_POOL = "quality_pool"            # documents in a sampler's quality pool
SELECTED = "selected"                    # documents selected
STAGE_COUNTERS = (SCORED, PERPLEXITY, EMBEDDED)
COUNTERS = (READ, VALID, SCORED, PERPLEXITY, EMBEDDED, TEACHER, TEACHER_HELD_BACK,
            QUALITY_POOL, SELECTED)
FAMILIES = (REJECTED_PREFIX, SCORING_FAILED_PREFIX, FROM_CACHE_PREFIX, INFERRED_PREFIX,
            MODEL_LOADS_PREFIX, CACHE_WRITTEN_PREFIX, CACHE_WRITE_FAILED_PREFIX,
            CACHE_UNREADABLE_PREFIX, CACHE_INVALID_PREFIX)


def counter(name: str):
  """A counter of the job; `name` must be declared above (a name or a family + suffix)."""
  if name not in COUNTERS and not name.startswith(FAMILIES):
    raise ValueError(f"undeclared counter {name!r}: declare it in transforms/metrics.py")
  return beam.metrics.Metrics.counter(NAMESPACE, name)


def by_suffix(counts, prefix: str):
  """{suffix: value} of the counters of one family, sorted by suffix."""
  return {k[len(prefix):]: v for k, v in sorted(counts.items()) if k.startswith(prefix)}


def stage_clock(stage: str) -> None:
  """Records 'now' for a stage; the min and max over all calls give its wall time."""
  beam.metrics.Metrics.distribution(NAMESPACE, f"clock_ms:{stage}").update(
      int(time.time() * 1000))


class _Progress:
  """Per-process progress of one stage, logged at most every `interval` seconds."""

  def __init__(self):
    self.lock = threading.Lock()
    self.done = 0
    self.start = None
    self.last_log = 0.0


_PROGRESS = {}
_PROGRESS_LOCK = threading.Lock()


def progress_line(stage: str, done: int, total: int, elapsed: float) -> str:
  rate = done / elapsed if elapsed > 0 else 0.0
  if total and rate > 0:
    left = max(total - done, 0) / rate
    return (f"{stage}: {done}/{total} documents ({100.0 * done / total:.1f}%), "
            f"{rate:.1f} docs/s, about {left / 60:.1f} min left")
  return f"{stage}: {done} documents, {rate:.1f} docs/s"


class ModelProgress:
  """Progress of a model stage, logged from the inference step itself after each batch
  (at most every `interval_s`): with one bundle (the local runner) no document leaves
  that step before every batch is done, so a counter downstream would log nothing until
  the end. Per process; the rate counts from the start of its first batch."""

  def __init__(self, stage: str, interval_s: float = 30.0):
    self._interval = interval_s
    self._stage = stage
    with _PROGRESS_LOCK:
      self._state = _PROGRESS.setdefault("model:" + stage, _Progress())

  def batch_started(self) -> None:
    with self._state.lock:
      if self._state.start is None:
        self._state.start = self._state.last_log = time.time()

  def batch_done(self, documents: int) -> None:
    s = self._state
    now = time.time()
    with s.lock:
      s.done += documents
      if s.start is not None and now - s.last_log >= self._interval:
        s.last_log = now
        _LOG.info("%s (this worker process)", progress_line(
            self._stage, s.done, 0, now - s.start))


class LogProgress(beam.DoFn):
  """Counts documents past a stage and logs progress (done, docs/s, time left).

  `total` (a side input, the number of valid documents) makes the time estimate; with
  several worker processes each logs its own share against the whole total, so the
  estimate is conservative.
  """

  def __init__(self, stage: str, interval_s: float = 30.0):
    self._stage = stage
    self._interval = interval_s

  def setup(self):
    with _PROGRESS_LOCK:
      self._state = _PROGRESS.setdefault(self._stage, _Progress())
    self._counter = counter(self._stage)

  def process(self, element, total=0):
    stage_clock(self._stage)
    self._counter.inc()
    s = self._state
    now = time.time()
    with s.lock:
      if s.start is None:
        s.start = now
        s.last_log = now
      s.done += 1
      if now - s.last_log >= self._interval:
        s.last_log = now
        _LOG.info(progress_line(self._stage, s.done, total, now - s.start))
    yield element
