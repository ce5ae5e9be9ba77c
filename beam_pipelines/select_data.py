"""Select LLM pre-training data: score every document, keep the best, write ranked TFRecords.

    python -m beam_pipelines.select_data --input=GLOB --output=DIR [options] [Beam options]

Run with --help for every option. Anything not listed there is passed to Beam
(--runner, --direct_num_workers, --temp_location, --project, ...).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import threading
import time
from typing import List, Optional

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import apache_beam as beam  # noqa: E402  (after the TF logging setting)
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (GoogleCloudOptions, PipelineOptions,
                                                  StandardOptions)

from models import loading
from models.ask_llm import AskLLMConfig, resolve_device
from models.prompts import PROMPTS, resolve_prompt
from transforms import read as read_lib
from transforms.metrics import NAMESPACE
from models.embeddings import EmbeddingConfig
from transforms import density_sketch
from transforms.density import (AttachDensity, BuildSketch, EmbedDocuments, SketchOptions,
                                density_sampling_key, random_key)
from transforms import quality, quality_head
from transforms.score import ScoreAskLLM, ScorePerplexity
from transforms.select import SelectTopK
from transforms import write as write_lib
from transforms.write import REJECTED_DIR, SCORES_DIR, SELECTED_DIR, WriteOutputs

_LOG = logging.getLogger("select_data")
# Chosen by benchmarks/density_selection.py (see README, "Measured numbers").
DEFAULT_SKETCH = SketchOptions()
# Chosen by 5-fold cross-validation on the dev set (benchmarks/quality_head.py): AUC is
# flat over 0.01-0.3 (0.890-0.894) and falls off below (0.863 at 1e-3); with small
# teacher sets (56-108 documents) 0.1 does as well as an l2 chosen by inner CV.
DEFAULT_HEAD_L2 = 0.1

SAMPLERS = ("ask_llm", "density", "random", "ask_llm_density", "quality_head",
            "quality_head_density", "perplexity")
ASK_LLM_SAMPLERS = ("ask_llm", "ask_llm_density")
DENSITY_SAMPLERS = ("density", "ask_llm_density", "quality_head_density")
HEAD_SAMPLERS = ("quality_head", "quality_head_density")
# The prompt configuration that measured best for the bundled scorer on the dev set
# (benchmarks/scorer_quality.py); other scorers default to the paper's prompt.
BUNDLED_PROMPT = "paper"
BUNDLED_CHAT_TEMPLATE = "auto"
BUNDLED_SCORE = "p_yes"
SKETCH_FILE = "sketch.npz"
HEAD_FILE = "quality_head.npz"
HEAD_FIT_FILE = "quality_head_fit.json"
OUTPUT_NAMES = (SELECTED_DIR, SCORES_DIR, REJECTED_DIR, "metrics.json", SKETCH_FILE,
                HEAD_FILE, HEAD_FIT_FILE)


class UsageError(ValueError):
  """A problem with the command line or the environment, reported without a traceback."""


def _fraction(value: str) -> float:
  f = float(value)
  if not 0.0 < f <= 1.0:
    raise argparse.ArgumentTypeError("must be in (0, 1]")
  return f


def _positive_int(value: str) -> int:
  i = int(value)
  if i < 1:
    raise argparse.ArgumentTypeError("must be a positive integer")
  return i


def _positive_float(value: str) -> float:
  f = float(value)
  if not f > 0 or f != f or f == float("inf"):
    raise argparse.ArgumentTypeError("must be a positive number")
  return f


def _seed(value: str) -> int:
  i = int(value)
  if not 0 <= i < 2 ** 63:
    raise argparse.ArgumentTypeError("must be an integer from 0 to 2^63 - 1")
  return i


# ApproximateQuantiles keeps buffers proportional to the number of ranges (7.3 GB at
# 100 million); 100,000 ranges suit 10 billion documents.
MAX_RANK_PARTITIONS = 100_000


def _rank_partitions(value: str) -> int:
  i = _positive_int(value)
  if i > MAX_RANK_PARTITIONS:
    raise argparse.ArgumentTypeError(
        f"must be at most {MAX_RANK_PARTITIONS:,} (about N / 100,000 for N documents)")
  return i


def _bool(value: str) -> bool:
  v = value.strip().lower()
  if v in ("true", "1", "yes"):
    return True
  if v in ("false", "0", "no"):
    return False
  raise argparse.ArgumentTypeError("must be true or false")


# A flag that also takes a value: `--overwrite`, `--overwrite=true`, `--overwrite=false`
# (Flex Template launchers always pass parameters as --name=value).
_FLAG = dict(nargs="?", const=True, default=False, type=_bool, metavar="true|false")


def _groups(value: str):
  if value == "auto":
    return None
  g = int(value)
  if g < 0:
    raise argparse.ArgumentTypeError("must be auto, 0 (independent rows) or a positive integer")
  return g


def _width(value: str):
  if value == "auto":
    return None
  w = float(value)
  if not w > 0 or w == float("inf"):
    raise argparse.ArgumentTypeError("must be a positive finite number or auto")
  return w


def _csv(value: str):
  words = tuple(v.strip() for v in value.split(",") if v.strip())
  if not words:
    raise argparse.ArgumentTypeError("needs at least one word (comma-separated)")
  return words


class _Parser(argparse.ArgumentParser):
  """argparse with a one-line usage on errors (the full list is 40+ lines; --help has it)."""

  def error(self, message):
    self.exit(2, f"usage: {self.prog} --input=GLOB --output=DIR [options] "
                 f"(--help lists every option)\nerror: {message}\n")


def build_parser() -> argparse.ArgumentParser:
  p = _Parser(
      prog="python -m beam_pipelines.select_data",
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
      allow_abbrev=False)
  io = p.add_argument_group("input and output")
  io.add_argument("--input", required=True,
                  help="File, glob, or comma-separated list; local or gs://; .gz is read "
                       "transparently.")
  io.add_argument("--output", required=True,
                  help="Output directory (local or gs://): selected/, scores/, rejected/, "
                       "metrics.json.")
  io.add_argument("--input_format", default="auto", choices=read_lib.FORMATS,
                  help="auto picks by extension (.jsonl/.json, .txt, .tfrecord, optionally "
                       ".gz); text = one document per line; tfrecord = tf.train.Example "
                       "with a bytes feature. Default: auto.")
  io.add_argument("--text_field", default="text",
                  help="JSON field or Example feature holding the text. Default: text.")
  io.add_argument("--id_field", default=None,
                  help="Field holding the document id; without it the id is a hash of the "
                       "text.")
  io.add_argument("--max_doc_bytes", type=_positive_int, default=10 * 1024 * 1024,
                  help="Longer documents are rejected as too_large; shorter ones are kept "
                       "whole (truncated only for scoring). Default: 10485760.")
  io.add_argument("--overwrite", **_FLAG,
                  help="Replace the outputs of an earlier run in --output (otherwise a "
                       "non-empty --output is refused).")

  sel = p.add_argument_group("selection")
  sel.add_argument("--sampler", default="ask_llm", choices=SAMPLERS,
                   help="ask_llm: top-k by Ask-LLM score. density: draw k without "
                        "replacement with probability proportional to 1/density "
                        "(coverage). random: uniform draw. ask_llm_density: keep the top "
                        "--quality_pool_factor x k by Ask-LLM, then density-sample k from "
                        "that pool. quality_head: top-k by the quality head's score (see "
                        "below). quality_head_density: like ask_llm_density with the head. "
                        "perplexity: keep the lowest per-token perplexity under "
                        "--scorer_model (a causal LM). Draws are deterministic given --seed. "
                        "Default: ask_llm.")
  sel.add_argument("--quality_pool_factor", type=_positive_float, default=2.0,
                   help="ask_llm_density: the Ask-LLM pool holds this many times the "
                        "documents to select (capped at all). Default: 2.0.")
  how_many = sel.add_mutually_exclusive_group()
  how_many.add_argument("--keep_fraction", type=_fraction, default=None,
                        help="Select floor(N * F) documents (at least 1). Default: 0.2.")
  how_many.add_argument("--keep_count", type=_positive_int, default=None,
                        help="Select exactly this many documents (all if fewer).")
  sel.add_argument("--num_rank_partitions", type=_rank_partitions, default=1000,
                   help="Key ranges for exact distributed top-k (at most 100,000). A ranked "
                        "file holds whole ranges and is sorted in one worker's memory: choose "
                        "about N / 100,000 for large inputs. Default: 1000.")
  sel.add_argument("--docs_per_file", type=_positive_int, default=50_000,
                   help="Ranked TFRecord files hold at least this many documents (the last "
                        "may hold fewer). Default: 50000.")
  sel.add_argument("--seed", type=_seed, default=0,
                   help="Seed of the sampling draws and the sketch's hash functions. "
                        "Default: 0.")

  hd = p.add_argument_group("quality head (Ask-LLM distilled into the embeddings)")
  hd.add_argument("--teacher_field", default=None,
                  help="Numeric input field holding a teacher score (e.g. an earlier GPU "
                       "Ask-LLM run, or labels); records with it form the teacher set.")
  hd.add_argument("--teacher_fraction", type=_fraction, default=None,
                  help="Run Ask-LLM only on this deterministic fraction of the documents "
                       "(chosen by a hash of --seed and id) and use it as the teacher.")
  hd.add_argument("--quality_head", default=None,
                  help="Apply a saved head (an earlier run's quality_head.npz) instead of "
                       "fitting one; it must come from the same --embedding_model.")
  hd.add_argument("--head_l2", type=_positive_float, default=DEFAULT_HEAD_L2,
                  help="Ridge penalty of the head (scaled by the teacher set's size). "
                       f"Default: {DEFAULT_HEAD_L2}.")

  dn = p.add_argument_group("density (coverage)")
  dn.add_argument("--embedding_model", default=loading.DEFAULT,
                  help="default (bundled all-MiniLM-L6-v2), a local directory, a gs:// "
                       "directory, or a Hugging Face Hub id (needs network).")
  dn.add_argument("--embedding_max_tokens", type=_positive_int, default=128,
                  help="Documents are truncated to this many tokens for embedding. "
                       "Default: 128.")
  dn.add_argument("--sketch_rows", type=_positive_int, default=DEFAULT_SKETCH.rows,
                  help=f"R, rows of the LSH sketch. Default: {DEFAULT_SKETCH.rows}.")
  dn.add_argument("--sketch_buckets", type=_positive_int, default=DEFAULT_SKETCH.buckets,
                  help=f"B, buckets per row. Default: {DEFAULT_SKETCH.buckets}.")
  dn.add_argument("--hashes_per_row", type=_positive_int,
                  default=DEFAULT_SKETCH.hashes_per_row,
                  help="K, Gaussian projections concatenated per row (sharpens the "
                       f"kernel). Default: {DEFAULT_SKETCH.hashes_per_row}.")
  dn.add_argument("--bucket_width", type=_width, default=DEFAULT_SKETCH.bucket_width,
                  help="Bucket width of the p-stable hashes, or auto (from the distances "
                       "of a sample of the data). Default: "
                       f"{DEFAULT_SKETCH.bucket_width or 'auto'}.")
  dn.add_argument("--sketch_groups", type=_groups, default=DEFAULT_SKETCH.groups,
                  help="Rows draw their K projections from this many shared groups "
                       "(needs groups^2 >= R >= groups and K >= 2): auto = ceil(sqrt(R)), "
                       "5-8x faster, the same selection in our benchmarks; 0 = independent "
                       "rows (closer density ranks). Default: auto.")
  dn.add_argument("--sketch_from", default=None,
                  help="Score against a saved sketch (an earlier run's sketch.npz, local "
                       "or gs://) instead of building one.")

  sc = p.add_argument_group("Ask-LLM scorer")
  sc.add_argument("--scorer_model", default=loading.DEFAULT,
                  help="default (bundled SmolLM2-135M-Instruct GGUF), a local directory or "
                       ".gguf file, a gs:// directory, or a Hugging Face Hub id (needs "
                       "network). Causal (chat) and encoder-decoder (Flan-T5) models work.")
  sc.add_argument("--prompt", default="auto",
                  help="auto (the best measured prompt for the bundled model, else paper), "
                       f"a name ({', '.join(sorted(PROMPTS))}), or @FILE with a template "
                       "containing {text}. Default: auto.")
  sc.add_argument("--chat_template", default="auto", choices=("auto", "on", "off"),
                  help="Wrap the prompt in the tokenizer's chat template (decoder-only "
                       "models). Default: auto (on when the tokenizer has one).")
  sc.add_argument("--yes_tokens", type=_csv, default=("yes", "Yes"),
                  help="Comma-separated words whose tokens sum to P(yes). Default: yes,Yes.")
  sc.add_argument("--no_tokens", type=_csv, default=("no", "No"),
                  help="Comma-separated words whose tokens sum to P(no). Default: no,No.")
  sc.add_argument("--ask_llm_score", default="auto", choices=("auto", "p_yes", "normalized"),
                  help="Score to rank by: P(yes), or P(yes)/(P(yes)+P(no)). Default: auto.")
  sc.add_argument("--max_tokens", type=_positive_int, default=512,
                  help="Token budget of the whole prompt; the document is truncated inside "
                       "the ### delimiters so the question is never cut. Default: 512.")
  sc.add_argument("--batch_tokens", type=_positive_int, default=8192,
                  help="Token budget of one inference batch (length-sorted). Default: 8192.")
  sc.add_argument("--max_batch_size", type=_positive_int, default=64,
                  help="At most this many documents per batch. Default: 64.")
  sc.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                  help="auto uses CUDA when present. Default: auto.")
  sc.add_argument("--large_model", **_FLAG,
                  help="Load one model per worker VM shared by its SDK processes (use on "
                       "GPU workers).")
  sc.add_argument("--inference_accelerator", default=None,
                  help="Dataflow right fitting: put a GPU only on the inference steps, e.g. "
                       "'type:nvidia-l4;count:1;install-nvidia-driver' (a resource hint on "
                       "Ask-LLM, perplexity and embedding steps; do not combine with "
                       "--dataflow_service_options=worker_accelerator=...).")
  sc.add_argument("--model_copies", type=_positive_int, default=None,
                  help="Load exactly this many model copies per worker VM.")
  est = p.add_argument_group("cost estimate")
  est.add_argument("--estimate_only", **_FLAG,
                   help="Read a sample of the input, count prompt tokens with the scorer's "
                        "tokenizer, print the expected documents, tokens and GPU-hours for "
                        "the whole input, and exit without running inference.")
  est.add_argument("--estimate_sample", type=_positive_int, default=1000,
                   help="Documents read for --estimate_only. Default: 1000.")
  est.add_argument("--gpu_tokens_per_second", type=_positive_float, default=None,
                   help="Measured scoring throughput of one GPU for --estimate_only "
                        "(otherwise derived from the model size, an assumption).")
  est.add_argument("--gpu_price_per_hour", type=_positive_float, default=None,
                   help="Price of one GPU worker hour, for --estimate_only's cost line.")
  sc.add_argument("--allow_pickle_weights", **_FLAG,
                  help="Allow pickle checkpoints (.bin/.pt); they can run code when loaded.")
  sc.add_argument("--trust_remote_code", **_FLAG,
                  help="Allow model repositories to run their own Python code.")
  return p


def parse_args(argv: Optional[List[str]] = None):
  """Returns (our options, Beam PipelineOptions from the remaining arguments)."""
  parser = build_parser()
  args, beam_args = parser.parse_known_args(argv)
  if args.keep_fraction is None and args.keep_count is None:
    args.keep_fraction = 0.2
  unknown = _unknown_beam_args(beam_args)
  if unknown:
    parser.error(f"unknown option(s): {' '.join(unknown)} (neither this job's nor Beam's)")
  options = PipelineOptions(beam_args)
  if options.view_as(StandardOptions).runner is None:
    # The DirectRunner first tries to download the Prism runner binary; the FnApiRunner
    # (what the DirectRunner uses for batch anyway) runs locally with no download.
    options.view_as(StandardOptions).runner = "FnApiRunner"
  return args, options


def _unknown_beam_args(beam_args: List[str]) -> List[str]:
  """Arguments that no Beam options class knows: a typo would otherwise be dropped."""
  from apache_beam.options.pipeline_options import _BeamArgumentParser
  parser = _BeamArgumentParser(allow_abbrev=False)
  seen = {}
  for cls in PipelineOptions.__subclasses__():
    seen.setdefault(str(cls), cls)
  for cls in seen.values():
    cls._add_argparse_args(parser)  # pylint: disable=protected-access
  _, unknown = parser.parse_known_args(beam_args)
  return [a for a in unknown if a.startswith("-")]


def ask_llm_config(args) -> AskLLMConfig:
  bundled = args.scorer_model == loading.DEFAULT
  prompt = args.prompt if args.prompt != "auto" else (BUNDLED_PROMPT if bundled else "paper")
  chat = args.chat_template
  if chat == "auto" and bundled:
    chat = BUNDLED_CHAT_TEMPLATE
  score = args.ask_llm_score
  if score == "auto":
    score = BUNDLED_SCORE if bundled else "p_yes"
  return AskLLMConfig(
      model=args.scorer_model, prompt=resolve_prompt(prompt), max_tokens=args.max_tokens,
      yes_tokens=tuple(args.yes_tokens), no_tokens=tuple(args.no_tokens),
      chat_template=chat, score=score, device=args.device,
      allow_pickle_weights=args.allow_pickle_weights,
      trust_remote_code=args.trust_remote_code)


def _existing_outputs(output: str) -> List[str]:
  try:
    found = FileSystems.match([FileSystems.join(output, "**")])[0].metadata_list
  except Exception:  # A missing local directory raises on some filesystems.
    return []
  return [m.path for m in found]


def check_sampler_options(args) -> None:
  """Options that only make sense together, with a message that says what to fix."""
  if args.sampler in DENSITY_SAMPLERS and not args.sketch_from:
    options = sketch_options(args)
    try:  # The sketch's own checks, before any worker starts (dim and width come later).
      density_sketch.SketchParams(1, options.rows, options.buckets, options.hashes_per_row,
                                  1.0, options.seed, options.resolved_groups())
    except ValueError as e:
      raise UsageError(f"sketch options --sketch_rows={options.rows} --sketch_groups="
                       f"{options.resolved_groups()} --hashes_per_row="
                       f"{options.hashes_per_row}: {e} (hashes_per_row is 1-16, 2-16 with "
                       "groups; groups needs groups^2 >= rows >= groups)") from e
  if args.sketch_from and args.sampler not in DENSITY_SAMPLERS:
    raise UsageError(f"--sketch_from is used by the samplers {', '.join(DENSITY_SAMPLERS)}")
  if args.sketch_from and not FileSystems.exists(args.sketch_from):
    raise UsageError(f"--sketch_from {args.sketch_from} does not exist")
  teacher_opts = [o for o in ("teacher_field", "teacher_fraction", "quality_head")
                  if getattr(args, o) is not None]
  if args.sampler in HEAD_SAMPLERS:
    if len(teacher_opts) != 1:
      raise UsageError(f"--sampler={args.sampler} needs exactly one of --teacher_field, "
                       "--teacher_fraction (Ask-LLM on that fraction) or --quality_head "
                       f"(a saved head); got {', '.join('--' + o for o in teacher_opts) or 'none'}")
    if args.quality_head and not FileSystems.exists(args.quality_head):
      raise UsageError(f"--quality_head {args.quality_head} does not exist")
  elif teacher_opts:
    raise UsageError(f"{', '.join('--' + o for o in teacher_opts)} only apply to "
                     f"--sampler={' or '.join(HEAD_SAMPLERS)}")


def prepare_output(output: str, overwrite: bool) -> None:
  """Refuses a non-empty output directory unless --overwrite. Nothing of an earlier run is
  removed here: the new run is staged and replaces it only once it has succeeded
  (write.finalize_output). Only the staging leftovers of killed runs are cleared."""
  existing = _existing_outputs(output)
  if existing and not overwrite:
    raise UsageError(
        f"--output {output} is not empty ({len(existing)} files, e.g. {existing[0]}). "
        "Choose a new directory or pass --overwrite to replace earlier outputs.")
  if overwrite:
    write_lib.delete_tree(FileSystems.join(output, write_lib.STAGING_ROOT))


def _normalized(path: str) -> str:
  return path if "://" in path else os.path.realpath(path)


def check_inputs_outside_outputs(input_files: List[str], output: str) -> None:
  """Refuses inputs inside what a run replaces (e.g. --input=OUT/selected/*): the new run
  would remove its own input when it finishes."""
  out = _normalized(output).rstrip("/")
  owned = [f"{out}/{name}" for name in OUTPUT_NAMES + (write_lib.STAGING_ROOT,)]
  for path in input_files:
    norm = _normalized(path)
    for root in owned:
      if norm == root or norm.startswith(root + "/"):
        raise UsageError(
            f"--input file {path} lies inside {root}, which this job writes and replaces; "
            "copy the input elsewhere or choose another --output")


def check_output_writable(output: str) -> None:
  """Fails before the run when --output cannot be written (a file, no permission)."""
  if "://" not in output:
    if os.path.exists(output) and not os.path.isdir(output):
      raise UsageError(f"--output {output} is a file, not a directory")
    try:
      os.makedirs(output, exist_ok=True)
    except OSError as e:
      raise UsageError(f"cannot create --output {output}: {e.strerror or e}") from e
  probe = FileSystems.join(output, write_lib.STAGING_ROOT, f".write-check-{os.getpid()}")
  try:
    with FileSystems.create(probe) as f:
      f.write(b"ok")
    FileSystems.delete([probe])
  except Exception as e:
    raise UsageError(f"cannot write to --output {output}: {_one_line(e)}") from e
  finally:
    if "://" not in output:  # Leave no empty staging directory behind.
      try:
        os.rmdir(os.path.join(output, write_lib.STAGING_ROOT))
      except OSError:
        pass


def _one_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:300] if text else ''}"


# How long a check of a gs:// (or other remote) path may take before the job gives up.
REMOTE_CHECK_TIMEOUT_S = 30.0


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


def check_runner(options: PipelineOptions) -> None:
  """An unknown --runner is an error before anything runs."""
  from apache_beam.runners.runner import create_runner
  runner = options.view_as(StandardOptions).runner
  if isinstance(runner, str):
    try:
      create_runner(runner)
    except (ValueError, ImportError) as e:
      raise UsageError(f"--runner={runner}: {_one_line(e)}") from e


def _is_local_runner(options: PipelineOptions) -> bool:
  runner = options.view_as(StandardOptions).runner
  return runner is None or "Direct" in str(runner) or "FnApi" in str(runner)


def uses_ask_llm(args) -> bool:
  """Ask-LLM runs for its own samplers, and on the teacher fraction of the head's."""
  return args.sampler in ASK_LLM_SAMPLERS or (
      args.sampler in HEAD_SAMPLERS and args.teacher_fraction is not None
      and not args.quality_head)


def uses_embeddings(args) -> bool:
  return args.sampler in DENSITY_SAMPLERS or args.sampler in HEAD_SAMPLERS


def build_pipeline(p: beam.Pipeline, args, staging: Optional[str] = None,
                   finalize_in_pipeline: bool = False) -> None:
  """Adds the whole job to `p`: read -> validate -> score (Ask-LLM, perplexity,
  embeddings, quality head) -> sketch -> density -> select -> rank -> write.
  Nothing is read and no model is loaded here.

  Args:
    staging: where the outputs are written (default: --output itself).
    finalize_in_pipeline: end with a step that writes metrics.json and moves the staged
      outputs into --output (for launches that do not wait for the job).
  """
  staging = staging or args.output
  written = []  # PCollections complete once an output is written.
  patterns = read_lib.split_patterns(args.input)
  teacher_fields = [args.teacher_field] if args.teacher_field else []
  read = p | "ReadDocuments" >> read_lib.ReadDocuments(
      patterns, input_format=args.input_format, text_field=args.text_field,
      id_field=args.id_field, max_doc_bytes=args.max_doc_bytes, keep_fields=teacher_fields)
  docs = read["documents"]
  total = beam.pvalue.AsSingleton(docs | "CountValid" >> beam.combiners.Count.Globally())
  scorer_args = dict(batch_tokens=args.batch_tokens, large_model=args.large_model,
                     model_copies=args.model_copies, total=total)
  hints = ({"accelerator": args.inference_accelerator} if args.inference_accelerator else {})

  def on_accelerator(transform):
    return transform.with_resource_hints(**hints) if hints else transform
  if uses_ask_llm(args):
    if args.sampler in HEAD_SAMPLERS:
      # Only the teacher fraction pays for Ask-LLM; the head scores everything.
      seed, fraction = args.seed, args.teacher_fraction
      teacher, others = docs | "ChooseTeacher" >> beam.Partition(
          lambda d, _: 0 if quality.in_teacher_fraction(seed, d.id, fraction) else 1, 2)
      teacher = teacher | "ScoreAskLLM" >> on_accelerator(ScoreAskLLM(
          ask_llm_config(args), max_batch_size=args.max_batch_size, **scorer_args))
      docs = (teacher, others) | "MergeTeacher" >> beam.Flatten()
    else:
      docs = docs | "ScoreAskLLM" >> on_accelerator(ScoreAskLLM(
          ask_llm_config(args), max_batch_size=args.max_batch_size, **scorer_args))
  if args.sampler == "perplexity":
    docs = docs | "ScorePerplexity" >> on_accelerator(ScorePerplexity(
        perplexity_config(args), max_batch_size=args.max_batch_size, **scorer_args))
  unembedded = None
  if uses_embeddings(args):
    docs = docs | "Embed" >> on_accelerator(EmbedDocuments(embedding_config(args),
                                                           **scorer_args))
    # A document the embedding model failed on skips the head and the sketch and is
    # ranked last (its score row says why).
    docs, unembedded = docs | "SplitUnembedded" >> beam.Partition(
        lambda d, _: 0 if d.embedding is not None else 1, 2)
  if args.sampler in HEAD_SAMPLERS:
    model_name = _model_name(args.embedding_model, "embedding")
    teacher_of = quality.teacher_value_fn(args.teacher_field)
    if args.quality_head:
      head = (p | "HeadPath" >> beam.Create([args.quality_head])
              | "LoadHead" >> beam.Map(quality_head.load_head, model_name))
    else:
      head = docs | "FitQualityHead" >> quality.FitQualityHead(
          teacher_of, args.seed, args.head_l2, model_name,
          args.teacher_field or f"ask_llm_score on --teacher_fraction={args.teacher_fraction}")
      written.append(head | "SaveHead" >> beam.Map(
          quality_head.save_head, FileSystems.join(staging, HEAD_FILE)))
    docs = docs | "ApplyQualityHead" >> quality.ApplyQualityHead(
        head, keep_embeddings=args.sampler in DENSITY_SAMPLERS)
    if not args.quality_head:
      written.append(docs | "ReportHeadFit" >> quality.ReportHeadFit(
          teacher_of, args.seed, FileSystems.join(staging, HEAD_FIT_FILE)))
  if args.sampler in DENSITY_SAMPLERS:
    if args.sketch_from:
      sketch = (p | "SketchPath" >> beam.Create([args.sketch_from])
                | "LoadSketch" >> beam.Map(density_sketch.load_sketch))
    else:
      sketch = docs | "BuildSketch" >> BuildSketch(sketch_options(args))
      written.append(sketch | "SaveSketch" >> beam.Map(
          density_sketch.save_sketch, FileSystems.join(staging, SKETCH_FILE)))
    docs = docs | "AttachDensity" >> AttachDensity(sketch, seed=args.seed)

  if unembedded is not None:
    docs = (docs, unembedded) | "MergeUnembedded" >> beam.Flatten()
  select_args = dict(keep_fraction=args.keep_fraction, keep_count=args.keep_count,
                     num_partitions=args.num_rank_partitions,
                     docs_per_file=args.docs_per_file)
  not_selected = []
  pool_key = POOL_KEYS.get(args.sampler)
  if pool_key is not None:
    # Quality first: a pool of the best documents, then coverage inside it.
    pool_args = dict(select_args)
    if args.keep_count is not None:
      pool_args["keep_count"] = int(math.ceil(args.keep_count * args.quality_pool_factor))
    else:
      pool_args["keep_fraction"] = min(1.0, args.keep_fraction * args.quality_pool_factor)
    pool = docs | "QualityPool" >> SelectTopK(key_fn=pool_key, rank=False,
                                              counter_name="quality_pool", **pool_args)
    docs = pool["selected"]
    not_selected.append(pool["not_selected"])
    select_args["k_of"] = total
  selection = docs | "Select" >> SelectTopK(key_fn=selection_key(args), **select_args)
  not_selected.append(selection["not_selected"])
  rest = (not_selected[0] if len(not_selected) == 1
          else tuple(not_selected) | "FlattenNotSelected" >> beam.Flatten())
  outputs = ({"ranked": selection["ranked"], "not_selected": rest,
              "rejected": read["rejected"]} | "WriteOutputs" >> WriteOutputs(staging))
  written.extend(outputs.values())
  if finalize_in_pipeline:
    _finalize_in_pipeline(p, args, staging, written, total, read["rejected"],
                          selection["plan"])


def _finalize_in_pipeline(p, args, staging, written, total, rejected, plan) -> None:
  """metrics.json and the move into --output from the pipeline itself, for runs nobody
  waits for (Flex Templates); a launcher that waits does this after the run, with the
  runner's counters (finalize_run)."""
  by_reason = beam.pvalue.AsDict(
      rejected | "RejectedReason" >> beam.Map(lambda r: r.reason)
      | "CountPerReason" >> beam.combiners.Count.PerElement())
  options = _options_dict(args)

  def summary(valid, reasons, selection_plan):
    counts = {"valid": valid, "rejected": sum(reasons.values()),
              "rejected_by_reason": dict(sorted(reasons.items())),
              "selected": selection_plan.k}
    counts["read"] = counts["valid"] + counts["rejected"]
    return {"counts": counts, "options": options,
            "note": "written by the pipeline; see the runner's counters "
                    "(namespace select_data) for per-stage counts"}

  p | "Finalize" >> write_lib.FinalizeOutput(
      args.output, staging, OUTPUT_NAMES, written, summary,
      side_inputs=(total, by_reason, beam.pvalue.AsSingleton(plan)))


def _options_dict(args) -> dict:
  return {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()}


def selection_key(args):
  """The sort key of the final selection (ascending = better / drawn first)."""
  if args.sampler == "ask_llm":
    return ask_llm_key
  if args.sampler == "quality_head":
    return quality_key
  if args.sampler == "perplexity":
    return perplexity_key
  if args.sampler == "random":
    return random_key(args.seed)
  return density_sampling_key(args.seed)


def perplexity_config(args):
  from models.perplexity import PerplexityConfig
  return PerplexityConfig(model=args.scorer_model, max_tokens=args.max_tokens,
                          device=args.device, allow_pickle_weights=args.allow_pickle_weights,
                          trust_remote_code=args.trust_remote_code)


def embedding_config(args) -> EmbeddingConfig:
  return EmbeddingConfig(model=args.embedding_model, max_tokens=args.embedding_max_tokens,
                         device=args.device, allow_pickle_weights=args.allow_pickle_weights,
                         trust_remote_code=args.trust_remote_code)


def sketch_options(args) -> SketchOptions:
  return SketchOptions(rows=args.sketch_rows, buckets=args.sketch_buckets,
                       hashes_per_row=args.hashes_per_row, bucket_width=args.bucket_width,
                       seed=args.seed, groups=args.sketch_groups)


def _worst_last(value, higher_is_better: bool = True) -> tuple:
  """A total sort key for a score (ascending = better): a document whose model failed
  (no score) or whose score is NaN sorts after every scored one, so it is selected
  only when nothing else is left, and a NaN never breaks the ordering."""
  if value is None or value != value:
    return (1, 0.0)
  return (0, -value if higher_is_better else value)


def ask_llm_key(doc):
  """Best first: highest score, then smallest id, then source (unique per record)."""
  return (_worst_last(doc.scores.get("ask_llm_score")), doc.id, doc.source)


def quality_key(doc):
  return (_worst_last(doc.scores.get("quality_score")), doc.id, doc.source)


def perplexity_key(doc):
  """The paper's perplexity filter keeps the lowest per-token perplexity first."""
  return (_worst_last(doc.scores.get("perplexity"), higher_is_better=False), doc.id,
          doc.source)


POOL_KEYS = {"ask_llm_density": ask_llm_key, "quality_head_density": quality_key}


def collect_metrics(result, args, config: AskLLMConfig, wall_s: float) -> dict:
  """metrics.json: counts from the runner's counters, options, model, stage times."""
  query = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
  counts, clocks = {}, {}
  for c in query["counters"]:
    counts[c.key.metric.name] = counts.get(c.key.metric.name, 0) + _value(c)
  for d in query["distributions"]:
    v = _value(d)
    if v is not None and v.count:
      name = d.key.metric.name.split(":", 1)[1]
      lo, hi = clocks.get(name, (v.min, v.max))
      clocks[name] = (min(lo, v.min), max(hi, v.max))
  rejected = {k.split(":", 1)[1]: v for k, v in sorted(counts.items())
              if k.startswith("rejected:")}
  summary = {
      "read": counts.get("read", 0), "valid": counts.get("valid", 0),
      "rejected": sum(rejected.values()), "rejected_by_reason": rejected,
      "scored": counts.get("scored", 0), "embedded": counts.get("embedded", 0),
      "selected": counts.get("selected", 0),
  }
  for optional in ("quality_pool", "teacher", "teacher_held_back", "perplexity"):
    if optional in counts:
      summary[optional] = counts[optional]
  failed = {k.split(":", 1)[1]: v for k, v in sorted(counts.items())
            if k.startswith("scoring_failed:") and v}
  if failed:
    summary["scoring_failed"] = failed
  summary["accounted"] = summary["read"] == summary["valid"] + summary["rejected"]
  return {
      "counts": summary,
      "options": _options_dict(args),
      "models": {
          **({"scorer": _model_name(config.model, "scorer")}
             if uses_ask_llm(args) or args.sampler == "perplexity" else {}),
          **({"embedding": _model_name(args.embedding_model, "embedding")}
             if uses_embeddings(args) else {})},
      "ask_llm": ({"prompt": config.prompt, "chat_template": config.chat_template,
                   "score": config.score, "yes_tokens": list(config.yes_tokens),
                   "no_tokens": list(config.no_tokens)}
                  if uses_ask_llm(args) else None),
      "stage_wall_time_s": {k: round((hi - lo) / 1000.0, 3) for k, (lo, hi) in clocks.items()},
      "wall_time_s": round(wall_s, 3),
  }


def _value(metric_result):
  # Committed values where the runner supports them, else attempted.
  try:
    v = metric_result.committed
  except Exception:
    v = None
  return v if v is not None else metric_result.attempted


def _model_name(spec: str, kind: str) -> str:
  if spec == loading.DEFAULT:
    return loading.BUNDLED_SCORER_NAME if kind == "scorer" else loading.BUNDLED_EMBEDDING_NAME
  return spec


def _matched_files(patterns: List[str]) -> List[str]:
  files = []
  for result in FileSystems.match(patterns):
    files.extend(m.path for m in result.metadata_list if not m.path.endswith("/"))
  return files


# The bundled scorer's tokenizer takes ~20 s to load from its GGUF file; with every
# prompt option at its default the checks below are known to pass, so they are skipped.
_PROMPT_DEFAULTS = dict(prompt="auto", chat_template="auto", max_tokens=512,
                        yes_tokens=("yes", "Yes"), no_tokens=("no", "No"))


def check_scorer_options(args, config: AskLLMConfig) -> None:
  """Checks the options that need the scorer's tokenizer (not its weights): the prompt
  fits in --max_tokens, each --yes_tokens/--no_tokens word is a single token, the chat
  template exists when asked for. Runs where the model is on local disk."""
  if not (uses_ask_llm(args)):
    return
  if args.scorer_model == loading.DEFAULT and all(
      getattr(args, k) == v for k, v in _PROMPT_DEFAULTS.items()):
    return
  resolved = loading.resolve_model(config.model, "scorer", config.allow_pickle_weights)
  if resolved.is_hub or config.model.startswith("gs://"):
    return  # Checked when the workers load the model.
  from models.ask_llm import PromptEncoder, load_tokenizer, single_token_ids
  tokenizer = load_tokenizer(resolved, config.trust_remote_code)
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


def run(argv: Optional[List[str]] = None, test_pipeline: Optional[beam.Pipeline] = None):
  """Parses options, checks them, builds and runs the job; returns metrics.json's dict."""
  args, options = parse_args(argv)
  if args.estimate_only:
    return run_estimate(args)
  try:
    check_runner(options)
    patterns = read_lib.split_patterns(args.input)
    within_timeout(lambda: read_lib.check_inputs(patterns, args.input_format),
                   "--input", patterns)
    input_files = within_timeout(lambda: _matched_files(patterns), "--input", patterns)
    check_inputs_outside_outputs(input_files, args.output)
    config = ask_llm_config(args)
    if _is_local_runner(options):
      resolve_device(args.device)  # Fail fast: a local run uses this machine's devices.
      # Resolving the models finds a missing bundled package or path before the run.
      if uses_ask_llm(args) or args.sampler == "perplexity":
        loading.resolve_model(config.model, "scorer", config.allow_pickle_weights)
      if uses_embeddings(args):
        loading.resolve_model(args.embedding_model, "embedding", args.allow_pickle_weights)
    check_sampler_options(args)
    check_scorer_options(args, config)
    # Last, because they create --output: a run refused above leaves nothing behind.
    within_timeout(lambda: check_output_writable(args.output), "--output", [args.output])
    within_timeout(lambda: prepare_output(args.output, args.overwrite), "--output",
                   [args.output])
  except (UsageError, read_lib.InputError, loading.ModelNotFoundError, ValueError,
          RuntimeError, OSError) as e:
    raise UsageError(str(e)) from e
  start = time.time()
  staging = write_lib.staging_dir(args.output, write_lib.new_run_id())
  waits = not options.view_as(GoogleCloudOptions).template_location
  p = test_pipeline or beam.Pipeline(options=options)
  build_pipeline(p, args, staging, finalize_in_pipeline=not waits)
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
    _LOG.error("The run failed; %s is as it was before the run", args.output)
    write_lib.discard_staging(args.output, staging)
    refusal = _model_refusal(e)
    if refusal:
      raise UsageError(refusal) from e
    raise
  metrics = collect_metrics(result, args, config, time.time() - start)
  fit_path = FileSystems.join(staging, HEAD_FIT_FILE)
  if args.sampler in HEAD_SAMPLERS and FileSystems.exists(fit_path):
    with FileSystems.open(fit_path) as f:
      metrics["quality_head"] = {"teacher_documents": metrics["counts"].get("teacher", 0),
                                 "fit_on_held_back": json.loads(f.read())}
  if args.sampler in DENSITY_SAMPLERS:
    # The sketch's actual parameters: the auto width and groups are decided in the job.
    sketch_path = args.sketch_from or FileSystems.join(staging, SKETCH_FILE)
    if FileSystems.exists(sketch_path):
      sketch = density_sketch.load_sketch(sketch_path, verify=False)
      metrics["sketch"] = {**sketch.params.to_dict(), "documents": sketch.n,
                           "path": args.sketch_from or FileSystems.join(args.output,
                                                                        SKETCH_FILE)}
  # metrics.json last, then _SUCCESS: a directory without _SUCCESS is unfinished.
  write_lib.finalize_output(args.output, staging, metrics, OUTPUT_NAMES)
  c = metrics["counts"]
  _LOG.info("Done in %.1f s: read %d, valid %d, rejected %d, selected %d. Outputs in %s",
            metrics["wall_time_s"], c["read"], c["valid"], c["rejected"], c["selected"],
            args.output)
  return metrics


def run_estimate(args) -> dict:
  """--estimate_only: prints and returns the estimate; writes nothing."""
  from beam_pipelines.estimate import estimate
  try:
    result = estimate(args, ask_llm_config(args), sample_size=args.estimate_sample,
                      gpu_tokens_per_second=args.gpu_tokens_per_second,
                      gpu_price_per_hour=args.gpu_price_per_hour)
  except (read_lib.InputError, loading.ModelNotFoundError, ValueError) as e:
    raise UsageError(str(e)) from e
  print(json.dumps(result, indent=2))
  return result


def main(argv=None):
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
  # Beam's type-hint notices and TensorFlow's start-up banner drown the progress lines.
  logging.getLogger("apache_beam").setLevel(logging.WARNING)
  try:
    run(argv)
  except UsageError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  main()
