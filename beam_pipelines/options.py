"""The job's options: the parser and its validators, the checks that run before the
pipeline starts, and JobConfig, the typed configuration built once from them that graph
construction and --estimate_only take.

Every check here raises UsageError with a message that says what to fix; the entry point
prints it as one `error:` line (exit code 2).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import threading
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

from beam_pipelines import samplers as samplers_lib
from beam_pipelines.samplers import (ASK_LLM, CLUSTERS, DENSITY, EMBEDDINGS, HEAD, PERPLEXITY,
                                     Sampler)
from models import loading
from models.ask_llm import AskLLMConfig
from models.embeddings import EmbeddingConfig
from models.prompts import PROMPTS, resolve_prompt
from transforms import cluster_count, sketch_hashing
from transforms.records import INPUT_FORMATS, INT_SCORE_FEATURES, MAX_ID_BYTES, SCORE_FEATURES
from transforms.sketch_hashing import SketchOptions

if TYPE_CHECKING:
  from apache_beam.options.pipeline_options import PipelineOptions

# Nothing here imports Apache Beam (or anything that does) at module level: --help and a
# refused command line answer without paying for it (about 2 s). Beam is imported by the
# functions that need it.

# The score cache's flush defaults (transforms/score_cache.py keeps the same values for
# its own callers; tests/test_options.py checks that they agree).
CACHE_FLUSH_DOCS = 1000
CACHE_FLUSH_SECONDS = 30.0

PROG = "python -m beam_pipelines.select_data"
DESCRIPTION = """Select LLM pre-training data: score every document, keep the best, write ranked TFRecords.

    python -m beam_pipelines.select_data --input=GLOB --output=DIR [options] [Beam options]

