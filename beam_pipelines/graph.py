"""The job's pipeline graph: read -> validate -> the signals (Ask-LLM, perplexity,
embeddings, quality head, clusters, density, ...) -> select -> rank -> write, built from
a JobConfig.

The signals are those the sampler needs (beam_pipelines/samplers.py) and --signals, run
as the registry orders them (transforms/signals.py); nothing is read and no model is
loaded while the graph is built.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from beam_pipelines import grouping_options as grouping
from beam_pipelines import report_groups, run_metrics
from beam_pipelines.options import JobConfig
from beam_pipelines.samplers import ASK_LLM
from transforms import dedup as dedup_lib
from transforms import read as read_lib
from transforms import signal_stages, signals
from transforms import write as write_lib
from transforms.report_stats import COLUMNS_TAG, SUMMARY_TAG, ReportStatistics
from transforms.score_cache import CacheSpec
from transforms.select import SelectTopK
from transforms.tokenize import CountTokens
from transforms.write import REPORT_DATA_FILE, WriteOutputs


def signal_names(job: JobConfig) -> List[str]:
  """The signals this job computes: what its sampler needs (Ask-LLM for the head's
  teacher fraction only when it fits one), and --signals."""
  names = [n for n in job.sampler.needs if n != ASK_LLM]
  if job.runs_ask_llm:
    names.insert(0, ASK_LLM)
  names += [n for n in getattr(job, "signals", ()) if n not in names]
  ordered = [s.name for s in signals.in_order(names)]
  if "embeddings" in ordered and "topics" not in ordered and grouping.computes_topics(job):
    ordered = [s.name for s in signals.in_order(names + ["topics"])]  # topics: issue 31
  cascade = getattr(job, "cascade", None)
  if cascade is not None and cascade.enabled:  # the judge after the cheap signal
    from transforms.cascade import CASCADE_SIGNAL, signal_order
    ordered = signal_order(ordered + [cascade.signal, CASCADE_SIGNAL], cascade.signal)
  return ordered


def score_names(job: JobConfig) -> List[str]:
  """The scores this job can give a document (the columns of a Parquet scores/), from the
  registry's declarations of its signals."""
  dedup = [dedup_lib.SIGNAL] if job.dedup.enabled else []  # copy_of, copy_kind
  names = [c.name for c in signals.columns_of(signal_names(job) + dedup)]
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
      copy_fields=report_groups.copy_fields(job), inputs=inputs)
  docs = report_groups.with_group_field(job, read["documents"])
  valid = beam.pvalue.AsSingleton(docs | "CountValid" >> beam.combiners.Count.Globally())
  # --dedup: copies leave here, before any model; `total` (the N of --keep_fraction)
  # counts the documents kept.
  docs, copies, total = dedup_lib.deduplicate(job.dedup, job.seed, docs, valid, staging,
                                              written)
  model_args = dict(batch_tokens=job.batch_tokens, large_model=job.large_model,
                    model_copies=job.model_copies, total=total,
                    progress_interval_s=job.progress_interval)
  ctx = signal_stages.StageContext(
      p=p, job=job, signals=signal_names(job), caches=caches, model_args=model_args,
      total=total, staging=staging, written=written, accelerator=job.inference_accelerator)
  for signal in map(signals.get, ctx.signals):  # signal_names' order: each after what it reads
    docs = signal_stages.stage_of(signal)(ctx, docs)
  if ctx.unembedded is not None:
    docs = (docs, ctx.unembedded) | "MergeUnembedded" >> beam.Flatten()

  if job.keep_tokens:
    docs = docs | "CountTokens" >> CountTokens(job.tokenizer, job.append_eos)
  selection, rest = _select(job, docs, total)
  rest = dedup_lib.with_copies(rest, copies)  # in scores/, never selected
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
  written.extend(report_groups.write_group_stats(job, selection["ranked"], rest, staging,
                                                 report_score_names(job)))
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
        side_inputs=(valid, run_metrics.rejected_by_reason(read["rejected"]),
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
