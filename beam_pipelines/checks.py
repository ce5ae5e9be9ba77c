"""Every check that runs before the pipeline, in the order they run, so that a refused
run writes nothing: validations first, then --output created and locked, then --cache.

  1. The command line: value types (option_types.py), unknown options (parse_args).
  2. The config (resolve_job): a --prompt=@FILE read, the bundled quality head on the
     embeddings it was fitted on (check_bundled_head).
  3. check_job: the runner; --input matched, outside what a run replaces, its first
     records parsed with the given fields (check_first_records); a local run's
     device; options that only make sense together; the models and saved artifacts
     (artifact_checks.py); --cache's place (caching.py); the scorer's tokenizer;
     --tokenizer; --output writable; the models' fingerprints; --output held; --cache.

Each raises UsageError, saying what to fix: one `error:` line (exit code 2); remote paths
are checked within_timeout. No Beam import at module level (--help imports this).
"""
from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, List, Optional

from beam_pipelines import samplers as samplers_lib
from beam_pipelines.quiet_imports import import_tensorflow_quietly  # noqa: F401
from beam_pipelines.config import CACHE_DIR, JobConfig
from beam_pipelines.samplers import CLUSTERS, DENSITY, HEAD
from models import loading
from transforms import sketch_hashing

if TYPE_CHECKING:
  from apache_beam.options.pipeline_options import PipelineOptions

_LOG = logging.getLogger("select_data")

# How long a check of a gs:// (or other remote) path may take before the job gives up;
# hashing a large local model's files takes a while (about 1 s per GB).
REMOTE_CHECK_TIMEOUT_S = 30.0
_FINGERPRINT_TIMEOUT_S = 600


class UsageError(ValueError):
  """A problem with the command line or the environment, reported without a traceback."""


def one_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def within_timeout(fn, what: str, paths: List[str], timeout_s: Optional[float] = None):
  """Runs fn() and returns its result; a remote path that does not answer in time is a
  UsageError that says what to check, not minutes of silence."""
  if not any("://" in p for p in paths):
    return fn()
  timeout_s = REMOTE_CHECK_TIMEOUT_S if timeout_s is None else timeout_s
  box = {}

  def target():
    try:
      box["value"] = fn()
    except BaseException as e:  # Re-raised in the caller's thread.
      box["error"] = e

  thread = threading.Thread(target=target, daemon=True, name=f"check {what}")
  thread.start()
  thread.join(timeout_s)
  if thread.is_alive():
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    raise UsageError(
        f"{what} {', '.join(paths)[:200]} did not answer within {timeout_s:.0f} s. Check the "
        "network, the credentials (gcloud auth application-default login, or "
        "GOOGLE_APPLICATION_CREDENTIALS) and the bucket name"
        + (f", and that the emulator at STORAGE_EMULATOR_HOST={emulator} is running"
           if emulator else ""))
  if "error" in box:
    raise box["error"]
  return box.get("value")


def make_local_directory(path: str, option: str, hint: str = "") -> None:
  """Creates a local directory option's path (gs:// paths need none); a UsageError when
  it is a file or cannot be created. `hint` is appended to the file message."""
  if "://" in path:
    return
  if os.path.exists(path) and not os.path.isdir(path):
    raise UsageError(f"{option} {path} is a file, not a directory{hint}")
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise UsageError(f"cannot create {option} {path}: {e.strerror or e}") from e


# 2. The config.

def resolve_job(args) -> JobConfig:
  """The parsed options as a JobConfig; resolving --prompt=@gs://... reads a file,
  bounded like every remote check (a ValueError, e.g. an unreadable file, is refused)."""
  try:
    prompt_file = [args.prompt[1:]] if args.prompt.startswith("@") else []
    return within_timeout(lambda: JobConfig.from_args(args), "--prompt", prompt_file)
  except ValueError as e:
    raise UsageError(str(e)) from e


def check_bundled_head(args, implicit: bool) -> int:
  """The bundled head reads the bundled embedding model's vectors of the first N tokens;
  returns N (config.head_options). `implicit`: a head sampler given no teacher option."""
  given = (f"--sampler={args.sampler} with no --teacher_field, --teacher_fraction or "
           "--quality_head" if implicit else "--quality_head=bundled")
  if args.embedding_model != loading.DEFAULT:
    raise UsageError(
        f"{given} applies the bundled quality head, which reads the bundled embedding "
        f"model's vectors, not those of --embedding_model={args.embedding_model}: fit a "
        "head on this model's embeddings with --teacher_field (a score in the input) or "
        "--teacher_fraction (Ask-LLM on a fraction of the documents)")
  fitted = loading.bundled_head_settings()["embedding_max_tokens"]
  tokens = args.embedding_max_tokens
  if tokens is not None and tokens != fitted:
    raise UsageError(
        f"{given} applies the bundled quality head, fitted on embeddings of the first "
        f"{fitted} tokens: drop --embedding_max_tokens={tokens}, or fit a head at "
        f"{tokens} tokens with --teacher_field or --teacher_fraction")
  return fitted


