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
import sys
import threading
from typing import TYPE_CHECKING, List, Optional

from beam_pipelines import samplers as samplers_lib
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
  return runner is None or "Direct" in str(runner) or "FnApi" in str(runner)


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


# check_first_records reads at most this many records of each of the first files.
FIRST_FILES, FIRST_RECORDS = 3, 100
# Names a text field often has in public corpora, tried first for the suggestion.
_TEXT_NAMES = ("text", "raw_content", "content", "contents", "body", "document", "article",
               "passage", "markdown", "html")


def first_input_paths(inputs) -> List[str]:
  """The first FIRST_FILES readable paths of --input, in match order."""
  return [m.path for m in inputs.matches if not m.reason][:FIRST_FILES]


def _record_fields(raw) -> dict:
  """{field: a sample value} of a raw record (a JSON object's keys, an Example's
  features); {} for a record that has none (plain text, or one that does not parse)."""
  import json
  try:
    if raw.fmt == "tfrecord":
      import tensorflow as tf
      feats = tf.train.Example.FromString(raw.payload).features.feature
      out = {}
      for name, f in sorted(feats.items()):  # a proto map has no order
        values = f.bytes_list.value or f.int64_list.value or f.float_list.value
        value = values[0] if len(values) == 1 else list(values)
        out[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
      return out
    if raw.fmt in ("text", "wet"):
      return {}
    obj = json.loads(raw.payload)
    return obj if isinstance(obj, dict) else {}
  except Exception:  # pylint: disable=broad-except  (the pipeline rejects it, with why)
    return {}


def _suggest(fields: dict, want_text: bool) -> Optional[str]:
  """The seen field most likely to be the text (the longest strings, a usual name
  first) or the id (string or integer values, a name with "id" first)."""
  def is_text(v):
    return isinstance(v, str) and v.strip()
  if want_text:
    texts = {n: v for n, v in fields.items() if all(is_text(x) for x in v)}
    for name in _TEXT_NAMES:
      if name in texts:
        return name
    return max(texts, key=lambda n: sum(len(x) for x in texts[n]), default=None)
  ids = [n for n, v in fields.items()
         if all((is_text(x) or isinstance(x, int)) and not isinstance(x, bool) for x in v)]
  named = [n for n in ids if n.lower() == "id" or n.lower().endswith(("id", "_id"))]
  return (named or ids or [None])[0]


def check_first_records(job: JobConfig, inputs) -> None:
  """Parses the first records of the first input files (read.iter_file_records, then
  records.parse_record, as the pipeline does) with the given --text_field and
  --id_field. When none yields a document because of a field, one error names the
  fields seen and the option to set, instead of a run that rejects every record."""
  import contextlib
  from transforms import read as read_lib
  from transforms import records
  field_reasons = {records.MISSING_TEXT_FIELD, records.TEXT_NOT_STRING, records.INVALID_ID}
  seen, reasons, parsed = {}, {}, 0
  for path in first_input_paths(inputs):
    try:
      fmt = read_lib.format_of(path, job.input_format)
      file_records = read_lib.iter_file_records(path, fmt, job.max_doc_bytes)
      with contextlib.closing(file_records):
        for i, raw in enumerate(file_records):
          if i >= FIRST_RECORDS:
            break
          if isinstance(raw, records.Rejected):
            continue
          out = records.parse_record(
              raw, text_field=job.text_field, id_field=job.id_field,
              max_doc_bytes=job.max_doc_bytes, max_id_bytes=job.max_id_bytes)
          if isinstance(out, records.Document):
            return
          parsed += 1
          reasons[out.reason] = reasons.get(out.reason, 0) + 1
          for name, value in _record_fields(raw).items():
            seen.setdefault(name, []).append(value)
    except Exception:  # pylint: disable=broad-except  (an unreadable file: the run says)
      continue
  if not parsed or not field_reasons & set(reasons):
    return  # Nothing read, or rejected for other reasons: the run reports those.
  names = ", ".join(list(seen)[:20]) + (", ..." if len(seen) > 20 else "")
  where = f"the first {parsed} record{'s' * (parsed != 1)} of {', '.join(first_input_paths(inputs))[:200]}"
  if reasons.get(records.MISSING_TEXT_FIELD) or reasons.get(records.TEXT_NOT_STRING):
    guess = _suggest({n: v for n, v in seen.items() if n != job.text_field}, True)
    problem = (f'no record has "{job.text_field}"' if job.text_field not in seen else
               f'no record has "{job.text_field}" as a string')
    fix = f"pass --text_field={guess}" if guess else "pass --text_field=FIELD"
  else:
    guess = _suggest({n: v for n, v in seen.items() if n != job.id_field}, False)
    problem = (f'no record has "{job.id_field}"' if job.id_field not in seen else
               f'no record has a usable id in "{job.id_field}" (a string or integer within '
               f"--max_id_bytes)")
    fix = (f"pass --id_field={guess}" if guess else
           "pass --id_field=FIELD, or leave it out to use a hash of the text")
  raise UsageError(f"{problem} in {where}; fields seen: {names or 'none'}; {fix}")


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
  elif teacher_opts:
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
