"""The job's command line: the parser (build_parser: its groups, defaults and --help, with
the choices and their help taken from the tables that define them) and parse_args.

The value types are option_types.py; what the options become is config.py (JobConfig);
every check before the run, in order, is checks.py. The names other modules import from
here are re-exported. Nothing here imports Apache Beam (or anything that does) at module
level: --help and a refused command line answer without paying for it (about 2 s).
"""
from __future__ import annotations

import argparse
from typing import List, Optional

from beam_pipelines import config, config_file, feature_options
from beam_pipelines import samplers as samplers_lib
from beam_pipelines.checks import (UsageError, check_runner, check_sampler_options,
                                   check_scorer_options, make_local_directory, one_line,
                                   within_timeout)
from beam_pipelines.config import (CACHE_DIR, CACHE_FLUSH_DOCS, CACHE_FLUSH_SECONDS,
                                   DEFAULT_EMBEDDING_TOKENS, JobConfig, ask_llm_config,
                                   embedding_config, perplexity_config)
from beam_pipelines.option_types import (FLAG, MAX_RANK_PARTITIONS, OUTPUT_FORMAT_HELP,
                                         OUTPUT_FORMATS, bucket_width, csv, field_names,
                                         fraction, nonnegative_int, num_clusters,
                                         output_formats, positive_float, positive_int,
                                         registered_signals, signal_names,
                                         rank_partitions, seed, sketch_groups)
from models import loading
from models.prompts import PROMPTS
from transforms import cluster_count
from transforms.records import INPUT_FORMATS, MAX_ID_BYTES

# What other modules import from here: the parser's, and re-exported config's and checks'.
__all__ = ["DESCRIPTION", "MAX_RANK_PARTITIONS", "OUTPUT_FORMATS", "PROG", "build_parser",
           "parse_args", "CACHE_DIR", "CACHE_FLUSH_DOCS", "CACHE_FLUSH_SECONDS",
           "DEFAULT_EMBEDDING_TOKENS", "JobConfig", "ask_llm_config", "embedding_config",
           "perplexity_config", "UsageError", "check_runner", "check_sampler_options",
           "check_scorer_options", "make_local_directory", "one_line", "within_timeout"]