# 3. The job.

def check_job(job: JobConfig, options: PipelineOptions, run_id: str):
  """Step 3 above: models located, not loaded; --output locked for `run_id`. Returns (the
  score cache of each model stage, the held OutputLock, the matched InputFiles)."""
  from transforms import read as read_lib
  from beam_pipelines import artifact_checks, caching
  try:
    local = check_runner(options)
    inputs = match_inputs(job)
    check_inputs_outside_outputs(inputs.paths, job.output)
    from beam_pipelines.first_records import check_first_records, first_input_paths
    within_timeout(lambda: check_first_records(job, inputs), "--input",
                   first_input_paths(inputs))
    if local:
      loading.resolve_device(job.scorer.device)  # A local run uses this machine's devices.
    check_sampler_options(job)
    # The models (resolved where a local run loads them) and saved files the options
    # name, opened with the pipeline's loaders; then --cache's place.
    artifact_checks.check_artifacts(job, local_models=local)
    caching.check_cache_location(job)
    check_scorer_options(job)
    check_tokenizer(job)
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


def check_runner(options: PipelineOptions) -> bool:
  """An unknown --runner is an error before anything runs. Returns whether the runner
  runs on this machine (its models and devices are this machine's)."""
  from apache_beam.runners.runner import create_runner
  from apache_beam.options.pipeline_options import StandardOptions
  runner = options.view_as(StandardOptions).runner
  if isinstance(runner, str):
    try:
      create_runner(runner)
    except (ValueError, ImportError) as e:
      raise UsageError(f"--runner={runner}: {one_line(e)}") from e
  if runner is not None and "Dataflow" in str(runner):
    _check_dataflow_options(options)
  return runner is None or "Direct" in str(runner) or "FnApi" in str(runner)


def _check_dataflow_options(options: PipelineOptions) -> None:
  """The options Dataflow needs (project, region, gs:// temp and staging locations),
  checked by Beam's own validator before anything runs, as one line."""
  from apache_beam.options.pipeline_options_validator import PipelineOptionsValidator
  from apache_beam.runners.dataflow.dataflow_runner import DataflowRunner
  errors = PipelineOptionsValidator(options, DataflowRunner()).validate()
  if errors:
    missing = "; ".join(" ".join(e.split()) for e in errors)
    raise UsageError(f"--runner=DataflowRunner: {missing} (pass --project, --region and "
                     "--temp_location/--staging_location=gs://BUCKET/...; see "
                     "docs/dataflow.md)")


def match_inputs(job: JobConfig):
  """Matches and checks --input once (read.checked_inputs): the job reads exactly the
  paths listed here, and reports those gone since."""
  from transforms import read as read_lib
  patterns = list(job.patterns)
  return within_timeout(lambda: read_lib.checked_inputs(patterns, job.input_format),
                        "--input", patterns)


def check_inputs_outside_outputs(input_files: List[str], output: str) -> None:
  """Refuses inputs inside what a run replaces (e.g. --input=OUT/selected/*): the new run
  would remove its own input when it finishes."""
  from beam_pipelines.caching import replaced_root
  for path in input_files:
    root = replaced_root(path, output)
    if root:
      raise UsageError(
          f"--input file {path} lies inside {root}, which this job writes and replaces; "
          "copy the input elsewhere or choose another --output")


def check_sampler_options(job: JobConfig) -> None:
  """Options that only make sense together, with a message that says what to fix (the
  files they name are opened by artifact_checks.py)."""
  density = samplers_lib.names_using(DENSITY)
  head = samplers_lib.names_using(HEAD)
  if job.sampler.uses(DENSITY) and not job.sketch_from:
    options = job.sketch
    try:  # The sketch's own checks, before any worker starts (dim and width come later).
      sketch_hashing.SketchParams(1, options.rows, options.buckets, options.hashes_per_row,
                                  1.0, options.seed, options.resolved_groups())
    except ValueError as e:
      raise UsageError(f"sketch options --sketch_rows={options.rows} --sketch_groups="
                       f"{options.resolved_groups()} --hashes_per_row="
                       f"{options.hashes_per_row}: {e} (hashes_per_row is 1-16, 2-16 with "
                       "groups; groups needs groups^2 >= rows >= groups)") from e
  check_cluster_options(job)
  if job.sketch_from and not job.sampler.uses(DENSITY):
    raise UsageError(f"--sketch_from is used by the samplers {', '.join(density)}")
  teacher_opts = [o for o in ("teacher_field", "teacher_fraction", "quality_head")
                  if getattr(job, o) is not None]
  if job.sampler.uses(HEAD):
    if len(teacher_opts) != 1:
      raise UsageError(f"--sampler={job.sampler.name} needs exactly one of --teacher_field, "
                       "--teacher_fraction (Ask-LLM on that fraction) or --quality_head "
                       f"(a saved head); got {', '.join('--' + o for o in teacher_opts) or 'none'}")
  elif teacher_opts and not (job.cascade.uses_head and teacher_opts == ["quality_head"]):
    raise UsageError(f"{', '.join('--' + o for o in teacher_opts)} only apply to "
                     f"--sampler={' or '.join(head)}")


