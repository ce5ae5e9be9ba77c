"""Select LLM pre-training data: score every document, keep the best, write ranked TFRecords.

    python -m beam_pipelines.select_data --input=GLOB --output=DIR [options] [Beam options]

Run with --help for every option. Anything not listed there is passed to Beam
(--runner, --direct_num_workers, --temp_location, --project, ...).

The entry point: check everything (checks.py, which also takes --output), run the graph
(graph.py), and move the finished run into place with its metrics.json (run_metrics.py),
report and _SUCCESS. The parser is options.py, the config config.py, the samplers
samplers.py.
"""
from __future__ import annotations

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
from beam_pipelines.checks import (UsageError, check_job,  # noqa: E402
                                   import_tensorflow_quietly, one_line, resolve_job)
from beam_pipelines import precision_options  # noqa: E402
from beam_pipelines.config import JobConfig  # noqa: E402
from beam_pipelines.options import parse_args  # noqa: E402
from models import loading  # noqa: E402

_LOG = logging.getLogger("select_data")


def run(argv: Optional[List[str]] = None, test_pipeline=None):
  """Parses options, checks them, builds and runs the job; returns metrics.json's dict
  (None for a launch that does not wait, such as a Flex Template's)."""
  args, options = parse_args(argv)  # --help ends here, before any heavy import
  set_verbosity(args.verbose)
  from transforms import write as write_lib
  job = resolve_job(args)
  precision_options.note_local_workers(options)  # threads per local worker process
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
    if interrupts.received():  # the runner wrapped the interrupt in its own error
      write_lib.discard_staging(job.output, staging)
      raise _interrupted(job, interrupts.SignalInterrupt(interrupts.received())) from None
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
  failed = run_metrics.run_failure(job, metrics["counts"])
  if failed:
    # Not committed, and not discarded: the staged outputs (rejected/ says why each record
    # was refused) are left for inspection; the lock is released by run().
    raise UsageError(
        f"{failed}; nothing was committed and no {write_lib.SUCCESS_FILE} written "
        f"({job.output} is as it was before the run); its outputs are kept for "
        f"inspection in {staging} (the next --overwrite or --resume run into "
        f"{job.output} removes them)")
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


def _model_refusal(error: BaseException) -> Optional[str]:
  """The message of a model refused at load time on a worker (runners wrap the error,
  sometimes only as text), so that it reads as one line and not a traceback."""
  kinds = (loading.ModelLoadError, loading.ModelNotFoundError)  # refused / not found
  seen = error
  while seen is not None:
    if isinstance(seen, kinds):
      return str(seen).splitlines()[0] if str(seen) else type(seen).__name__
    seen = seen.__cause__ or seen.__context__
  text = str(error)
  for kind in kinds:
    marker = f"{kind.__name__}: "
    if marker in text:
      return text.split(marker, 1)[1].splitlines()[0].split(" [while running", 1)[0]
  return None


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


def run_estimate(job: JobConfig) -> dict:
  """--estimate_only: prints and returns the estimate; writes nothing."""
  from transforms import read as read_lib
  from beam_pipelines.estimate import estimate
  try:
    result = estimate(job)
  except (read_lib.InputError, loading.ModelNotFoundError, ValueError) as e:
    raise UsageError(str(e)) from e
  from beam_pipelines.estimate_table import render
  print(render(result, job.options.get("estimate_format", "table")))
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