Anything not listed below is passed to Beam (--runner, --direct_num_workers,
--temp_location, --project, ...)."""

# Chosen by benchmarks/density_selection.py (see README, "Measured numbers").
DEFAULT_SKETCH = SketchOptions()

# Chosen by 5-fold cross-validation on the dev set (benchmarks/quality_head.py): AUC is
# flat over 0.01-0.3 (0.890-0.894) and falls off below (0.863 at 1e-3); with small
# teacher sets (56-108 documents) 0.1 does as well as an l2 chosen by inner CV.
DEFAULT_HEAD_L2 = 0.1
DEFAULT_EMBEDDING_TOKENS = 128

# k-means (benchmarks/cluster_methods.py): passes beyond 3 changed no selection measurably;
# the sample bounds k-means++ on one worker; SemDeDup's eps follows the paper's range
# (0.080 near-copy share on benchmarks/cluster_pipeline.py; not tuned).
DEFAULT_KMEANS_ITERATIONS = 5
DEFAULT_KMEANS_SAMPLE = 100_000
DEFAULT_SEMDEDUP_EPS = 0.05
DEFAULT_SEMDEDUP_MAX_GROUP = 20_000

# The prompt configuration that measured best for the bundled scorer on the dev set
# (benchmarks/scorer_quality.py); other scorers default to the paper's prompt.
BUNDLED_PROMPT = "paper"
BUNDLED_CHAT_TEMPLATE = "auto"
BUNDLED_SCORE = "p_yes"


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


def _num_clusters(value: str) -> Optional[int]:
  """auto (None) or a positive number of clusters."""
  if value.strip().lower() == "auto":
    return None
  try:
    i = int(value)
  except ValueError:
    i = 0
  if i < 1:
    raise argparse.ArgumentTypeError("must be auto or a positive integer")
  return i


def _nonnegative_int(value: str) -> int:
  i = int(value)
  if i < 0:
    raise argparse.ArgumentTypeError("must be 0 or a positive integer")
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


# Names a copied input field cannot take: the outputs' own columns and features.
_RESERVED_FIELDS = ("id", "text", "rank", "source", "selected", "targets", "num_tokens",
                    "other_scores") + SCORE_FEATURES + INT_SCORE_FEATURES


# --output_format values (transforms/write.py writes them).
OUTPUT_FORMATS = ("tfrecord", "parquet", "jsonl")


def _output_formats(value: str) -> Tuple[str, ...]:
  formats = tuple(dict.fromkeys(f.strip() for f in value.split(",") if f.strip()))
  unknown = [f for f in formats if f not in OUTPUT_FORMATS]
  if unknown or not formats:
    raise argparse.ArgumentTypeError(
        f"{', '.join(unknown) or 'nothing'}: choose from {', '.join(OUTPUT_FORMATS)}")
  return formats


def _field_names(value: str) -> Tuple[str, ...]:
  names = tuple(n.strip() for n in value.split(",") if n.strip())
  clash = [n for n in names if n in _RESERVED_FIELDS or n.endswith("_error")]
  if clash:
    raise argparse.ArgumentTypeError(
        f"{', '.join(clash)}: the outputs already have a column of that name")
  if len(set(names)) != len(names):
    raise argparse.ArgumentTypeError("a field is named twice")
  return names


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
      prog=PROG, description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
      allow_abbrev=False)
  io = p.add_argument_group("input and output")
  io.add_argument("--input", required=True,
                  help="File, glob, or comma-separated list (not a directory: use DIR/*); "
                       "local or gs://; .gz, .bz2, .xz and .zst are read transparently.")
  io.add_argument("--output", required=True,
                  help="Output directory (local or gs://): selected/, scores/, rejected/, "
                       "metrics.json, report.html and report.json, _SUCCESS (and the "
                       "sketch or quality head a sampler fitted).")
  io.add_argument("--input_format", default="auto", choices=INPUT_FORMATS,
                  help="auto picks by extension (.jsonl/.json, .txt, .tfrecord, optionally "
                       "compressed); text = one document per line; tfrecord = tf.train.Example "
                       "with a bytes feature. Default: auto.")
  io.add_argument("--text_field", default="text",
                  help="JSON field or Example feature holding the text. Default: text.")
  io.add_argument("--id_field", default=None,
                  help="Field holding the document id; without it the id is a hash of the "
                       "text.")
  io.add_argument("--max_doc_bytes", type=_positive_int, default=10 * 1024 * 1024,
                  help="Longer documents are rejected as too_large; shorter ones are kept "
                       "whole (truncated only for scoring). Default: 10485760.")
  io.add_argument("--max_id_bytes", type=_positive_int, default=MAX_ID_BYTES,
                  help="Ids (--id_field) longer than this many bytes (UTF-8) are rejected "
                       "as invalid_id: every rank boundary holds an id, so this bounds "
                       f"their memory. Default: {MAX_ID_BYTES}.")
  io.add_argument("--overwrite", **_FLAG,
                  help="Replace the outputs of an earlier run in --output once this run "
                       "has succeeded (otherwise a non-empty --output is refused); other "
                       "files there, the score cache included, are kept.")
  io.add_argument("--resume", **_FLAG,
                  help="Continue into a non-empty --output after a failed or killed run "
                       "(or to select again): documents whose scores are in the cache "
                       "skip the models, the rest are scored; the run outputs are replaced "
                       "once this run succeeds, the cache is kept.")
  io.add_argument("--scores_format", default="auto", choices=("auto", "jsonl", "parquet"),
                  help="Format of scores/ (one row per valid document). auto: parquet for "
                       "gs:// outputs (about 5x smaller at scale, typed columns), jsonl "
                       "for local ones (readable with any tool). Default: auto.")

  tk = p.add_argument_group("training output")
  tk.add_argument("--tokenizer", default=None,
                  help="A SentencePiece model file (tokenized with tensorflow-text), or a "
                       "Hugging Face tokenizer.json or a directory holding one (tokenized "
                       "with tokenizers), local or gs://: the selected documents are written "
                       "with `targets` (int64 ids, the seqio/T5X feature) and `num_tokens`; "
                       "the text is never truncated. Default: none.")
  tk.add_argument("--output_format", type=_output_formats, default=("tfrecord",),
                  help="Format(s) of selected/, comma-separated: tfrecord "
                       "(tf.train.Example), parquet, jsonl (gzip-compressed JSON Lines); "
                       "each ranked the same way (file order, then record order, is rank "
                       "order) with the same fields. Default: tfrecord.")
  tk.add_argument("--keep_fields", type=_field_names, default=(),
                  help="Comma-separated input fields to copy into selected/ (a string "
                       "feature: strings as they are, numbers, booleans, lists and objects "
                       "as JSON text, a missing field as the empty string) and scores/ (as "
                       "they are; null when missing), e.g. url,edu_score. Default: none.")
  tk.add_argument("--append_eos", **_FLAG,
                  help="With --tokenizer: end every document's targets with the "
                       "end-of-sequence id (a tokenizer.json: the eos_token of the "
                       "tokenizer_config.json beside it).")

  lg = p.add_argument_group("progress and report")
  lg.add_argument("--progress_interval", type=_positive_float, default=30.0,
                  help="Seconds between progress lines while a model stage runs (model "
                       "loading included): documents done of those queued, docs/s over "
                       "the last interval and overall, time left. Default: 30.")
  lg.add_argument("--report", **{**_FLAG, "default": True},
                  help="Write OUTPUT/report.html (one self-contained page: the run, the "
                       "funnel, score histograms and percentiles, kept share per input "
                       "file, examples) and report.json (its statistics, computed in the "
                       "pipeline with combiners). Default: true.")
  lg.add_argument("--verbose", **_FLAG,
                  help="Show third-party progress bars and start-up messages (model "
                       "loading, TensorFlow, Beam's INFO log) that a run hides by default.")

  ca = p.add_argument_group("score cache (score once, select many)")
  ca.add_argument("--cache", default=None,
                  help="Directory (local or gs://) keeping every model output, keyed by "
                       "the text and a fingerprint of the model and its settings; a rerun, "
                       "a --resume or a new selection reuses it instead of running models "
                       "again. none: no cache. Default: OUTPUT/cache.")
  ca.add_argument("--cache_flush_docs", type=_positive_int,
                  default=CACHE_FLUSH_DOCS,
                  help="Write cached outputs at least every this many documents per "
                       "worker process (what a killed job can lose). Default: "
                       f"{CACHE_FLUSH_DOCS}.")
  ca.add_argument("--cache_flush_seconds", type=_positive_float,
                  default=CACHE_FLUSH_SECONDS,
                  help="... and at least every this many seconds. Default: "
                       f"{CACHE_FLUSH_SECONDS:g}.")

  sel = p.add_argument_group("selection")
  sel.add_argument("--sampler", default=samplers_lib.DEFAULT,
                   choices=tuple(samplers_lib.SAMPLERS), help=samplers_lib.parser_help())
  sel.add_argument("--quality_pool_factor", type=_positive_float, default=2.0,
                   help="ask_llm_density, quality_head_density: the quality pool holds "
                        "this many times the documents to select (capped at all). "
                        "Default: 2.0.")
  how_many = sel.add_mutually_exclusive_group()
  how_many.add_argument("--keep_fraction", type=_fraction, default=None,
                        help="Select floor(N * F) documents (at least 1). Default: 0.2.")
  how_many.add_argument("--keep_count", type=_positive_int, default=None,
                        help="Select exactly this many documents (all if fewer).")
  how_many.add_argument("--keep_tokens", type=_positive_int, default=None,
                        help="Select in rank (or draw) order until the selected documents "
                             "hold at least this many tokens of --tokenizer (the last one "
                             "whole; everything if the input holds fewer).")
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

  hd = p.add_argument_group(
      "quality head (a ridge head on the embeddings: the bundled one, or one fitted to a "
      "teacher score)")
  hd.add_argument("--teacher_field", default=None,
                  help="Numeric input field holding a teacher score (e.g. an earlier GPU "
                       "Ask-LLM run, or labels); records with it form the teacher set.")
  hd.add_argument("--teacher_fraction", type=_fraction, default=None,
                  help="Run Ask-LLM only on this deterministic fraction of the documents "
                       "(chosen by a hash of --seed and id) and use it as the teacher.")
  hd.add_argument("--quality_head", default=None,
                  help="Apply a saved head (an earlier run's quality_head.npz) instead of "
                       "fitting one; it must come from the same --embedding_model. "
                       "'bundled': the head that ships with the package (fitted to "
                       "Llama-3-70B educational scores on the bundled embeddings), the "
                       "default of the head samplers when no teacher option is given.")
  hd.add_argument("--head_l2", type=_positive_float, default=DEFAULT_HEAD_L2,
                  help="Ridge penalty of the head (scaled by the teacher set's size). "
                       f"Default: {DEFAULT_HEAD_L2}.")

  dn = p.add_argument_group("density (coverage)")
  dn.add_argument("--embedding_model", default=loading.DEFAULT,
                  help="default (bundled all-MiniLM-L6-v2), a local directory, a gs:// "
                       "directory, or a Hugging Face Hub id (needs network).")
  dn.add_argument("--embedding_max_tokens", type=_positive_int, default=None,
                  help="Documents are truncated to this many tokens for embedding. "
                       f"Default: {DEFAULT_EMBEDDING_TOKENS}, or the token budget a "
                       "saved head (--quality_head) was fitted at.")
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

  cl = p.add_argument_group(
      "clusters (k-means on the embeddings: the balanced, semdedup and prototypes samplers)")
  cl.add_argument("--num_clusters", type=_num_clusters, default=None,
                  help="Number of k-means clusters, or auto: "
                       f"{cluster_count.AUTO_RULE}. Default: auto.")
  cl.add_argument("--kmeans_iterations", type=_nonnegative_int,
                  default=DEFAULT_KMEANS_ITERATIONS,
                  help="Lloyd passes over all documents after the k-means++ start (each "
                       "pass reads every embedding once). Default: "
                       f"{DEFAULT_KMEANS_ITERATIONS}.")
  cl.add_argument("--kmeans_sample", type=_positive_int, default=DEFAULT_KMEANS_SAMPLE,
                  help="Documents (a deterministic hash sample) that k-means++ picks the "
                       "first centroids from, on one worker. Default: "
                       f"{DEFAULT_KMEANS_SAMPLE:,}.")
  cl.add_argument("--clusters_from", default=None,
                  help="Assign the documents to saved centroids (an earlier run's "
                       "clusters.npz, local or gs://) instead of fitting k-means.")
  cl.add_argument("--semdedup_eps", type=_fraction, default=DEFAULT_SEMDEDUP_EPS,
                  help="SemDeDup: documents of one cluster with cosine similarity above "
                       f"1 - eps are duplicates. Default: {DEFAULT_SEMDEDUP_EPS}.")
  cl.add_argument("--semdedup_max_group", type=_positive_int,
                  default=DEFAULT_SEMDEDUP_MAX_GROUP,
                  help="SemDeDup compares all pairs of a cluster on one worker (memory "
                       "and time grow with its size squared); a larger cluster is split "
                       "by random hyperplanes, and a part still larger into chunks, whose "
                       "pairs across parts are not compared. Default: "
                       f"{DEFAULT_SEMDEDUP_MAX_GROUP:,}.")

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
                  help="At most this many documents per Ask-LLM or perplexity batch "
                       "(embedding batches hold up to 256). Default: 64.")
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
  if args.keep_fraction is None and args.keep_count is None and args.keep_tokens is None:
    args.keep_fraction = 0.2
  unknown = _unknown_beam_args(beam_args)
  if unknown:
    parser.error(f"unknown option(s): {' '.join(unknown)} (neither this job's nor Beam's)")
  from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
  options = PipelineOptions(beam_args)
  if options.view_as(StandardOptions).runner is None:
    # The DirectRunner first tries to download the Prism runner binary; the FnApiRunner
    # (what the DirectRunner uses for batch anyway) runs locally with no download.
    options.view_as(StandardOptions).runner = "FnApiRunner"
  return args, options


def _unknown_beam_args(beam_args: List[str]) -> List[str]:
  """Arguments that no Beam options class knows: a typo would otherwise be dropped."""
  from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser
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


def perplexity_config(args):
  from models.perplexity import PerplexityConfig
  return PerplexityConfig(model=args.scorer_model, max_tokens=args.max_tokens,
                          device=args.device, allow_pickle_weights=args.allow_pickle_weights,
                          trust_remote_code=args.trust_remote_code)


def embedding_config(args) -> EmbeddingConfig:
  tokens = args.embedding_max_tokens
  return EmbeddingConfig(model=args.embedding_model,
                         max_tokens=DEFAULT_EMBEDDING_TOKENS if tokens is None else tokens,
                         device=args.device, allow_pickle_weights=args.allow_pickle_weights,
                         trust_remote_code=args.trust_remote_code)


def head_options(args) -> Tuple[Optional[str], int]:
  """(--quality_head, --embedding_max_tokens) as the job uses them.

  A head sampler given no teacher option applies the bundled head. A saved head only
  works on the embeddings it was fitted on: the bundled head's embedding model is the
  bundled one, and a head that records its token budget sets the default of
  --embedding_max_tokens (a different value is refused before the run).
  """
  head, tokens = args.quality_head, args.embedding_max_tokens
  sampler = samplers_lib.SAMPLERS[args.sampler]
  implicit = (sampler.uses(HEAD) and head is None and args.teacher_field is None
              and args.teacher_fraction is None)
  if implicit:
    head = loading.BUNDLED_HEAD
  if sampler.uses(HEAD) and head == loading.BUNDLED_HEAD:
    given = (f"--sampler={sampler.name} with no --teacher_field, --teacher_fraction or "
             "--quality_head" if implicit else "--quality_head=bundled")
    if args.embedding_model != loading.DEFAULT:
      raise UsageError(
          f"{given} applies the bundled quality head, which reads the bundled embedding "
          f"model's vectors, not those of --embedding_model={args.embedding_model}: fit a "
          "head on this model's embeddings with --teacher_field (a score in the input) or "
          "--teacher_fraction (Ask-LLM on a fraction of the documents)")
    fitted = loading.bundled_head_settings()["embedding_max_tokens"]
    if tokens is not None and tokens != fitted:
      raise UsageError(
          f"{given} applies the bundled quality head, fitted on embeddings of the first "
          f"{fitted} tokens: drop --embedding_max_tokens={tokens}, or fit a head at "
          f"{tokens} tokens with --teacher_field or --teacher_fraction")
    tokens = fitted
  return head, DEFAULT_EMBEDDING_TOKENS if tokens is None else tokens


def sketch_options(args) -> SketchOptions:
  return SketchOptions(rows=args.sketch_rows, buckets=args.sketch_buckets,
                       hashes_per_row=args.hashes_per_row, bucket_width=args.bucket_width,
                       seed=args.seed, groups=args.sketch_groups)


def check_sampler_options(job: "JobConfig") -> None:
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


def check_cluster_options(job: "JobConfig") -> None:
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


def check_scorer_options(job: "JobConfig") -> None:
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


def check_runner(options: PipelineOptions) -> None:
  """An unknown --runner is an error before anything runs."""
  from apache_beam.runners.runner import create_runner
  from apache_beam.options.pipeline_options import StandardOptions
  runner = options.view_as(StandardOptions).runner
  if isinstance(runner, str):
    try:
      create_runner(runner)
    except (ValueError, ImportError) as e:
      raise UsageError(f"--runner={runner}: {one_line(e)}") from e


def is_local_runner(options: PipelineOptions) -> bool:
  from apache_beam.options.pipeline_options import StandardOptions
  runner = options.view_as(StandardOptions).runner
  return runner is None or "Direct" in str(runner) or "FnApi" in str(runner)


def one_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:300] if text else ''}"


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


CACHE_DIR = "cache"  # the default --cache, inside --output


def cache_dir(value: Optional[str], output: str) -> Optional[str]:
  """--cache resolved: None for `none`, OUTPUT/cache when not given."""
  if value is None:
    from apache_beam.io.filesystems import FileSystems
    return FileSystems.join(output, CACHE_DIR)
  return None if value.strip().lower() == "none" else value


def scores_format(value: str, output: str) -> str:
  if value == "auto":
    return "parquet" if output.startswith("gs://") else "jsonl"
  return value


@dataclasses.dataclass(frozen=True)
class JobConfig:
  """Every option of a run, typed, with the model and sketch configs resolved once.
  Graph construction (graph.build_pipeline), the checks above, run metrics and
  --estimate_only take this, never argparse's namespace."""
  patterns: Tuple[str, ...]
  output: str
  input_format: str
  text_field: str
  id_field: Optional[str]
  max_doc_bytes: int
  overwrite: bool
  sampler: Sampler
  keep_fraction: Optional[float]
  keep_count: Optional[int]
  quality_pool_factor: float
  num_rank_partitions: int
  docs_per_file: int
  seed: int
  scorer: AskLLMConfig
  embedding: EmbeddingConfig
  sketch: SketchOptions
  sketch_from: Optional[str]
  teacher_field: Optional[str]
  teacher_fraction: Optional[float]
  quality_head: Optional[str]
  head_l2: float
  batch_tokens: int
  max_batch_size: int
  large_model: bool
  model_copies: Optional[int]
  inference_accelerator: Optional[str]
  estimate_sample: int
  gpu_tokens_per_second: Optional[float]
  gpu_price_per_hour: Optional[float]
  resume: bool = False
  cache: Optional[str] = None          # the cache directory; None: --cache=none
  cache_flush_docs: int = CACHE_FLUSH_DOCS
  cache_flush_seconds: float = CACHE_FLUSH_SECONDS
  scores_format: str = "jsonl"         # jsonl | parquet (auto resolved)
  max_id_bytes: int = MAX_ID_BYTES
  progress_interval: float = 30.0
  report: bool = True
  tokenizer: Optional[str] = None
  append_eos: bool = False
  keep_fields: Tuple[str, ...] = ()
  keep_tokens: Optional[int] = None
  output_formats: Tuple[str, ...] = ("tfrecord",)
  num_clusters: Optional[int] = None   # None: auto
  kmeans_iterations: int = 0
  kmeans_sample: int = 0
  clusters_from: Optional[str] = None
  semdedup_eps: float = 0.0
  semdedup_max_group: int = 0
  # The options as given (for metrics.json and the launch log).
  options: Dict[str, Any] = dataclasses.field(default_factory=dict)

  @classmethod
  def from_args(cls, args: argparse.Namespace) -> "JobConfig":
    """Raises ValueError when an option cannot be resolved (e.g. an unreadable @FILE)."""
    from transforms import read as read_lib
    head, tokens = head_options(args)
    args = argparse.Namespace(**{**vars(args), "quality_head": head,
                                 "embedding_max_tokens": tokens})
    return cls(
        patterns=tuple(read_lib.split_patterns(args.input)), output=args.output,
        input_format=args.input_format, text_field=args.text_field, id_field=args.id_field,
        max_doc_bytes=args.max_doc_bytes, overwrite=args.overwrite,
        sampler=samplers_lib.SAMPLERS[args.sampler], keep_fraction=args.keep_fraction,
        keep_count=args.keep_count, quality_pool_factor=args.quality_pool_factor,
        num_rank_partitions=args.num_rank_partitions, docs_per_file=args.docs_per_file,
        seed=args.seed, scorer=ask_llm_config(args), embedding=embedding_config(args),
        sketch=sketch_options(args), sketch_from=args.sketch_from,
        teacher_field=args.teacher_field, teacher_fraction=args.teacher_fraction,
        quality_head=args.quality_head, head_l2=args.head_l2,
        batch_tokens=args.batch_tokens, max_batch_size=args.max_batch_size,
        large_model=args.large_model, model_copies=args.model_copies,
        inference_accelerator=args.inference_accelerator,
        estimate_sample=args.estimate_sample,
        gpu_tokens_per_second=args.gpu_tokens_per_second,
        gpu_price_per_hour=args.gpu_price_per_hour, resume=args.resume,
        cache=cache_dir(args.cache, args.output), cache_flush_docs=args.cache_flush_docs,
        cache_flush_seconds=args.cache_flush_seconds,
        scores_format=scores_format(args.scores_format, args.output),
        max_id_bytes=args.max_id_bytes,
        progress_interval=args.progress_interval, report=args.report,
        tokenizer=args.tokenizer, append_eos=args.append_eos, keep_fields=args.keep_fields,
        output_formats=args.output_format, keep_tokens=args.keep_tokens,
        num_clusters=args.num_clusters, kmeans_iterations=args.kmeans_iterations,
        kmeans_sample=args.kmeans_sample, clusters_from=args.clusters_from,
        semdedup_eps=args.semdedup_eps, semdedup_max_group=args.semdedup_max_group,
        options=dict(vars(args)))

  @property
  def runs_ask_llm(self) -> bool:
    """Ask-LLM runs for its own samplers, and on the teacher fraction of the head's."""
    return self.sampler.uses(ASK_LLM) or (
        self.sampler.uses(HEAD) and self.teacher_fraction is not None
        and not self.quality_head)

  @property
  def runs_perplexity(self) -> bool:
    return self.sampler.uses(PERPLEXITY)

  @property
  def runs_embeddings(self) -> bool:
    return self.sampler.uses(EMBEDDINGS)

  @property
  def perplexity(self):
    return perplexity_config(argparse.Namespace(**self.options))

  def model_stages(self) -> Dict[str, Any]:
    """{model namespace: its config} of the model stages this job runs."""
    stages = {}
    if self.runs_ask_llm:
      stages["ask_llm"] = self.scorer
    if self.runs_perplexity:
      stages["perplexity"] = self.perplexity
    if self.runs_embeddings:
      stages["embeddings"] = self.embedding
    return stages

  def scorer_name(self) -> str:
    return loading.model_name(self.scorer.model, "scorer")

  def embedding_name(self) -> str:
    return loading.model_name(self.embedding.model, "embedding")