def check_cluster_options(job: JobConfig) -> None:
  clustered = samplers_lib.names_using(CLUSTERS)
  if job.clusters_from and not job.sampler.uses(CLUSTERS):
    raise UsageError(f"--clusters_from is used by the samplers {', '.join(clustered)}")
  if job.sampler.quota_key is not None and job.keep_tokens:
    raise UsageError(f"--sampler={job.sampler.name} gives each cluster a quota of "
                     "documents: use --keep_fraction or --keep_count, not --keep_tokens")
  if job.sampler.uses(CLUSTERS) and job.num_clusters and not job.clusters_from and (
      job.num_clusters > job.kmeans_sample):
    raise UsageError(f"--num_clusters={job.num_clusters} is more than --kmeans_sample="
                     f"{job.kmeans_sample}: k-means++ picks the centroids among the "
                     "sample; raise --kmeans_sample")


# The bundled scorer's tokenizer takes ~20 s to load from its GGUF file; with every
# prompt option at its default the checks below are known to pass, so they are skipped.
_PROMPT_DEFAULTS = dict(prompt="auto", chat_template="auto", max_tokens=512,
                        yes_tokens=("yes", "Yes"), no_tokens=("no", "No"))


def check_scorer_options(job: JobConfig) -> None:
  """Checks the options that need the scorer's tokenizer (not its weights): the prompt
  fits in --max_tokens, each --yes_tokens/--no_tokens word is a single token, the chat
  template exists when asked for. Runs where the model is on local disk."""
  if not job.runs_ask_llm:
    return
  config = job.scorer
  if config.model == loading.DEFAULT and all(
      job.options.get(k) == v for k, v in _PROMPT_DEFAULTS.items()):
    return
  resolved = loading.resolve_model(config.model, "scorer", config.allow_pickle_weights)
  if resolved.is_hub or config.model.startswith("gs://"):
    return  # Checked when the workers load the model.
  from models.ask_llm import PromptEncoder, single_token_ids
  tokenizer = loading.load_tokenizer(resolved, config.trust_remote_code)
  is_encoder_decoder = False
  if not resolved.gguf_file:
    from transformers import AutoConfig
    model_config = AutoConfig.from_pretrained(resolved.path,
                                              trust_remote_code=config.trust_remote_code)
    is_encoder_decoder = bool(getattr(model_config, "is_encoder_decoder", False))
  PromptEncoder(tokenizer, config, is_encoder_decoder)  # raises when the prompt is too long
  for option, words in (("--yes_tokens", config.yes_tokens), ("--no_tokens", config.no_tokens)):
    for word in words:
      try:
        single_token_ids(tokenizer, [word])
      except ValueError:
        raise UsageError(f"{option}: {word!r} is not a single token for the scorer's "
                         "tokenizer (with or without a leading space); P(yes) is read "
                         "from one answer token, so choose single-token words") from None


def check_tokenizer(job: JobConfig) -> None:
  """--tokenizer loads (with --append_eos: it has an end-of-sequence id), and the options
  that count its tokens have one."""
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


def _owned_names():
  """What a run reads, writes or replaces at the top of --output (never a link)."""
  from transforms import write as write_lib
  return write_lib.OUTPUT_NAMES + (write_lib.STAGING_ROOT, write_lib.SUCCESS_FILE,
                                   write_lib.LOCK_FILE, CACHE_DIR)


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


def prepare_output(output: str, overwrite: bool, resume: bool = False,
                   run_id: str = "") -> None:
  """Refuses a non-empty output directory unless --overwrite or --resume. Nothing of an
  earlier run is removed here: the new run is staged and replaces it only once it has
  succeeded (output_commit.commit), and the score cache is never removed. Only the
  staging folders of earlier runs that died are cleared (call it holding the lock)."""
  from transforms import output_commit
  from transforms.output_lock import LOCK_FILE
  lock = output.rstrip("/") + "/" + LOCK_FILE
  existing = [p for p in output_commit.list_files(output) if p != lock]  # less our lock
  if existing and not (overwrite or resume):
    raise UsageError(
        f"--output {output} is not empty ({len(existing)} files, e.g. {existing[0]}). "
        "Pass --resume to continue an unfinished run there (scores in its cache are "
        "reused), --overwrite to replace its outputs (the cache is kept), or choose a new "
        "directory.")
  if overwrite or resume:
    output_commit.discard_dead_runs(output, keep=run_id)
