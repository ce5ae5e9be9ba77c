"""The Beam stages of the built-in signals (transforms/builtin_signals.py names them), and
the generic stage of a simple signal (a pure per-document function, cached by its
columns). Each is `stage(ctx, docs) -> docs`; the graph runs them in the registry's
order. `ctx.job` is the job's configuration (read by attribute only)."""
from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms import cluster_sampling, kmeans, quality, sketch_io, topics
from transforms import quality_head as quality_head_lib
from transforms import metrics
from transforms import write as write_lib
from transforms.density import AttachDensity, BuildSketch, EmbedDocuments
from transforms.score import ScoreAskLLM, ScorePerplexity
from transforms.score_cache import CacheSpec, LookUpCache, WriteToCache
from transforms.select import resolve_k


@dataclasses.dataclass
class StageContext:
  """What a stage may use: the pipeline, the job, the caches, the model arguments, the
  number of valid documents (a side input), where outputs are staged, and `written` (a
  stage appends the PCollections that finish when its files are written)."""
  p: Any
  job: Any
  signals: List[str]
  caches: Dict[str, CacheSpec]
  model_args: Dict[str, Any]
  total: Any
  staging: str
  written: List[Any]
  accelerator: Optional[str] = None
  unembedded: Any = None  # documents the embedding model failed on (merged back last)

  def on_accelerator(self, transform):
    return (transform.with_resource_hints(accelerator=self.accelerator)
            if self.accelerator else transform)

  def uses(self, name: str) -> bool:
    return name in self.signals


def ask_llm(ctx: StageContext, docs):
  job = ctx.job
  score = ctx.on_accelerator(ScoreAskLLM(job.scorer, max_batch_size=job.max_batch_size,
                                         cache=ctx.caches.get("ask_llm"), **ctx.model_args))
  cascade = getattr(job, "cascade", None)
  if cascade is not None and cascade.enabled:  # the judge on the cheap signal's top F only
    from transforms.cascade import judge_cascade
    return judge_cascade(ctx, docs, score)
  if not ctx.uses("quality_head"):
    return docs | "ScoreAskLLM" >> score
  # Only the teacher fraction pays for Ask-LLM; the head scores everything.
  seed, fraction = job.seed, job.teacher_fraction
  teacher, others = docs | "ChooseTeacher" >> beam.Partition(
      lambda d, _: 0 if quality.in_teacher_fraction(seed, d.id, fraction) else 1, 2)
  return (teacher | "ScoreAskLLM" >> score, others) | "MergeTeacher" >> beam.Flatten()


def perplexity(ctx: StageContext, docs):
  job = ctx.job
  return docs | "ScorePerplexity" >> ctx.on_accelerator(ScorePerplexity(
      job.perplexity, max_batch_size=job.max_batch_size, cache=ctx.caches.get("perplexity"),
      **ctx.model_args))


def embeddings(ctx: StageContext, docs):
  docs = docs | "Embed" >> ctx.on_accelerator(EmbedDocuments(
      ctx.job.embedding, cache=ctx.caches.get("embeddings"), **ctx.model_args))
  # A document the embedding model failed on skips the later stages and is ranked last
  # (its score row says why).
  docs, ctx.unembedded = docs | "SplitUnembedded" >> beam.Partition(
      lambda d, _: 0 if d.embedding is not None else 1, 2)
  return docs


def quality_head(ctx: StageContext, docs):
  """Fits the head on the teacher set (or loads a saved one) and applies it."""
  job, p = ctx.job, ctx.p
  model_name = job.embedding_name()
  teacher_of = quality.teacher_value_fn(job.teacher_field)
  if job.quality_head:
    head = (p | "HeadPath" >> beam.Create([job.quality_head])
            | "LoadHead" >> beam.Map(quality_head_lib.load_head, model_name))
  else:
    head = docs | "FitQualityHead" >> quality.FitQualityHead(
        teacher_of, job.seed, job.head_l2, model_name,
        job.teacher_field or f"ask_llm_score on --teacher_fraction={job.teacher_fraction}",
        job.embedding.max_tokens)
    ctx.written.append(head | "SaveHead" >> beam.Map(
        quality_head_lib.save_head, FileSystems.join(ctx.staging, write_lib.HEAD_FILE)))
  docs = docs | "ApplyQualityHead" >> quality.ApplyQualityHead(
      head, keep_embeddings=ctx.uses("density") or ctx.uses("clusters"))
  if not job.quality_head:
    ctx.written.append(docs | "ReportHeadFit" >> quality.ReportHeadFit(
        teacher_of, job.seed, FileSystems.join(ctx.staging, write_lib.HEAD_FIT_FILE)))
  return docs


