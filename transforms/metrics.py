"""Counters, stage clocks and progress logging, shared by the transforms.

Counts go to Beam metrics (namespace `select_data`, names like `rejected:invalid_json`),
which every runner reports; the launcher turns them into metrics.json after the run.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Optional

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
# Documents queued for a model (cache misses): with inferred:, a stage's progress in a
# runner's monitoring UI (Dataflow's job page shows every counter, summed over workers).
QUEUED_PREFIX = "queued:"
MODEL_LOADS_PREFIX = "model_loads:"
# + "<model>:<setting>=<value>", once per model load: a setting the model resolved itself
# (e.g. ask_llm:chat_template=on for --chat_template=auto).
MODEL_SETTING_PREFIX = "model_setting:"
CACHE_WRITTEN_PREFIX = "cache_written:"              # entries written
CACHE_WRITE_FAILED_PREFIX = "cache_write_failed:"    # entries that could not be written
CACHE_UNREADABLE_PREFIX = "cache_unreadable_files:"  # files skipped (corrupt, wrong shape)
CACHE_INVALID_PREFIX = "cache_invalid_entries:"      # entries skipped (a wrong value)
TEACHER = "teacher"                      # teacher documents the head is fitted on
TEACHER_HELD_BACK = "teacher_held_back"  # teacher documents held back for its fit report
QUALITY_POOL = "quality_pool"            # documents in a sampler's quality pool
SELECTED = "selected"                    # documents selected
SELECTED_TOKENS = "selected_tokens"      # their tokens (with --tokenizer)
SEMDEDUP_DUPLICATES = "semdedup:duplicates"      # documents SemDeDup marked as duplicates
SEMDEDUP_SPLIT_GROUPS = "semdedup:split_groups"  # groups over --semdedup_max_group, chunked
DUPLICATES_PREFIX = "duplicates:"     # + exact | minhash: copies removed by --dedup
DEDUP_UNCONVERGED = "dedup_unconverged"  # nodes whose dedup group had not settled
CASCADE_POOL = "cascade:pool"            # --judge_fraction: judged, in the cheap signal's top F
CASCADE_AUDITED = "cascade:audited"      # judged, below the cut (the audit)
CASCADE_NOT_JUDGED = "cascade:not_judged"  # below the cut, not judged
STAGE_COUNTERS = (SCORED, PERPLEXITY, EMBEDDED)
COUNTERS = (READ, VALID, SCORED, PERPLEXITY, EMBEDDED, TEACHER, TEACHER_HELD_BACK,
            QUALITY_POOL, SELECTED, SELECTED_TOKENS, SEMDEDUP_DUPLICATES,
            SEMDEDUP_SPLIT_GROUPS, CASCADE_POOL, CASCADE_AUDITED, CASCADE_NOT_JUDGED,
            DEDUP_UNCONVERGED)
FAMILIES = (REJECTED_PREFIX, SCORING_FAILED_PREFIX, FROM_CACHE_PREFIX, INFERRED_PREFIX,
            QUEUED_PREFIX,
            MODEL_LOADS_PREFIX, MODEL_SETTING_PREFIX, CACHE_WRITTEN_PREFIX, CACHE_WRITE_FAILED_PREFIX,
            CACHE_UNREADABLE_PREFIX, CACHE_INVALID_PREFIX, DUPLICATES_PREFIX)


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


def _duration(seconds: float) -> str:
  if seconds < 90:
    return f"{seconds:.0f} s"
  if seconds < 90 * 60:
    return f"{seconds / 60:.1f} min"
  return f"{seconds / 3600:.1f} h"


def model_progress_line(stage: str, done: int, queued: int, elapsed: float,
                        recent_rate: Optional[float], interval: float,
                        loading_s: Optional[float] = None) -> str:
  """One progress line of a model stage in one worker process."""
  if loading_s is not None and done == 0:
    return (f"{stage}: loading the model ({_duration(loading_s)} so far); "
            f"{queued} documents queued")
  overall = done / elapsed if elapsed > 0 else 0.0
  parts = [f"{stage}: {done}/{queued} documents ({100.0 * done / max(queued, 1):.1f}%)"]
  if recent_rate is not None:
    parts.append(f"{recent_rate:.2f} docs/s over the last {_duration(interval)}")
  parts.append(f"{overall:.2f} docs/s overall")
  rate = recent_rate or overall
  if rate > 0 and queued > done:
    parts.append(f"about {_duration((queued - done) / rate)} left")
  return ", ".join(parts) + " (this worker process)"


class ModelProgress:
  """Progress of one model stage in this worker process, logged by a timer thread every
  `interval_s` while the stage has work (model loading included), whatever the documents
  do: with the local runner's single bundle no scored document leaves the stage before
  the last batch, so nothing downstream could report. Documents are counted as they are
  queued for the model (before batching: on the local runner that is the whole stage's
  share of this process) and as batches finish; when the queue is empty a last line gives
  the stage's time. One per stage and process (`for_stage`), shared by its threads."""

  def __init__(self, stage: str, interval_s: float = 30.0):
    self.stage = stage
    self.interval_s = interval_s
    self._lock = threading.Lock()
    self._queued = self._done = 0
    self._start = None
    self._loading_since = None
    self._last = None  # (time, done) at the previous line
    self._wake = threading.Event()
    self._thread = None

  @classmethod
  def for_stage(cls, stage: str, interval_s: float = 30.0) -> "ModelProgress":
    with _PROGRESS_LOCK:
      progress = _PROGRESS.get("model:" + stage)
      if progress is None:
        progress = _PROGRESS["model:" + stage] = cls(stage, interval_s)
      progress.interval_s = min(progress.interval_s, interval_s)
      return progress

  def queued(self, documents: int = 1) -> None:
    with self._lock:
      if self._start is None or self._done >= self._queued:
        # Idle: new work (the next run in this process, or the next bundles) counts anew.
        self._queued = self._done = 0
        self._start = time.time()
        self._ensure_timer()
      self._queued += documents

  def loading(self, active: bool) -> None:
    with self._lock:
      self._loading_since = time.time() if active else None

  def batch_done(self, documents: int) -> None:
    with self._lock:
      if self._start is None:  # Scored without being queued (the handler used alone).
        self._start = time.time()
      self._done += documents
      finished = self._queued > 0 and self._done >= self._queued
      if finished:
        elapsed = time.time() - self._start
        _LOG.info("%s: %d documents scored in %s (%.2f docs/s), this worker process's "
                  "queue is done", self.stage, self._done, _duration(elapsed),
                  self._done / elapsed if elapsed > 0 else 0.0)
        self._wake.set()

  def line(self, now: Optional[float] = None) -> str:
    now = time.time() if now is None else now
    with self._lock:
      recent = None
      if self._last is not None and now > self._last[0]:
        recent = (self._done - self._last[1]) / (now - self._last[0])
      self._last = (now, self._done)
      loading_s = now - self._loading_since if self._loading_since is not None else None
      return model_progress_line(self.stage, self._done, self._queued, now - self._start,
                                 recent, self.interval_s, loading_s)

  def _ensure_timer(self) -> None:
    # Under self._lock.
    if self._thread is not None and self._thread.is_alive() and not self._wake.is_set():
      return  # Running, and not stopping.
    self._wake = threading.Event()
    self._last = (time.time(), self._done)
    self._thread = threading.Thread(target=self._tick, args=(self._wake,), daemon=True,
                                    name=f"progress {self.stage}")
    self._thread.start()

  def _tick(self, wake: threading.Event) -> None:
    while not wake.wait(self.interval_s):
      with self._lock:
        if self._done >= self._queued:
          return
      _LOG.info("%s", self.line())


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
