"""JobConfig: every option of a run, typed, built once from the parsed command line
(options.py) and taken by the checks (checks.py), graph construction, run metrics, the
report and --estimate_only, never argparse's namespace.

Options that belong together are one value: the budget (how much to select), the
clusters, the quality head, the outputs and the score cache. Their old flat names
(job.keep_fraction, job.num_clusters, job.cache, ...) still read the same values.

Nothing here imports Apache Beam at module level (--help imports this module).
"""
from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Dict, Optional, Tuple

from beam_pipelines import feature_options
from beam_pipelines import samplers as samplers_lib
from beam_pipelines.cascade_options import CascadeConfig
from beam_pipelines.dedup_options import DedupConfig
from beam_pipelines.grouping_options import GroupingConfig
from beam_pipelines import precision_options
from beam_pipelines.precision_options import PrecisionConfig
from beam_pipelines.samplers import ASK_LLM, EMBEDDINGS, HEAD, PERPLEXITY, Sampler
from models import loading
from models.ask_llm import AskLLMConfig
from models.embeddings import EmbeddingConfig
from models.prompts import resolve_prompt
from transforms.sketch_hashing import SketchOptions

# Defaults the parser shows and the config resolves (options.py imports them).
# A run rejecting more than half its records has options that do not fit the data (a
# wrong --text_field or --input_format) or damaged input; usable corpora reject a few %.
DEFAULT_MAX_REJECTED_FRACTION = 0.5
DEFAULT_KEEP_FRACTION = 0.2  # when none of --keep_fraction/--keep_count/--keep_tokens

# The score cache's flush defaults (transforms/score_cache.py keeps the same values for
# its own callers; tests/test_options.py checks that they agree).
CACHE_FLUSH_DOCS = 1000
CACHE_FLUSH_SECONDS = 30.0
CACHE_DIR = "cache"  # the default --cache, inside --output

# Chosen by benchmarks/density_selection.py (see docs/measurements.md).
DEFAULT_SKETCH = SketchOptions()

# Chosen by 5-fold cross-validation on the dev set (benchmarks/quality_head_bench.py): AUC is
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


@dataclasses.dataclass(frozen=True)
class Budget:
  """How much to select; exactly one is set (the parser makes them exclusive and
  defaults to DEFAULT_KEEP_FRACTION): floor(N * fraction) documents (at least 1),
  `count` documents, or documents holding `tokens` tokens of --tokenizer."""
  fraction: Optional[float] = None
  count: Optional[int] = None
  tokens: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
  """k-means on the embeddings (the balanced, semdedup and prototypes samplers)."""
  num_clusters: Optional[int] = None  # None: auto
  kmeans_iterations: int = DEFAULT_KMEANS_ITERATIONS
  kmeans_sample: int = DEFAULT_KMEANS_SAMPLE
  clusters_from: Optional[str] = None
  semdedup_eps: float = DEFAULT_SEMDEDUP_EPS
  semdedup_max_group: int = DEFAULT_SEMDEDUP_MAX_GROUP


@dataclasses.dataclass(frozen=True)
class HeadConfig:
  """The quality head: fitted to a teacher (a field, or Ask-LLM on a fraction) or a
  saved one (`saved`: a path or loading.BUNDLED_HEAD)."""
  teacher_field: Optional[str] = None
  teacher_fraction: Optional[float] = None
  saved: Optional[str] = None
  l2: float = DEFAULT_HEAD_L2


@dataclasses.dataclass(frozen=True)
class OutputConfig:
  """What a run writes into --output besides the ranking itself."""
  formats: Tuple[str, ...] = ("tfrecord",)  # of selected/
  scores_format: str = "jsonl"              # jsonl | parquet (auto resolved)
  keep_fields: Tuple[str, ...] = ()
  tokenizer: Optional[str] = None
  append_eos: bool = False
  docs_per_file: int = 50_000
  report: bool = True