def clusters(ctx: StageContext, docs):
  """k-means (or saved centroids) -> every document's cluster; then SemDeDup or the
  cluster quotas when the job needs them. Writes clusters.npz and clusters.json."""
  job, p, total = ctx.job, ctx.p, ctx.total
  model_name = job.embedding_name()
  if job.clusters_from:
    centroids = (p | "ClustersPath" >> beam.Create([job.clusters_from])
                 | "LoadClusters" >> beam.Map(lambda path: kmeans.load_clusters(
                     path, model_name)[0]))
  else:
    fraction, count = job.keep_fraction, job.keep_count
    # With --keep_tokens the number kept is not known in documents: the auto rule is
    # given the whole corpus.
    keep = beam.pvalue.AsSingleton(
        p | "KeepSeed" >> beam.Create([None])
        | "Keep" >> beam.Map(lambda _, n: resolve_k(n, fraction, count)
                             if fraction or count else n, total))
    centroids = docs | "FitKMeans" >> kmeans.FitKMeans(
        job.num_clusters, job.kmeans_iterations, job.kmeans_sample, job.seed,
        documents=total, keep=keep)
    params = {"num_clusters": job.num_clusters or "auto",
              "iterations": job.kmeans_iterations, "sample": job.kmeans_sample,
              "seed": job.seed, "embedding_model": model_name,
              "embedding_max_tokens": job.embedding.max_tokens}
    ctx.written.append(centroids | "SaveClusters" >> beam.Map(
        kmeans.save_clusters, params, FileSystems.join(ctx.staging, write_lib.CLUSTERS_FILE)))
  docs = docs | "AssignClusters" >> kmeans.AssignClusters(
      centroids, keep_embeddings=ctx.uses("semdedup") or ctx.uses("density"))
  sizes = cluster_sampling.cluster_sizes(docs)
  plan = None
  if ctx.uses("semdedup"):
    docs = docs | "SemDeDup" >> cluster_sampling.SemDeDup(
        job.semdedup_eps, job.semdedup_max_group, job.seed, sizes)
  if job.sampler.quota_key is not None:
    # The cap over clusters, topics or a field's values (--balance_by, transforms/topics.py).
    group_of, group_sizes, balance_by, within = topics.quota_groups(job, docs, sizes)
    quota = docs | "ClusterQuota" >> cluster_sampling.ClusterQuota(
        within, group_sizes, total, job.keep_fraction, job.keep_count, job.seed,
        group_of=group_of, balance_by=balance_by)
    docs, plan = quota["documents"], beam.pvalue.AsSingleton(quota["plan"])
  path = FileSystems.join(ctx.staging, write_lib.CLUSTER_STATS_FILE)
  source = job.clusters_from

  def stats(sizes, centroids, plan=None):
    out = {**kmeans.size_summary(sizes, len(centroids)), "clusters_from": source}
    if plan is not None:
      out["balanced"] = plan.summary()
    return out

  args = (beam.pvalue.AsSingleton(centroids),) + ((plan,) if plan is not None else ())
  ctx.written.append(sizes | "ClusterStats" >> beam.Map(stats, *args)
                     | "WriteClusterStats" >> beam.Map(
                         lambda s: write_lib.write_json_atomic(path, s)))
  return docs


def inside_clusters(ctx: StageContext, docs):
  """A signal computed by the clusters stage (SemDeDup): nothing more to add."""
  return docs


def density(ctx: StageContext, docs):
  job = ctx.job
  if job.sketch_from:
    sketch = (ctx.p | "SketchPath" >> beam.Create([job.sketch_from])
              | "LoadSketch" >> beam.Map(sketch_io.load_sketch))
  else:
    sketch = docs | "BuildSketch" >> BuildSketch(job.sketch)
    ctx.written.append(sketch | "SaveSketch" >> beam.Map(
        sketch_io.save_sketch, FileSystems.join(ctx.staging, write_lib.SKETCH_FILE)))
  return docs | "AttachDensity" >> AttachDensity(sketch, seed=job.seed)


# --- A simple signal: a pure function of the document ---------------------------------------
class _PerDocument(beam.DoFn):
  def __init__(self, signal):
    self._signal = signal

  def setup(self):
    self._done = metrics.counter(metrics.INFERRED_PREFIX + self._signal.name)

  def process(self, doc):
    metrics.stage_clock(self._signal.name)
    self._done.inc()
    yield doc.with_scores(**dict(self._signal.per_document(doc)))


class ApplyPerDocument(beam.PTransform):
  """A simple signal on every document; with a cache, documents found there take their
  cached values and only the others are computed (and added to it)."""

  def __init__(self, signal, cache: Optional[CacheSpec] = None):
    super().__init__()
    self._signal, self._cache = signal, cache

  def expand(self, docs):
    if self._cache is None:
      return docs | "Compute" >> beam.ParDo(_PerDocument(self._signal))
    from transforms import signals
    codec = signals.codec_of_signal(self._signal)
    looked_up = docs | "LookUpCache" >> LookUpCache(self._cache, codec.attach)
    computed = (looked_up["misses"] | "Compute" >> beam.ParDo(_PerDocument(self._signal))
                | "WriteToCache" >> beam.ParDo(WriteToCache(self._cache)))
    return (looked_up["cached"], computed) | "MergeCached" >> beam.Flatten()


def per_document_stage(signal):
  def stage(ctx: StageContext, docs):
    return docs | f"Signal_{signal.name}" >> ApplyPerDocument(
        signal, ctx.caches.get(signal.name))
  return stage


def stage_of(signal):
  """The stage function of a signal (its `stage`, resolved, or the generic one)."""
  if signal.per_document is not None:
    return per_document_stage(signal)
  if callable(signal.stage):
    return signal.stage
  import importlib
  module, _, name = signal.stage.partition(":")
  return getattr(importlib.import_module(module), name)
