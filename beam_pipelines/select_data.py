"""Select LLM pre-training data: score every document, keep the best, write ranked TFRecords.

    python -m beam_pipelines.select_data --input=GLOB --output=DIR [options] [Beam options]

Run with --help for every option. Anything not listed there is passed to Beam
(--runner, --direct_num_workers, --temp_location, --project, ...).

The entry point: check everything, prepare --output, run the graph (graph.py), and move
the finished run into place with its metrics.json (run_metrics.py) and _SUCCESS. Options
and their checks live in options.py, the samplers in samplers.py.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import List, Optional

# Quiet by default (--verbose undoes what was set here): TensorFlow's C++ log, and the
# per-tensor progress bars of model loading (GGUF de-quantizing uses tqdm directly);
# both are read when those libraries are first imported, after the options are parsed.
_QUIET_ENV = {name: value for name, value in (("TF_CPP_MIN_LOG_LEVEL", "3"),
                                              ("TQDM_DISABLE", "1"))
              if name not in os.environ}
os.environ.update(_QUIET_ENV)

# Light imports only: --help and a refused command line answer without importing Beam,
# TensorFlow or torch (the functions below import what they use).
from beam_pipelines.options import (JobConfig, UsageError, check_runner,  # noqa: E402
                                    check_sampler_options, check_scorer_options,
                                    is_local_runner, make_local_directory, one_line, parse_args,
                                    within_timeout)
from models import loading  # noqa: E402

_LOG = logging.getLogger("select_data")
# Hashing a large local model's files takes a while (about 1 s per GB).
_FINGERPRINT_TIMEOUT_S = 600


def _existing_outputs(output: str) -> List[str]:
  """The files in --output, less this run's own lock."""
  from transforms import output_commit
  from transforms.output_lock import LOCK_FILE
  lock = output.rstrip("/") + "/" + LOCK_FILE
  return [p for p in output_commit.list_files(output) if p != lock]


def prepare_output(output: str, overwrite: bool, resume: bool = False,
                   run_id: str = "") -> None:
  """Refuses a non-empty output directory unless --overwrite or --resume. Nothing of an
  earlier run is removed here: the new run is staged and replaces it only once it has
  succeeded (output_commit.commit), and the score cache is never removed. Only the
  staging folders of earlier runs that died are cleared (call it holding the lock)."""
  from transforms import output_commit
  existing = _existing_outputs(output)
  if existing and not (overwrite or resume):
    raise UsageError(
        f"--output {output} is not empty ({len(existing)} files, e.g. {existing[0]}). "
        "Pass --resume to continue an unfinished run there (scores in its cache are "
        "reused), --overwrite to replace its outputs (the cache is kept), or choose a new "
        "directory.")
  if overwrite or resume:
    output_commit.discard_dead_runs(output, keep=run_id)


def _owned_names():
  """What a run reads, writes or replaces at the top of --output (never a link)."""
  from beam_pipelines.options import CACHE_DIR
  from transforms import write as write_lib
  return write_lib.OUTPUT_NAMES + (write_lib.STAGING_ROOT, write_lib.SUCCESS_FILE,
                                   write_lib.LOCK_FILE, CACHE_DIR)


def hold_output(job: JobConfig, run_id: str):
  """Takes --output for this run: its lock (refused, naming the holder, when another run
  holds it), then finishes a commit that a killed run left part-way, then the emptiness
  check. Returns the held OutputLock."""
  from transforms import output_commit
  from transforms.output_lock import LockHeld, OutputLock
  lock = OutputLock(job.output, run_id)
  try:
    warning = lock.acquire()
  except LockHeld as e:
    raise UsageError(str(e)) from e
  if warning:
    _LOG.warning("%s", warning)
  try:
    for line in output_commit.recover(job.output):
      _LOG.warning("%s: %s", job.output, line)
    prepare_output(job.output, job.overwrite, job.resume, run_id)
  except BaseException:
    lock.release()
    raise
  return lock


def _normalized(path: str) -> str:
  return path if "://" in path else os.path.realpath(path)


def check_inputs_outside_outputs(input_files: List[str], output: str) -> None:
  """Refuses inputs inside what a run replaces (e.g. --input=OUT/selected/*): the new run
  would remove its own input when it finishes."""
  from transforms import write as write_lib
  out = _normalized(output).rstrip("/")
  owned = [f"{out}/{name}" for name in write_lib.OUTPUT_NAMES + (write_lib.STAGING_ROOT,)]
  for path in input_files:
    norm = _normalized(path)
    for root in owned:
      if norm == root or norm.startswith(root + "/"):
        raise UsageError(
            f"--input file {path} lies inside {root}, which this job writes and replaces; "
            "copy the input elsewhere or choose another --output")


