"""The job's score cache: one CacheSpec per model stage that runs (with the fingerprint of
the settings its outputs depend on), the checks before the run, and its metrics.json part.
The cache itself (format, lookup, writing) is transforms/score_cache.py.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional

from apache_beam.io.filesystems import FileSystems

from beam_pipelines.checks import UsageError, make_local_directory, one_line
from beam_pipelines.config import CACHE_DIR, JobConfig
from models.fingerprint import settings_fingerprint
from transforms import metrics as m
from transforms.score_cache import CacheSpec, other_fingerprints, write_settings


def cache_specs(job: JobConfig) -> Dict[str, CacheSpec]:
  """{model namespace: CacheSpec} of the model stages this job runs; {} with
  --cache=none. Hashes local model files (their content is part of the fingerprint)."""
  if job.cache is None:
    return {}
  settings = {namespace: config.cache_settings()
              for namespace, config in job.model_stages().items()}
  from transforms import signals
  for name in simple_signals(job):  # a pure function's outputs depend on its version
    settings[name] = {"signal": name, "version": signals.get(name).version,
                      "columns": list(signals.codecs()[name].names)}
  return {namespace: CacheSpec(
      root=job.cache, namespace=namespace, fingerprint=settings_fingerprint(values),
      settings=values, flush_docs=job.cache_flush_docs,
      flush_seconds=job.cache_flush_seconds) for namespace, values in settings.items()}


def simple_signals(job: JobConfig):
  """The job's cached simple signals (a pure function of the document, registry)."""
  from beam_pipelines.graph import signal_names
  from transforms import signals
  return [n for n in signal_names(job)
          if signals.get(n).per_document is not None and signals.is_cached(n)]


def cached_stages(job: JobConfig):
  """Every stage whose outputs the cache keeps: the models, then simple signals."""
  return list(job.model_stages()) + simple_signals(job)


def _normalized(path: str) -> str:
  return (path if "://" in path else os.path.realpath(path)).rstrip("/")


def replaced_root(path: str, output: str) -> Optional[str]:
  """The top-level output a run replaces (OUTPUT/scores, ...) that `path` lies in, or
  None."""
  from transforms import write as write_lib
  out, norm = _normalized(output), _normalized(path)
  for name in write_lib.OUTPUT_NAMES + (write_lib.STAGING_ROOT,):
    root = f"{out}/{name}"
    if norm == root or norm.startswith(root + "/"):
      return root
  return None


def check_cache_location(job: JobConfig) -> None:
  """Refuses a --cache inside what a run replaces: the run would wipe it when it
  finishes, and every rerun would score everything again."""
  root = replaced_root(job.cache, job.output) if job.cache else None
  if root:
    raise UsageError(f"--cache {job.cache} lies inside {root}, which this job replaces "
                     "when it finishes: choose another --cache (the default is OUTPUT/"
                     f"{CACHE_DIR})")


def prepare_cache(job: JobConfig, specs: Dict[str, CacheSpec]) -> None:
  """Fails before the run when --cache is a file or cannot be written; writes the
  settings file of each fingerprint (which also proves the cache writable)."""
  if not specs:
    return
  root = job.cache
  make_local_directory(root, "--cache", hint=" (or pass --cache=none)")
  for spec in specs.values():
    try:
      write_settings(spec)
    except Exception as e:  # pylint: disable=broad-except
      raise UsageError(f"cannot write to --cache {root}: {one_line(e)} "
                       "(choose a writable directory or pass --cache=none)") from e


def cache_metrics(job: JobConfig, specs: Dict[str, CacheSpec],
                  counters: Dict[str, int] = None) -> Dict[str, Any]:
  """metrics.json's `cache`: its directory, and per model stage its fingerprint, the
  fingerprints it ignored, and (from the runner's counters, when known) documents from
  the cache and inferred, entries written and files or entries skipped."""
  if not specs:
    return {"dir": None}
  stages = {}
  for ns, spec in specs.items():
    stage = {"fingerprint": spec.fingerprint, "settings_file": spec.settings_file,
             "ignored_fingerprints": other_fingerprints(spec)}
    if counters is not None:
      for name, prefix in (("from_cache", m.FROM_CACHE_PREFIX),
                           ("inferred", m.INFERRED_PREFIX),
                           ("model_loads", m.MODEL_LOADS_PREFIX),
                           ("entries_written", m.CACHE_WRITTEN_PREFIX),
                           ("entries_not_written", m.CACHE_WRITE_FAILED_PREFIX),
                           ("unreadable_files", m.CACHE_UNREADABLE_PREFIX),
                           ("invalid_entries", m.CACHE_INVALID_PREFIX)):
        stage[name] = counters.get(prefix + ns, 0)
    stages[ns] = stage
  return {"dir": job.cache, "stages": stages}


def count_files(spec: CacheSpec) -> int:
  """Cache files under a spec (for the resume log line): a listing, nothing is read."""
  try:
    return len(FileSystems.match([FileSystems.join(spec.directory, "*.parquet")])[0]
               .metadata_list)
  except Exception:  # pylint: disable=broad-except
    return 0