@dataclasses.dataclass(frozen=True)
class CacheConfig:
  """The score cache: its directory (None: --cache=none) and how often it is written."""
  directory: Optional[str] = None
  flush_docs: int = CACHE_FLUSH_DOCS
  flush_seconds: float = CACHE_FLUSH_SECONDS


def _alias(group: str, name: str) -> property:
  """A JobConfig attribute read from one of its groups (job.keep_count is
  job.budget.count)."""
  return property(lambda self: getattr(getattr(self, group), name),
                  doc=f"{group}.{name}")


@dataclasses.dataclass(frozen=True)
class JobConfig:
  """Every option of a run, typed, with the model and sketch configs resolved once."""
  patterns: Tuple[str, ...]
  output: str
  input_format: str
  text_field: str
  id_field: Optional[str]
  max_doc_bytes: int
  max_id_bytes: int
  overwrite: bool
  resume: bool
  sampler: Sampler
  budget: Budget
  quality_pool_factor: float
  num_rank_partitions: int
  seed: int
  scorer: AskLLMConfig
  embedding: EmbeddingConfig
  sketch: SketchOptions
  sketch_from: Optional[str]
  head: HeadConfig
  clusters: ClusterConfig
  outputs: OutputConfig
  score_cache: CacheConfig
  batch_tokens: int
  max_batch_size: int
  large_model: bool
  model_copies: Optional[int]
  inference_accelerator: Optional[str]
  estimate_sample: int
  gpu_tokens_per_second: Optional[float]
  gpu_price_per_hour: Optional[float]
  progress_interval: float = 30.0
  signals: Tuple[str, ...] = ()  # --signals: computed besides the sampler's needs
  # --max_rejected_fraction: a larger rejected share of the records read fails the run.
  max_rejected_fraction: float = DEFAULT_MAX_REJECTED_FRACTION
  # The feature option groups (feature_options.FEATURES: one module each).
  dedup: DedupConfig = dataclasses.field(default_factory=DedupConfig)
  cascade: CascadeConfig = dataclasses.field(default_factory=CascadeConfig)
  grouping: GroupingConfig = dataclasses.field(default_factory=GroupingConfig)
  precision: PrecisionConfig = dataclasses.field(default_factory=PrecisionConfig)
  # The options as given (for metrics.json and the launch log).
  options: Dict[str, Any] = dataclasses.field(default_factory=dict)

  keep_fraction = _alias("budget", "fraction")
  keep_count = _alias("budget", "count")
  keep_tokens = _alias("budget", "tokens")
  teacher_field = _alias("head", "teacher_field")
  teacher_fraction = _alias("head", "teacher_fraction")
  quality_head = _alias("head", "saved")
  head_l2 = _alias("head", "l2")
  num_clusters = _alias("clusters", "num_clusters")
  kmeans_iterations = _alias("clusters", "kmeans_iterations")
  kmeans_sample = _alias("clusters", "kmeans_sample")
  clusters_from = _alias("clusters", "clusters_from")
  semdedup_eps = _alias("clusters", "semdedup_eps")
  semdedup_max_group = _alias("clusters", "semdedup_max_group")
  output_formats = _alias("outputs", "formats")
  scores_format = _alias("outputs", "scores_format")
  keep_fields = _alias("outputs", "keep_fields")
  tokenizer = _alias("outputs", "tokenizer")
  append_eos = _alias("outputs", "append_eos")
  docs_per_file = _alias("outputs", "docs_per_file")
  report = _alias("outputs", "report")
  cache = _alias("score_cache", "directory")
  cache_flush_docs = _alias("score_cache", "flush_docs")
  cache_flush_seconds = _alias("score_cache", "flush_seconds")

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
        max_doc_bytes=args.max_doc_bytes, max_id_bytes=args.max_id_bytes,
        overwrite=args.overwrite, resume=args.resume,
        sampler=samplers_lib.SAMPLERS[args.sampler],
        budget=Budget(args.keep_fraction, args.keep_count, args.keep_tokens),
        quality_pool_factor=args.quality_pool_factor,
        num_rank_partitions=args.num_rank_partitions, seed=args.seed,
        scorer=ask_llm_config(args), embedding=embedding_config(args),
        sketch=sketch_options(args), sketch_from=args.sketch_from,
        head=HeadConfig(args.teacher_field, args.teacher_fraction, args.quality_head,
                        args.head_l2),
        clusters=ClusterConfig(args.num_clusters, args.kmeans_iterations,
                               args.kmeans_sample, args.clusters_from, args.semdedup_eps,
                               args.semdedup_max_group),
        outputs=OutputConfig(args.output_format,
                             scores_format(args.scores_format, args.output),
                             args.keep_fields, args.tokenizer, args.append_eos,
                             args.docs_per_file, args.report),
        score_cache=CacheConfig(cache_dir(args.cache, args.output), args.cache_flush_docs,
                                args.cache_flush_seconds),
        batch_tokens=args.batch_tokens, max_batch_size=args.max_batch_size,
        large_model=args.large_model, model_copies=args.model_copies,
        inference_accelerator=args.inference_accelerator,
        estimate_sample=args.estimate_sample,
        gpu_tokens_per_second=args.gpu_tokens_per_second,
        gpu_price_per_hour=args.gpu_price_per_hour,
        progress_interval=args.progress_interval, signals=tuple(args.signals),
        max_rejected_fraction=getattr(args, "max_rejected_fraction",
                                      DEFAULT_MAX_REJECTED_FRACTION),
        options=dict(vars(args)), **feature_options.configs(args))

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
    return self.sampler.uses(EMBEDDINGS) or self.cascade.uses_head  # the cascade's head

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
      trust_remote_code=args.trust_remote_code,
      precision=precision_options.resolved(args, "scorer"))