def check_output_writable(output: str) -> None:
  """Fails before the run when --output cannot be written (a file, no permission)."""
  from apache_beam.io.filesystems import FileSystems
  from transforms import output_files
  from transforms import write as write_lib
  make_local_directory(output, "--output")
  # Before the probe: it writes into _temporary, which must not lead out of --output.
  try:
    output_files.check_no_links(output, _owned_names())
  except ValueError as e:
    raise UsageError(str(e)) from e
  probe = FileSystems.join(output, write_lib.STAGING_ROOT, f".write-check-{os.getpid()}")
  try:
    with FileSystems.create(probe) as f:
      f.write(b"ok")
    FileSystems.delete([probe])
  except Exception as e:
    raise UsageError(f"cannot write to --output {output}: {one_line(e)}") from e
  finally:
    if "://" not in output:  # Leave no empty staging directory behind.
      try:
        os.rmdir(os.path.join(output, write_lib.STAGING_ROOT))
      except OSError:
        pass


def _match_inputs(job: JobConfig):
  """Matches and checks --input once (read.checked_inputs): the job reads exactly the
  paths listed here, and reports those gone since."""
  from transforms import read as read_lib
  patterns = list(job.patterns)
  return within_timeout(lambda: read_lib.checked_inputs(patterns, job.input_format),
                        "--input", patterns)


def _model_refusal(error: BaseException) -> Optional[str]:
  """The message of a model refused at load time on a worker (runners wrap the error,
  sometimes only as text), so that it reads as one line and not a traceback."""
  seen = error
  while seen is not None:
    if isinstance(seen, loading.ModelLoadError):
      return str(seen)
    seen = seen.__cause__ or seen.__context__
  text = str(error)
  marker = f"{loading.ModelLoadError.__name__}: "
  if marker in text:
    return text.split(marker, 1)[1].splitlines()[0].split(" [while running", 1)[0]
  return None


def check_job(job: JobConfig, options, run_id: str):
  """Every check that can run before the pipeline: inputs, options, models (located,
  not loaded), --output (locked for `run_id`) and --cache (created and prepared last, so
  that a refused run leaves nothing behind). Returns (the score cache of each model
  stage, the held OutputLock, the matched InputFiles). Raises UsageError."""
  from transforms import read as read_lib
  from beam_pipelines import artifact_checks, caching
  try:
    check_runner(options)
    inputs = _match_inputs(job)
    check_inputs_outside_outputs(inputs.paths, job.output)
    local = is_local_runner(options)
    if local:
      loading.resolve_device(job.scorer.device)  # A local run uses this machine's devices.
    check_sampler_options(job)
    # The models (resolved where a local run loads them) and saved files the options
    # name, opened with the pipeline's loaders; then --cache's place.
    artifact_checks.check_artifacts(job, local_models=local)
    caching.check_cache_location(job)
    check_scorer_options(job)
    if job.append_eos and not job.tokenizer:
      raise UsageError("--append_eos needs --tokenizer")
    if job.keep_tokens and not job.tokenizer:
      raise UsageError("--keep_tokens counts tokens with --tokenizer: give one (a "
                       "SentencePiece model file)")
    if job.tokenizer:
      if not job.options.get("verbose"):
        import_tensorflow_quietly()  # tensorflow-text imports TensorFlow
      from transforms.tokenize import load_tokenizer
      within_timeout(lambda: load_tokenizer(job.tokenizer, job.append_eos), "--tokenizer",
                     [job.tokenizer])
    within_timeout(lambda: check_output_writable(job.output), "--output", [job.output])
    # Fingerprints hash the model files (or list a gs:// model's checksums).
    caches = within_timeout(lambda: caching.cache_specs(job), "the model at",
                            [job.scorer.model, job.embedding.model],
                            timeout_s=_FINGERPRINT_TIMEOUT_S)
    lock = within_timeout(lambda: hold_output(job, run_id), "--output", [job.output])
    try:
      within_timeout(lambda: caching.prepare_cache(job, caches), "--cache",
                     [job.cache] if job.cache else [])
    except BaseException:
      lock.release()
      raise
    for spec in caches.values():
      _LOG.info("Score cache for %s: %s (%d files there)", spec.namespace, spec.directory,
                caching.count_files(spec))
    return caches, lock, inputs
  except (UsageError, read_lib.InputError, loading.ModelNotFoundError, ValueError,
          RuntimeError, OSError) as e:
    raise UsageError(str(e)) from e


