"""The job's pipeline graph: read -> validate -> score (Ask-LLM, perplexity, embeddings,
quality head) -> sketch -> density -> select -> rank -> write, built from a JobConfig.

Which stages appear is decided by the sampler's needs (beam_pipelines/samplers.py);
nothing is read and no model is loaded while the graph is built.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_pipelines import run_metrics
from beam_pipelines.options import JobConfig
from beam_pipelines.samplers import CLUSTERS, DENSITY, HEAD, SEMDEDUP
from transforms import cluster_sampling, kmeans, quality, quality_head, sketch_io
from transforms import read as read_lib
from transforms import records
from transforms import write as write_lib
from transforms.density import AttachDensity, BuildSketch, EmbedDocuments
from transforms.inference import error_field
from transforms.report_stats import COLUMNS_TAG, SUMMARY_TAG, ReportStatistics
from transforms.score import ScoreAskLLM, ScorePerplexity
from transforms.score_cache import CacheSpec
from transforms.select import SelectTopK, resolve_k
from transforms.tokenize import CountTokens
from transforms.write import (CLUSTER_STATS_FILE, CLUSTERS_FILE, HEAD_FILE, HEAD_FIT_FILE,
                              REPORT_DATA_FILE, SKETCH_FILE, WriteOutputs)


def score_names(job: JobConfig) -> List[str]:
  """The scores this job can give a document (the columns of a Parquet scores/)."""
  names = []
  if job.runs_ask_llm:
    names += ["ask_llm_score", "p_yes", "p_no", error_field("ask_llm")]
  if job.runs_perplexity:
    names += ["perplexity", "mean_nll", error_field("perplexity")]
  if job.runs_embeddings:
    names += [error_field("embeddings")]
  if job.sampler.uses(HEAD):
    names += ["quality_score"]
  if job.sampler.uses(DENSITY):
    names += ["density", "sampling_weight"]
  if job.sampler.uses(CLUSTERS):
    names += [records.CLUSTER, records.CLUSTER_DISTANCE]
  if job.sampler.uses(SEMDEDUP):
    names += [records.DUPLICATE_OF]
  if job.tokenizer:
    names += [write_lib.NUM_TOKENS]  # of the selected documents
  return names


def build_pipeline(p: beam.Pipeline, job: JobConfig, staging: Optional[str] = None,
                   finalize_in_pipeline: bool = False,
                   caches: Optional[Dict[str, CacheSpec]] = None,
                   inputs: Optional[read_lib.InputFiles] = None) -> None:
  """Adds the whole job to `p`.

  Args:
    staging: where the outputs are written (default: --output itself).
    finalize_in_pipeline: end with a step that writes metrics.json and moves the staged
      outputs into --output (for launches that do not wait for the job).
    caches: the score cache of each model stage (caching.cache_specs, computed by the
      launcher: fingerprints read model files, and building the graph reads nothing);
      None or {}: no cache.
    inputs: the input paths the launcher matched and checked (read_lib.checked_inputs);
      None: the patterns are matched when the job runs.
  """
  staging = staging or job.output
  caches = caches or {}
  written = []  # PCollections complete once an output is written.
  read = p | "ReadDocuments" >> read_lib.ReadDocuments(
      job.patterns, input_format=job.input_format, text_field=job.text_field,
      id_field=job.id_field, max_doc_bytes=job.max_doc_bytes, max_id_bytes=job.max_id_bytes,
      keep_fields=[job.teacher_field] if job.teacher_field else [],
      copy_fields=job.keep_fields, inputs=inputs)
  docs = read["documents"]
  total = beam.pvalue.AsSingleton(docs | "CountValid" >> beam.combiners.Count.Globally())
  model_args = dict(batch_tokens=job.batch_tokens, large_model=job.large_model,
                    model_copies=job.model_copies, total=total,
                    progress_interval_s=job.progress_interval)
  hints = {"accelerator": job.inference_accelerator} if job.inference_accelerator else {}

  def on_accelerator(transform):
    return transform.with_resource_hints(**hints) if hints else transform

  if job.runs_ask_llm:
    score = on_accelerator(ScoreAskLLM(job.scorer, max_batch_size=job.max_batch_size,
                                       cache=caches.get("ask_llm"), **model_args))
    if job.sampler.uses(HEAD):
      # Only the teacher fraction pays for Ask-LLM; the head scores everything.
      seed, fraction = job.seed, job.teacher_fraction
      teacher, others = docs | "ChooseTeacher" >> beam.Partition(
          lambda d, _: 0 if quality.in_teacher_fraction(seed, d.id, fraction) else 1, 2)
      docs = (teacher | "ScoreAskLLM" >> score, others) | "MergeTeacher" >> beam.Flatten()
    else:
      docs = docs | "ScoreAskLLM" >> score
  if job.runs_perplexity:
    docs = docs | "ScorePerplexity" >> on_accelerator(ScorePerplexity(
        job.perplexity, max_batch_size=job.max_batch_size, cache=caches.get("perplexity"),
        **model_args))
  unembedded = None
  if job.runs_embeddings:
    docs = docs | "Embed" >> on_accelerator(EmbedDocuments(
        job.embedding, cache=caches.get("embeddings"), **model_args))
    # A document the embedding model failed on skips the head and the sketch and is
    # ranked last (its score row says why).
    docs, unembedded = docs | "SplitUnembedded" >> beam.Partition(
        lambda d, _: 0 if d.embedding is not None else 1, 2)
  if job.sampler.uses(HEAD):
    docs = _quality_head(p, job, docs, staging, written)
  if job.sampler.uses(CLUSTERS):
    docs = _clusters(p, job, docs, total, staging, written)
  if job.sampler.uses(DENSITY):
    if job.sketch_from:
      sketch = (p | "SketchPath" >> beam.Create([job.sketch_from])
                | "LoadSketch" >> beam.Map(sketch_io.load_sketch))
    else:
      sketch = docs | "BuildSketch" >> BuildSketch(job.sketch)
      written.append(sketch | "SaveSketch" >> beam.Map(
          sketch_io.save_sketch, FileSystems.join(staging, SKETCH_FILE)))
    docs = docs | "AttachDensity" >> AttachDensity(sketch, seed=job.seed)
  if unembedded is not None:
    docs = (docs, unembedded) | "MergeUnembedded" >> beam.Flatten()

  if job.keep_tokens:
    docs = docs | "CountTokens" >> CountTokens(job.tokenizer, job.append_eos)
  selection, rest = _select(job, docs, total)
  statistics = _report_statistics(job) if job.report else None
  tap = statistics.tap() if statistics is not None else None
  outputs = ({"ranked": selection["ranked"], "not_selected": rest,
              "rejected": read["rejected"]}
             | "WriteOutputs" >> WriteOutputs(staging, scores_format=job.scores_format,
                                              score_names=score_names(job),
                                              tokenizer=job.tokenizer,
                                              append_eos=job.append_eos,
                                              kept_fields=job.keep_fields,
                                              output_formats=job.output_formats,
                                              tap=tap))
  tapped = outputs.pop("tap", None)
  written.extend(outputs.values())
  if statistics is not None:
    # The report's per-document part ran in the scores/ step (see ReportTap).
    stats = ({"summaries": tapped[SUMMARY_TAG], "columns": tapped[COLUMNS_TAG],
              "rejected": read["rejected"]} | "ReportStatistics" >> statistics)
    path = FileSystems.join(staging, REPORT_DATA_FILE)
    written.append(stats | "WriteReportData" >> beam.Map(
        lambda s: write_lib.write_json_atomic(path, s)))
  if finalize_in_pipeline:
    from beam_pipelines import report  # matplotlib, only where the report is drawn
    p | "Finalize" >> write_lib.FinalizeOutput(
        job.output, staging, write_lib.OUTPUT_NAMES, written,
        run_metrics.PipelineSummary(job, caches, staging,
                                    inputs.counts() if inputs is not None else None),
        side_inputs=(total, run_metrics.rejected_by_reason(read["rejected"]),
                     beam.pvalue.AsSingleton(selection["plan"])),
        before_move=report.ReportWriter(job, caches) if job.report else None)


def report_score_names(job: JobConfig) -> List[str]:
  """The numeric scores the report summarises (not the texts: `*_error`, duplicate_of)."""
  return [n for n in score_names(job) if not write_lib.is_text_column(n)]


def _report_statistics(job: JobConfig) -> ReportStatistics:
  """The transform behind report.json, the statistics report.html is drawn from."""
  return ReportStatistics(
      report_score_names(job), job.seed,
      job.sampler.order_key(job.seed) if job.sampler.order_name else None,
      job.sampler.ranked_by, job.sampler.higher_is_better,
      order_name=job.sampler.order_name)


def _quality_head(p, job: JobConfig, docs, staging: str, written: list):
  """Fits the head on the teacher set (or loads a saved one) and applies it."""
  model_name = job.embedding_name()
  teacher_of = quality.teacher_value_fn(job.teacher_field)
  if job.quality_head:
    head = (p | "HeadPath" >> beam.Create([job.quality_head])
            | "LoadHead" >> beam.Map(quality_head.load_head, model_name))
  else:
    head = docs | "FitQualityHead" >> quality.FitQualityHead(
        teacher_of, job.seed, job.head_l2, model_name,
        job.teacher_field or f"ask_llm_score on --teacher_fraction={job.teacher_fraction}",
        job.embedding.max_tokens)
    written.append(head | "SaveHead" >> beam.Map(
        quality_head.save_head, FileSystems.join(staging, HEAD_FILE)))
  docs = docs | "ApplyQualityHead" >> quality.ApplyQualityHead(
      head, keep_embeddings=job.sampler.uses(DENSITY) or job.sampler.uses(CLUSTERS))
  if not job.quality_head:
    written.append(docs | "ReportHeadFit" >> quality.ReportHeadFit(
        teacher_of, job.seed, FileSystems.join(staging, HEAD_FIT_FILE)))
  return docs


def _clusters(p, job: JobConfig, docs, total, staging: str, written: list):
  """k-means (or saved centroids) -> every document's cluster; then SemDeDup or the
  cluster quotas when the sampler needs them. Writes clusters.npz and clusters.json."""
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
    written.append(centroids | "SaveClusters" >> beam.Map(
        kmeans.save_clusters, params, FileSystems.join(staging, CLUSTERS_FILE)))
  docs = docs | "AssignClusters" >> kmeans.AssignClusters(
      centroids, keep_embeddings=job.sampler.uses(SEMDEDUP) or job.sampler.uses(DENSITY))
  sizes = cluster_sampling.cluster_sizes(docs)
  plan = None
  if job.sampler.uses(SEMDEDUP):
    docs = docs | "SemDeDup" >> cluster_sampling.SemDeDup(
        job.semdedup_eps, job.semdedup_max_group, job.seed, sizes)
  if job.sampler.quota_key is not None:
    quota = docs | "ClusterQuota" >> cluster_sampling.ClusterQuota(
        job.sampler.quota_key(job.seed), sizes, total, job.keep_fraction, job.keep_count,
        job.seed)
    docs, plan = quota["documents"], beam.pvalue.AsSingleton(quota["plan"])
  path = FileSystems.join(staging, CLUSTER_STATS_FILE)
  source = job.clusters_from

  def stats(sizes, centroids, plan=None):
    out = {**kmeans.size_summary(sizes, len(centroids)), "clusters_from": source}
    if plan is not None:
      out["balanced"] = plan.summary()
    return out

  args = (beam.pvalue.AsSingleton(centroids),) + ((plan,) if plan is not None else ())
  written.append(sizes | "ClusterStats" >> beam.Map(stats, *args)
                 | "WriteClusterStats" >> beam.Map(
                     lambda s: write_lib.write_json_atomic(path, s)))
  return docs


def _num_tokens(doc) -> int:
  return doc.scores[write_lib.NUM_TOKENS]


def _select(job: JobConfig, docs, total):
  """The sampler's selection, with its quality pool first when it has one. Returns
  (SelectTopK's outputs, every document not selected)."""
  select_args = dict(keep_fraction=job.keep_fraction, keep_count=job.keep_count,
                     num_partitions=job.num_rank_partitions,
                     docs_per_file=job.docs_per_file)
  if job.keep_tokens:
    select_args.update(keep_fraction=None, keep_count=None, keep_weight=job.keep_tokens,
                       weight_fn=_num_tokens)
  not_selected = []
  if job.sampler.pool_key is not None:
    # Quality first: a pool of the best documents, then coverage inside it.
    pool_args = dict(select_args)
    if job.keep_tokens:
      pool_args["keep_weight"] = int(math.ceil(job.keep_tokens * job.quality_pool_factor))
    elif job.keep_count is not None:
      pool_args["keep_count"] = int(math.ceil(job.keep_count * job.quality_pool_factor))
    else:
      pool_args["keep_fraction"] = min(1.0, job.keep_fraction * job.quality_pool_factor)
    pool = docs | "QualityPool" >> SelectTopK(key_fn=job.sampler.pool_key, rank=False,
                                              counter_name="quality_pool", **pool_args)
    docs = pool["selected"]
    not_selected.append(pool["not_selected"])
    select_args["k_of"] = total
  selection = docs | "Select" >> SelectTopK(key_fn=job.sampler.key(job.seed),
                                            **select_args)
  not_selected.append(selection["not_selected"])
  rest = (not_selected[0] if len(not_selected) == 1
          else tuple(not_selected) | "FlattenNotSelected" >> beam.Flatten())
  return selection, rest