PROG = "python -m beam_pipelines.select_data"
DESCRIPTION = """Select LLM pre-training data: score every document, keep the best, write ranked TFRecords.

    python -m beam_pipelines.select_data --input=GLOB --output=DIR [options] [Beam options]

Anything not listed below is passed to Beam (--runner, --direct_num_workers,
--temp_location, --project, ...)."""


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
                  help="Output directory (local or gs://): selected/ (a further "
                       "--output_format in selected_FORMAT/), features.json, scores/, "
                       "rejected/, metrics.json, report.html and report.json, _SUCCESS "
                       "(and the sketch or quality head a sampler fitted).")
  io.add_argument(config_file.OPTION, default=None, metavar="FILE", help=config_file.HELP)
  io.add_argument("--input_format", default="auto", choices=INPUT_FORMATS,
                  help="auto picks by extension (.jsonl/.json, .txt, .tfrecord, optionally "
                       "compressed; .parquet, .arrow, .csv, .tsv, .warc.wet.gz); text = one "
                       "document per line; tfrecord = tf.train.Example with a bytes feature; "
                       "parquet/arrow/csv/tsv: a row per document (csv/tsv with a header "
                       "row); wet: Common Crawl's conversion records. Default: auto.")
  io.add_argument("--text_field", default="text",
                  help="JSON field or Example feature holding the text; a dotted path "
                       "(meta.body) reads a nested object or Parquet struct, and a key "
                       "that holds the dot itself wins where it exists (this holds for "
                       "every field option). Default: text.")
  io.add_argument("--id_field", default=None,
                  help="Field (or dotted path) holding the document id; without it the "
                       "id is a hash of the text.")
  io.add_argument("--max_doc_bytes", type=positive_int, default=10 * 1024 * 1024,
                  help="Longer documents are rejected as too_large; shorter ones are kept "
                       "whole (truncated only for scoring). Default: 10485760.")
  io.add_argument("--max_id_bytes", type=positive_int, default=MAX_ID_BYTES,
                  help="Ids (--id_field) longer than this many bytes (UTF-8) are rejected "
                       "as invalid_id: every rank boundary holds an id, so this bounds "
                       f"their memory. Default: {MAX_ID_BYTES}.")
  io.add_argument("--max_rejected_fraction", type=fraction,
                  default=config.DEFAULT_MAX_REJECTED_FRACTION,
                  help="Fail the run (nothing committed, its outputs kept in staging for "
                       "inspection) when more than this share of the records read is "
                       "rejected: that many means options that do not fit the data (a "
                       "field name, a format) or damaged input, while a usable corpus "
                       "rejects a few percent. 1 turns the check off. A run with no valid "
                       "document always fails. Default: "
                       f"{config.DEFAULT_MAX_REJECTED_FRACTION}.")
  io.add_argument("--overwrite", **FLAG,
                  help="Replace the outputs of an earlier run in --output once this run "
                       "has succeeded (otherwise a non-empty --output is refused); other "
                       "files there, the score cache included, are kept.")
  io.add_argument("--resume", **FLAG,
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
  tk.add_argument("--output_format", type=output_formats, default=("tfrecord",),
                  help="Format(s) of selected/, comma-separated: "
                       f"{', '.join(OUTPUT_FORMAT_HELP.values())}; each ranked the same way "
                       "(file order, then record order, is rank order) with the same "
                       "fields. Default: tfrecord.")
  tk.add_argument("--keep_fields", type=field_names, default=(),
                  help="Comma-separated input fields or dotted paths (meta.url) to copy "
                       "into selected/ and scores/, keeping their type: bool, int, float, "
                       "string or nested (a Parquet struct/list) when every record "
                       "agrees, else JSON text; features.json says which "
                       "(docs/outputs.md), e.g. url,edu_score. Default: none.")
  tk.add_argument("--signals", type=signal_names, default=(),
                  help="Comma-separated signals to compute in this run besides those the "
                       "sampler needs (their scores go to scores/ and every selected "
                       "record), from the registry of signals: "
                       f"{', '.join(registered_signals())}. Default: none.")
  tk.add_argument("--append_eos", **FLAG,
                  help="With --tokenizer: end every document's targets with the "
                       "end-of-sequence id (a tokenizer.json: the eos_token of the "
                       "tokenizer_config.json beside it).")

  lg = p.add_argument_group("progress and report")
  lg.add_argument("--progress_interval", type=positive_float, default=30.0,
                  help="Seconds between progress lines while a model stage runs (model "
                       "loading included): documents done of those queued, docs/s over "
                       "the last interval and overall, time left. Default: 30.")
  lg.add_argument("--report", **{**FLAG, "default": True},
                  help="Write OUTPUT/report.html (one self-contained page: the run, the "
                       "funnel, score histograms and percentiles, kept share per input "
                       "file, examples) and report.json (its statistics, computed in the "
                       "pipeline with combiners). Default: true.")
  lg.add_argument("--verbose", **FLAG,
                  help="Show third-party progress bars and start-up messages (model "
                       "loading, TensorFlow, Beam's INFO log) that a run hides by default.")

  ca = p.add_argument_group("score cache (score once, select many)")
  ca.add_argument("--cache", default=None,
                  help="Directory (local or gs://) keeping every model output, keyed by "
                       "the text and a fingerprint of the model and its settings; a rerun, "
                       "a --resume or a new selection reuses it instead of running models "
                       "again. none: no cache. Default: OUTPUT/cache.")
  ca.add_argument("--cache_flush_docs", type=positive_int,
                  default=CACHE_FLUSH_DOCS,
                  help="Write cached outputs at least every this many documents per "
                       "worker process (what a killed job can lose). Default: "
                       f"{CACHE_FLUSH_DOCS}.")
  ca.add_argument("--cache_flush_seconds", type=positive_float,
                  default=CACHE_FLUSH_SECONDS,
                  help="... and at least every this many seconds. Default: "
                       f"{CACHE_FLUSH_SECONDS:g}.")

  sel = p.add_argument_group("selection")
  sel.add_argument("--sampler", default=None,
                   choices=tuple(samplers_lib.SAMPLERS), help=samplers_lib.parser_help())
  sel.add_argument("--quality_pool_factor", type=positive_float, default=2.0,
                   help="ask_llm_density, quality_head_density: the quality pool holds "
                        "this many times the documents to select (capped at all). "
                        "Default: 2.0.")
  how_many = sel.add_mutually_exclusive_group()
  how_many.add_argument("--keep_fraction", type=fraction, default=None,
                        help="Select floor(N * F) documents (at least 1). Default: "
                             f"{config.DEFAULT_KEEP_FRACTION}.")
  how_many.add_argument("--keep_count", type=positive_int, default=None,
                        help="Select exactly this many documents (all if fewer).")
  how_many.add_argument("--keep_tokens", type=positive_int, default=None,
                        help="Select in rank (or draw) order until the selected documents "
                             "hold at least this many tokens of --tokenizer (the last one "
                             "whole; everything if the input holds fewer).")
  sel.add_argument("--num_rank_partitions", type=rank_partitions, default=1000,
                   help="Key ranges for exact distributed top-k (at most 100,000). A ranked "
                        "file holds whole ranges and is sorted in one worker's memory: choose "
                        "about N / 100,000 for large inputs. Default: 1000.")
  sel.add_argument("--docs_per_file", type=positive_int, default=50_000,
                   help="Ranked TFRecord files hold at least this many documents (the last "
                        "may hold fewer). Default: 50000.")
  sel.add_argument("--seed", type=seed, default=0,
                   help="Seed of the sampling draws and the sketch's hash functions. "
                        "Default: 0.")

  hd = p.add_argument_group(
      "quality head (a ridge head on the embeddings: the bundled one, or one fitted to a "
      "teacher score)")
  hd.add_argument("--teacher_field", default=None,
                  help="Numeric input field (or dotted path) holding a teacher score (e.g. an earlier GPU "
                       "Ask-LLM run, or labels); records with it form the teacher set.")
  hd.add_argument("--teacher_fraction", type=fraction, default=None,
                  help="Run Ask-LLM only on this deterministic fraction of the documents "
                       "(chosen by a hash of --seed and id) and use it as the teacher.")
  hd.add_argument("--quality_head", default=None,
                  help="Apply a saved head (an earlier run's quality_head.npz) instead of "
                       "fitting one; it must come from the same --embedding_model. "
                       "'bundled': the head that ships with the package (fitted to "
                       "Llama-3-70B educational scores on the bundled embeddings), the "
                       "default of the head samplers when no teacher option is given.")
  hd.add_argument("--head_l2", type=positive_float, default=config.DEFAULT_HEAD_L2,
                  help="Ridge penalty of the head (scaled by the teacher set's size). "
                       f"Default: {config.DEFAULT_HEAD_L2}.")

  dn = p.add_argument_group("density (coverage)")
  sketch = config.DEFAULT_SKETCH
  dn.add_argument("--embedding_model", default=loading.DEFAULT,
                  help="default (bundled all-MiniLM-L6-v2), a local directory, a gs:// "
                       "directory, or a Hugging Face Hub id (needs network).")
  dn.add_argument("--embedding_max_tokens", type=positive_int, default=None,
                  help="Documents are truncated to this many tokens for embedding. "
                       f"Default: {DEFAULT_EMBEDDING_TOKENS}, or the token budget a "
                       "saved head (--quality_head) was fitted at.")
  dn.add_argument("--sketch_rows", type=positive_int, default=sketch.rows,
                  help=f"R, rows of the LSH sketch. Default: {sketch.rows}.")
  dn.add_argument("--sketch_buckets", type=positive_int, default=sketch.buckets,
                  help=f"B, buckets per row. Default: {sketch.buckets}.")
  dn.add_argument("--hashes_per_row", type=positive_int,
                  default=sketch.hashes_per_row,
                  help="K, Gaussian projections concatenated per row (sharpens the "
                       f"kernel). Default: {sketch.hashes_per_row}.")
  dn.add_argument("--bucket_width", type=bucket_width, default=sketch.bucket_width,
                  help="Bucket width of the p-stable hashes, or auto (from the distances "
                       "of a sample of the data). Default: "
                       f"{sketch.bucket_width or 'auto'}.")
  dn.add_argument("--sketch_groups", type=sketch_groups, default=sketch.groups,
                  help="Rows draw their K projections from this many shared groups "
                       "(needs groups^2 >= R >= groups and K >= 2): auto = ceil(sqrt(R)), "
                       "5-8x faster, the same selection in our benchmarks; 0 = independent "
                       "rows (closer density ranks). Default: auto.")
  dn.add_argument("--sketch_from", default=None,
                  help="Score against a saved sketch (an earlier run's sketch.npz, local "
                       "or gs://) instead of building one.")

  cl = p.add_argument_group(
      "clusters (k-means on the embeddings: the balanced, semdedup and prototypes samplers)")
  cl.add_argument("--num_clusters", type=num_clusters, default=None,
                  help="Number of k-means clusters, or auto: "
                       f"{cluster_count.AUTO_RULE}. Default: auto.")
  cl.add_argument("--kmeans_iterations", type=nonnegative_int,
                  default=config.DEFAULT_KMEANS_ITERATIONS,
                  help="Lloyd passes over all documents after the k-means++ start (each "
                       "pass reads every embedding once). Default: "
                       f"{config.DEFAULT_KMEANS_ITERATIONS}.")
  cl.add_argument("--kmeans_sample", type=positive_int, default=config.DEFAULT_KMEANS_SAMPLE,
                  help="Documents (a deterministic hash sample) that k-means++ picks the "
                       "first centroids from, on one worker. Default: "
                       f"{config.DEFAULT_KMEANS_SAMPLE:,}.")
  cl.add_argument("--clusters_from", default=None,
                  help="Assign the documents to saved centroids (an earlier run's "
                       "clusters.npz, local or gs://) instead of fitting k-means.")
  cl.add_argument("--semdedup_eps", type=fraction, default=config.DEFAULT_SEMDEDUP_EPS,
                  help="SemDeDup: documents of one cluster with cosine similarity above "
                       f"1 - eps are duplicates. Default: {config.DEFAULT_SEMDEDUP_EPS}.")
  cl.add_argument("--semdedup_max_group", type=positive_int,
                  default=config.DEFAULT_SEMDEDUP_MAX_GROUP,
                  help="SemDeDup compares all pairs of a cluster on one worker (memory "
                       "and time grow with its size squared); a larger cluster is split "
                       "by random hyperplanes, and a part still larger into chunks, whose "
                       "pairs across parts are not compared. Default: "
                       f"{config.DEFAULT_SEMDEDUP_MAX_GROUP:,}.")

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
  sc.add_argument("--yes_tokens", type=csv, default=("yes", "Yes"),
                  help="Comma-separated words whose tokens sum to P(yes). Default: yes,Yes.")
  sc.add_argument("--no_tokens", type=csv, default=("no", "No"),
                  help="Comma-separated words whose tokens sum to P(no). Default: no,No.")
  sc.add_argument("--ask_llm_score", default="auto", choices=("auto", "p_yes", "normalized"),
                  help="Score to rank by: P(yes), or P(yes)/(P(yes)+P(no)). Default: auto.")
  sc.add_argument("--max_tokens", type=positive_int, default=512,
                  help="Token budget of the whole prompt; the document is truncated inside "
                       "the ### delimiters so the question is never cut. Default: 512.")
  sc.add_argument("--batch_tokens", type=positive_int, default=8192,
                  help="Token budget of one inference batch (length-sorted). Default: 8192.")
  sc.add_argument("--max_batch_size", type=positive_int, default=64,
                  help="At most this many documents per Ask-LLM or perplexity batch "
                       "(embedding batches hold up to 256). Default: 64.")
  sc.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                  help="auto uses CUDA when present. Default: auto.")
  sc.add_argument("--large_model", **FLAG,
                  help="Load one model per worker VM shared by its SDK processes (use on "
                       "GPU workers).")
  sc.add_argument("--inference_accelerator", default=None,
                  help="Dataflow right fitting: put a GPU only on the inference steps, e.g. "
                       "'type:nvidia-l4;count:1;install-nvidia-driver' (a resource hint on "
                       "Ask-LLM, perplexity and embedding steps; do not combine with "
                       "--dataflow_service_options=worker_accelerator=...).")
  sc.add_argument("--model_copies", type=positive_int, default=None,
                  help="Load exactly this many model copies per worker VM.")
  est = p.add_argument_group("cost estimate")
  est.add_argument("--estimate_only", **FLAG,
                   help="Read a sample of the input and print, for each stage the sampler "
                        "would run (judge, perplexity, embeddings, quality head, k-means, "
                        "density sketch; the cascade's share), the expected documents, "
                        "tokens (each model's tokenizer) and GPU-hours for the whole input, "
                        "saying which rates are measured and which assumed; exit without "
                        "running inference.")
  est.add_argument("--estimate_format", default="table", choices=("table", "json"),
                   help="--estimate_only prints a table of the stages (table) or their "
                        "JSON (json). Default: table.")
  est.add_argument("--estimate_sample", type=positive_int, default=1000,
                   help="Documents read for --estimate_only. Default: 1000.")
  est.add_argument("--gpu_tokens_per_second", type=positive_float, default=None,
                   help="Measured scoring throughput of one GPU for --estimate_only "
                        "(otherwise derived from the model size, an assumption).")
  est.add_argument("--gpu_price_per_hour", type=positive_float, default=None,
                   help="Price of one GPU worker hour, for --estimate_only's cost line.")
  sc.add_argument("--allow_pickle_weights", **FLAG,
                  help="Allow pickle checkpoints (.bin/.pt); they can run code when loaded.")
  sc.add_argument("--trust_remote_code", **FLAG,
                  help="Allow model repositories to run their own Python code.")
  feature_options.add_all(p)  # dedup, cascade, grouping, precision: one module each
  return p


def parse_args(argv: Optional[List[str]] = None):
  """Returns (our options, Beam PipelineOptions from the remaining arguments)."""
  parser = build_parser()
  # --config=FILE: the file's options go first, so the command line overrides them.
  argv, loaded = config_file.expand(parser, argv, config_file.beam_option_names)
  args, beam_args = parser.parse_known_args(argv)
  config_file.record(args, loaded)
  if args.keep_fraction is None and args.keep_count is None and args.keep_tokens is None:
    args.keep_fraction = config.DEFAULT_KEEP_FRACTION
  if args.sampler is None:  # the bundled head unless a model is named (samplers.py)
    args.sampler = samplers_lib.default_sampler(
        args.scorer_model != loading.DEFAULT or args.embedding_model != loading.DEFAULT
        or getattr(args, "judge_fraction", None) is not None)
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
  _, unknown = config_file.beam_parser().parse_known_args(beam_args)
  return [a for a in unknown if a.startswith("-")]