def run(argv: Optional[List[str]] = None, test_pipeline=None):
  """Parses options, checks them, builds and runs the job; returns metrics.json's dict
  (None for a launch that does not wait, such as a Flex Template's)."""
  args, options = parse_args(argv)  # --help ends here, before any heavy import
  set_verbosity(args.verbose)
  from transforms import write as write_lib
  try:
    # Resolving --prompt=@gs://... reads a file: bounded like every remote check.
    prompt_file = [args.prompt[1:]] if args.prompt.startswith("@") else []
    job = within_timeout(lambda: JobConfig.from_args(args), "--prompt", prompt_file)
  except ValueError as e:  # e.g. an unreadable --prompt=@FILE
    raise UsageError(str(e)) from e
  if args.estimate_only:
    return run_estimate(job)
  run_id = write_lib.new_run_id()
  caches, lock, inputs = check_job(job, options, run_id)
  try:
    return _run_holding(job, args, options, caches, lock, inputs, run_id, test_pipeline)
  finally:
    lock.release()  # A no-op once handed to the pipeline (a launch that does not wait).


def _run_holding(job: JobConfig, args, options, caches, lock, inputs, run_id: str,
                 test_pipeline):
  """The run, with --output held: the pipeline writes into staging, then the commit."""
  import apache_beam as beam
  from apache_beam.io.filesystems import FileSystems
  from apache_beam.options.pipeline_options import GoogleCloudOptions
  from beam_pipelines import interrupts
  from transforms import output_commit
  from transforms import write as write_lib
  lock.start_heartbeat()
  interrupts.workers_in_own_session()
  # Imported here: the graph pulls in the model stages (torch through Beam's RunInference),
  # which --help and a refused command line do not need.
  if not args.verbose:
    import_tensorflow_quietly()
  from beam_pipelines import run_metrics
  from beam_pipelines.graph import build_pipeline
  start = time.time()
  staging = write_lib.staging_dir(job.output, run_id)
  waits = not options.view_as(GoogleCloudOptions).template_location
  try:
    p = test_pipeline or beam.Pipeline(options=options)
    build_pipeline(p, job, staging, finalize_in_pipeline=not waits, caches=caches,
                   inputs=inputs)
    result = p.run()
    if not waits:
      # A Flex Template launch only stages the job: nothing waits for it, so the
      # pipeline's last step writes metrics.json, commits, and releases the lock.
      lock.hand_to_pipeline()
      _LOG.info("Job staged to %s", options.view_as(GoogleCloudOptions).template_location)
      return None
    result.wait_until_finish()
  except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (see main)
    interrupts.silence_runner()
    write_lib.discard_staging(job.output, staging)
    raise _interrupted(job, e) from None
  except BaseException as e:
    # The earlier run's outputs were never touched; drop this run's partial files.
    _LOG.error("The run failed; %s is as it was before the run", job.output)
    write_lib.discard_staging(job.output, staging)
    refusal = _model_refusal(e)
    if refusal:
      raise UsageError(refusal) from e
    raise
  try:
    metrics = run_metrics.from_runner(result, job, staging, time.time() - start, caches)
    metrics["counts"]["files"] = inputs.counts()  # every matched path accounted for
    # metrics.json before the report: a report that fails (a full disk) never blocks it.
    write_lib.write_json_atomic(FileSystems.join(staging, write_lib.METRICS_FILE), metrics)
    report = _write_report(job, caches, staging, metrics)
  except KeyboardInterrupt as e:
    write_lib.discard_staging(job.output, staging)
    raise _interrupted(job, e) from None
  except OSError as e:  # e.g. no space left for metrics.json
    write_lib.discard_staging(job.output, staging)
    raise UsageError(f"the run's metrics.json could not be written ({one_line(e)}); "
                     f"{job.output} is as it was before the run") from e
  if not lock.still_held():
    write_lib.discard_staging(job.output, staging)
    raise UsageError(f"this run lost its lock on {job.output} to another run, so it did not "
                     "commit; the other run's outputs are left alone")
  try:
    # The commit runs to its end once started: an interrupt waits for it (see main).
    with interrupts.deferred():
      write_lib.finalize_output(job.output, staging, None, write_lib.OUTPUT_NAMES)
  except output_commit.CommitError as e:
    raise UsageError(str(e)) from e
  c = metrics["counts"]
  _LOG.info("Done in %.1f s: read %d, valid %d, rejected %d, selected %d. Outputs in %s%s",
            metrics["wall_time_s"], c["read"], c["valid"], c["rejected"], c["selected"],
            job.output, f"; report: {_link(job.output, report)}" if report else "")
  if "note" in metrics:
    _LOG.warning("%s", metrics["note"])
  return metrics


