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
from typing import TYPE_CHECKING, Dict, List, Optional

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

if TYPE_CHECKING:
  from transforms.score_cache import CacheSpec

_LOG = logging.getLogger("select_data")
# Hashing a large local model's files takes a while (about 1 s per GB).
_FINGERPRINT_TIMEOUT_S = 600


def _existing_outputs(output: str) -> List[str]:
  from apache_beam.io.filesystems import FileSystems
  try:
    found = FileSystems.match([FileSystems.join(output, "**")])[0].metadata_list
  except Exception:  # A missing local directory raises on some filesystems.
    return []
  return [m.path for m in found]


def prepare_output(output: str, overwrite: bool, resume: bool = False) -> None:
  """Refuses a non-empty output directory unless --overwrite or --resume. Nothing of an
  earlier run is removed here: the new run is staged and replaces it only once it has
  succeeded (write.finalize_output), and the score cache is never removed. Only the
  staging leftovers of killed runs are cleared."""
  from apache_beam.io.filesystems import FileSystems
  from transforms import write as write_lib
  existing = _existing_outputs(output)
  if existing and not (overwrite or resume):
    raise UsageError(
        f"--output {output} is not empty ({len(existing)} files, e.g. {existing[0]}). "
        "Pass --resume to continue an unfinished run there (scores in its cache are "
        "reused), --overwrite to replace its outputs (the cache is kept), or choose a new "
        "directory.")
  if overwrite or resume:
    write_lib.delete_tree(FileSystems.join(output, write_lib.STAGING_ROOT))


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
  from transforms import write as write_lib
  make_local_directory(output, "--output")
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


def _matched_files(patterns: List[str]) -> List[str]:
  from apache_beam.io.filesystems import FileSystems
  files = []
  for result in FileSystems.match(patterns):
    files.extend(m.path for m in result.metadata_list if not m.path.endswith("/"))
  return files


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


def check_job(job: JobConfig, options) -> Dict[str, CacheSpec]:
  """Every check that can run before the pipeline: inputs, options, models (located,
  not loaded), --output and --cache (created and prepared last, so that a refused run
  leaves nothing behind). Returns the score cache of each model stage. Raises
  UsageError."""
  from transforms import read as read_lib
  from beam_pipelines import caching
  try:
    check_runner(options)
    patterns = list(job.patterns)
    within_timeout(lambda: read_lib.check_inputs(patterns, job.input_format),
                   "--input", patterns)
    input_files = within_timeout(lambda: _matched_files(patterns), "--input", patterns)
    check_inputs_outside_outputs(input_files, job.output)
    if is_local_runner(options):
      loading.resolve_device(job.scorer.device)  # A local run uses this machine's devices.
      # Resolving the models finds a missing bundled package or path before the run.
      if job.runs_ask_llm or job.runs_perplexity:
        loading.resolve_model(job.scorer.model, "scorer", job.scorer.allow_pickle_weights)
      if job.runs_embeddings:
        loading.resolve_model(job.embedding.model, "embedding",
                              job.embedding.allow_pickle_weights)
    within_timeout(lambda: check_sampler_options(job), "--sketch_from/--quality_head",
                   [p for p in (job.sketch_from, job.quality_head) if p])
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
    within_timeout(lambda: prepare_output(job.output, job.overwrite, job.resume), "--output",
                   [job.output])
    within_timeout(lambda: caching.prepare_cache(job, caches), "--cache",
                   [job.cache] if job.cache else [])
    for spec in caches.values():
      _LOG.info("Score cache for %s: %s (%d files there)", spec.namespace, spec.directory,
                caching.count_files(spec))
    return caches
  except (UsageError, read_lib.InputError, loading.ModelNotFoundError, ValueError,
          RuntimeError, OSError) as e:
    raise UsageError(str(e)) from e


def run(argv: Optional[List[str]] = None, test_pipeline=None):
  """Parses options, checks them, builds and runs the job; returns metrics.json's dict
  (None for a launch that does not wait, such as a Flex Template's)."""
  args, options = parse_args(argv)  # --help ends here, before any heavy import
  set_verbosity(args.verbose)
  import apache_beam as beam
  from apache_beam.options.pipeline_options import GoogleCloudOptions
  from transforms import write as write_lib
  try:
    # Resolving --prompt=@gs://... reads a file: bounded like every remote check.
    prompt_file = [args.prompt[1:]] if args.prompt.startswith("@") else []
    job = within_timeout(lambda: JobConfig.from_args(args), "--prompt", prompt_file)
  except ValueError as e:  # e.g. an unreadable --prompt=@FILE
    raise UsageError(str(e)) from e
  if args.estimate_only:
    return run_estimate(job)
  caches = check_job(job, options)
  # Imported here: the graph pulls in the model stages (torch through Beam's RunInference),
  # which --help and a refused command line do not need.
  if not args.verbose:
    import_tensorflow_quietly()
  from beam_pipelines import run_metrics
  from beam_pipelines.graph import build_pipeline
  start = time.time()
  staging = write_lib.staging_dir(job.output, write_lib.new_run_id())
  waits = not options.view_as(GoogleCloudOptions).template_location
  p = test_pipeline or beam.Pipeline(options=options)
  build_pipeline(p, job, staging, finalize_in_pipeline=not waits, caches=caches)
  try:
    result = p.run()
    if not waits:
      # A Flex Template launch only stages the job: nothing waits for it, so the
      # pipeline's last step writes metrics.json and moves the outputs into place.
      _LOG.info("Job staged to %s", options.view_as(GoogleCloudOptions).template_location)
      return None
    result.wait_until_finish()
  except BaseException as e:
    # The earlier run's outputs were never touched; drop this run's partial files.
    _LOG.error("The run failed; %s is as it was before the run", job.output)
    write_lib.discard_staging(job.output, staging)
    refusal = _model_refusal(e)
    if refusal:
      raise UsageError(refusal) from e
    raise
  metrics = run_metrics.from_runner(result, job, staging, time.time() - start, caches)
  report = _write_report(job, caches, staging, metrics)
  # metrics.json last, then _SUCCESS: a directory without _SUCCESS is unfinished.
  write_lib.finalize_output(job.output, staging, metrics, write_lib.OUTPUT_NAMES)
  c = metrics["counts"]
  _LOG.info("Done in %.1f s: read %d, valid %d, rejected %d, selected %d. Outputs in %s%s",
            metrics["wall_time_s"], c["read"], c["valid"], c["rejected"], c["selected"],
            job.output, f"; report: {_link(job.output, report)}" if report else "")
  if "note" in metrics:
    _LOG.warning("%s", metrics["note"])
  return metrics


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
  try:
    run(argv)
  except UsageError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