def perplexity_config(args):
  from models.perplexity import PerplexityConfig
  return PerplexityConfig(model=args.scorer_model, max_tokens=args.max_tokens,
                          device=args.device, allow_pickle_weights=args.allow_pickle_weights,
                          trust_remote_code=args.trust_remote_code,
                          precision=precision_options.resolved(args, "perplexity"))


def embedding_config(args) -> EmbeddingConfig:
  tokens = args.embedding_max_tokens
  return EmbeddingConfig(model=args.embedding_model,
                         max_tokens=DEFAULT_EMBEDDING_TOKENS if tokens is None else tokens,
                         device=args.device, allow_pickle_weights=args.allow_pickle_weights,
                         trust_remote_code=args.trust_remote_code,
                         precision=precision_options.resolved(args, "embedding"))


def head_options(args) -> Tuple[Optional[str], int]:
  """(--quality_head, --embedding_max_tokens) as the job uses them.

  A head sampler given no teacher option applies the bundled head. A saved head only
  works on the embeddings it was fitted on: the bundled head's embedding model is the
  bundled one, and a head that records its token budget sets the default of
  --embedding_max_tokens (a different value is refused before the run:
  checks.check_bundled_head, and artifact_checks.check_head for a saved file).
  """
  head, tokens = args.quality_head, args.embedding_max_tokens
  sampler = samplers_lib.SAMPLERS[args.sampler]
  # --judge_fraction's cheap signal is the bundled head unless --quality_head names one.
  uses_head = sampler.uses(HEAD) or (getattr(args, "judge_fraction", None) is not None and
                                     getattr(args, "cascade_signal", HEAD) == HEAD)
  implicit = (uses_head and head is None and args.teacher_field is None
              and args.teacher_fraction is None)
  if implicit:
    head = loading.BUNDLED_HEAD
  if uses_head and head == loading.BUNDLED_HEAD:
    from beam_pipelines.checks import check_bundled_head  # checks.py imports this module
    tokens = check_bundled_head(args, implicit)
  return head, DEFAULT_EMBEDDING_TOKENS if tokens is None else tokens


def sketch_options(args) -> SketchOptions:
  return SketchOptions(rows=args.sketch_rows, buckets=args.sketch_buckets,
                       hashes_per_row=args.hashes_per_row, bucket_width=args.bucket_width,
                       seed=args.seed, groups=args.sketch_groups)


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