def _interrupted(job: JobConfig, e: BaseException):
  """The Interrupted for a signal that came before the commit (staging removed)."""
  from beam_pipelines.interrupts import Interrupted, signal_name
  cache = (f"the scores computed so far are in the cache {job.cache}; run the same "
           "command with --resume to continue from them" if job.cache else
           "run the same command again to start over (--cache=none: nothing was kept)")
  return Interrupted(f"interrupted by {signal_name(e)}: {job.output} is as it was before "
                     f"this run; {cache}", signal_name(e))


def _write_report(job: JobConfig, caches, staging: str, metrics: dict) -> Optional[str]:
  """Draws report.html into the staged run; a failure to draw costs the report (with a
  warning), not the run's outputs."""
  from transforms import write as write_lib
  if not job.report:
    return None
  from beam_pipelines import report  # matplotlib: imported only to draw
  try:
    report.ReportWriter(job, caches)(staging, metrics)
  except Exception as e:  # pylint: disable=broad-except
    _LOG.warning("report.html was not written: %s", one_line(e))
    return None
  return write_lib.REPORT_FILE


def _link(output: str, name: str) -> str:
  from apache_beam.io.filesystems import FileSystems
  path = FileSystems.join(output, name)
  return path if "://" in path else "file://" + os.path.abspath(path)


def set_verbosity(verbose: bool) -> None:
  """--verbose: third-party progress bars, TensorFlow's start-up lines and Beam's INFO
  log come back (for libraries not imported yet; worker processes inherit this)."""
  logging.getLogger("apache_beam").setLevel(logging.INFO if verbose else logging.WARNING)
  for name, value in _QUIET_ENV.items():
    if verbose and os.environ.get(name) == value:
      del os.environ[name]
    elif not verbose:
      os.environ.setdefault(name, value)


def import_tensorflow_quietly() -> None:
  """Imports TensorFlow (the TFRecord writer needs it) with the process's stderr closed:
  its C++ start-up lines (cudart_stub "Could not find cuda drivers", cpu_feature_guard,
  "All log messages before absl::InitializeLog()") are written before its logging is set
  up, whatever TF_CPP_MIN_LOG_LEVEL says. Done once, before the pipeline's threads start;
  an import error is raised as usual."""
  if "tensorflow" in sys.modules:
    return
  sys.stderr.flush()
  saved = os.dup(2)
  try:
    with open(os.devnull, "w") as null:
      os.dup2(null.fileno(), 2)
      try:
        import tensorflow  # noqa: F401
      finally:
        os.dup2(saved, 2)
  finally:
    os.close(saved)


def run_estimate(job: JobConfig) -> dict:
  """--estimate_only: prints and returns the estimate; writes nothing."""
  from transforms import read as read_lib
  from beam_pipelines.estimate import estimate
  try:
    result = estimate(job)
  except (read_lib.InputError, loading.ModelNotFoundError, ValueError) as e:
    raise UsageError(str(e)) from e
  print(json.dumps(result, indent=2))
  return result


def main(argv=None):
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  # Beam's type-hint notices drown the progress lines (--verbose shows them).
  logging.getLogger("apache_beam").setLevel(logging.WARNING)
  from beam_pipelines import interrupts
  try:
    with interrupts.handled():
      run(argv)
  except UsageError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  except (interrupts.Interrupted, KeyboardInterrupt) as e:
    if not isinstance(e, interrupts.Interrupted):  # Before --output was held.
      name = interrupts.signal_name(e)
      e = interrupts.Interrupted(f"interrupted by {name} before the run started; nothing "
                                 "was written", name)
    interrupts.quiet_exit(str(e), e.exit_code)


if __name__ == "__main__":
  main()
