"""metrics.json: one schema, built here for both ways a run ends.

- A launcher that waits for the job builds it from the runner's counters (namespace
  `select_data`, declared in transforms/metrics.py) and stage clocks: `from_runner`.
- A run nobody waits for (a Flex Template launch) builds it inside the pipeline, from
  counts the pipeline computes itself (`PipelineSummary`); it has the same keys, less
  those only the runner knows (per-stage counts and times), and says so in `note`.
"""
from __future__ import annotations

import json
from typing import Any, Dict, Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter

from beam_pipelines import caching, precision_options, report_cascade, report_dedup
from beam_pipelines.options import JobConfig
from beam_pipelines.samplers import CLUSTERS, DENSITY, HEAD
from transforms import quality_head, sketch_io
from transforms import metrics as m
from transforms.write import CLUSTER_STATS_FILE, CLUSTERS_FILE, HEAD_FIT_FILE, SKETCH_FILE

# Counters reported when the runner saw them.
_OPTIONAL_COUNTS = (m.DEDUP_UNCONVERGED, m.QUALITY_POOL, m.TEACHER, m.TEACHER_HELD_BACK, m.PERPLEXITY,
                    m.SELECTED_TOKENS, m.SEMDEDUP_DUPLICATES, m.SEMDEDUP_SPLIT_GROUPS)


def options_dict(job: JobConfig) -> Dict[str, Any]:
  return {k: (list(v) if isinstance(v, tuple) else v) for k, v in job.options.items()}


def metrics_document(job: JobConfig, counts: Dict[str, Any],
                     stage_times: Optional[Dict[str, float]] = None,
                     wall_s: Optional[float] = None, **extra) -> Dict[str, Any]:
  """The metrics.json dict; `counts` holds at least read, valid and rejected_by_reason."""
  counts = dict(counts)
  counts["rejected"] = sum(counts["rejected_by_reason"].values())
  counts["accounted"] = counts[m.READ] == counts[m.VALID] + counts["rejected"]
  scorer = job.scorer
  doc = {
      "counts": counts,
      "options": options_dict(job),
      "models": {
          **({"scorer": job.scorer_name()}
             if job.runs_ask_llm or job.runs_perplexity else {}),
          **({"embedding": job.embedding_name()} if job.runs_embeddings else {})},
      "ask_llm": ({"prompt": scorer.prompt, "chat_template": scorer.chat_template,
                   "score": scorer.score, "yes_tokens": list(scorer.yes_tokens),
                   "no_tokens": list(scorer.no_tokens)}
                  if job.runs_ask_llm else None),
  }
  if job.options.get("config"):  # --config=FILE: which file, and its exact bytes
    doc["config_file"] = {"path": job.options["config"],
                          "sha256": job.options.get("config_sha256")}
  if stage_times is not None:
    doc["stage_wall_time_s"] = stage_times
  if wall_s is not None:
    doc["wall_time_s"] = round(wall_s, 3)
  doc.update(extra)
  return doc


def _value(metric_result):
  # Committed values where the runner supports them, else attempted.
  try:
    v = metric_result.committed
  except Exception:
    v = None
  return v if v is not None else metric_result.attempted


def from_runner(result, job: JobConfig, staging: str, wall_s: float,
                caches: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
  """metrics.json of a finished run: the runner's counters and stage clocks, and what
  the run decided (the quality head's fit, the sketch's parameters) from `staging`."""
  query = result.metrics().query(MetricsFilter().with_namespace(m.NAMESPACE))
  counters, clocks = {}, {}
  for c in query["counters"]:
    counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + _value(c)
  for d in query["distributions"]:
    v = _value(d)
    if v is not None and v.count:
      name = d.key.metric.name.split(":", 1)[1]
      lo, hi = clocks.get(name, (v.min, v.max))
      clocks[name] = (min(lo, v.min), max(hi, v.max))
  counts = {
      m.READ: counters.get(m.READ, 0), m.VALID: counters.get(m.VALID, 0),
      "rejected_by_reason": m.by_suffix(counters, m.REJECTED_PREFIX),
      m.SELECTED: counters.get(m.SELECTED, 0),
  }
  # Each signal's documents counter (the registry's `counter`), only where it ran (a
  # perplexity run scores nothing with Ask-LLM).
  from beam_pipelines.graph import signal_names
  from transforms import signals
  for name in signal_names(job):
    counter_name = signals.get(name).counter
    if counter_name:
      counts[counter_name] = counters.get(counter_name, 0)
  counts.update({k: counters[k] for k in _OPTIONAL_COUNTS if k in counters})
  failed = {k: v for k, v in m.by_suffix(counters, m.SCORING_FAILED_PREFIX).items() if v}
  if failed:
    counts["scoring_failed"] = failed
  # Per model stage: documents taken from the score cache and documents the model ran
  # on; they add up to the documents the stage needed.
  for name, prefix in (("from_cache", m.FROM_CACHE_PREFIX), ("inferred", m.INFERRED_PREFIX)):
    counts[name] = {ns: counters.get(prefix + ns, 0) for ns in caching.cached_stages(job)}
  extra = {"cache": caching.cache_metrics(job, caches or {}, counters)}

  fit_path = FileSystems.join(staging, HEAD_FIT_FILE)
  if job.sampler.uses(HEAD) and job.quality_head:
    extra["quality_head"] = applied_head(job.quality_head)
  elif job.sampler.uses(HEAD) and FileSystems.exists(fit_path):
    with FileSystems.open(fit_path) as f:
      extra["quality_head"] = {"teacher_documents": counts.get(m.TEACHER, 0),
                               "fit_on_held_back": json.loads(f.read())}
  if job.sampler.uses(DENSITY):
    # The sketch's actual parameters: the auto width and groups are decided in the job.
    sketch_path = job.sketch_from or FileSystems.join(staging, SKETCH_FILE)
    if FileSystems.exists(sketch_path):
      sketch = sketch_io.load_sketch(sketch_path, verify=False)
      extra["sketch"] = {**sketch.params.to_dict(), "documents": sketch.n,
                         "path": job.sketch_from or FileSystems.join(job.output, SKETCH_FILE)}
  clusters = cluster_stats(job, staging)
  if clusters is not None:
    extra["clusters"] = clusters
  _add_dedup(job, staging, counts, extra)
  if job.keep_tokens and counts.get(m.SELECTED_TOKENS, 0) < job.keep_tokens:
    extra["note"] = (f"--keep_tokens={job.keep_tokens} is more than the corpus holds "
                     f"({counts.get(m.SELECTED_TOKENS, 0)} tokens): every document was "
                     "selected")
  stage_times = {k: round((hi - lo) / 1000.0, 3) for k, (lo, hi) in clocks.items()}
  cascade = report_cascade.metrics_part(job, staging, counters, stage_times)
  if cascade is not None:  # --judge_fraction
    extra["cascade"] = cascade
  doc = metrics_document(job, counts, stage_times, wall_s, **extra)
  # What the scorer decided when it loaded: --chat_template=auto as actually used.
  resolved = model_settings(counters).get("ask_llm", {})
  if doc["ask_llm"] is not None and "chat_template" in resolved:
    doc["ask_llm"]["chat_template_used"] = resolved["chat_template"]
  doc["precision"] = precision_options.metrics_part(job, model_settings(counters))
  return doc


def cluster_stats(job: JobConfig, staging: str) -> Optional[Dict[str, Any]]:
  """metrics.json `clusters`: the sizes and cap the run wrote to clusters.json."""
  path = FileSystems.join(staging, CLUSTER_STATS_FILE)
  if not job.sampler.uses(CLUSTERS) or not FileSystems.exists(path):
    return None
  with FileSystems.open(path) as f:
    return {**json.loads(f.read()),
            "path": job.clusters_from or FileSystems.join(job.output, CLUSTERS_FILE)}


def applied_head(spec: str) -> Dict[str, Any]:
  """What metrics.json says about a head applied with --quality_head: where it came from
  and, when it records one (the bundled head does), its cross-validated fit."""
  head = quality_head.load_head(spec)
  out = {"applied": spec, "teacher": head.teacher, "fitted_on_documents": head.n_train,
         "l2": head.l2, "embedding_model": head.embedding_model,
         "embedding_max_tokens": head.embedding_max_tokens}
  cv = (head.provenance or {}).get("cross_validation")
  if cv:
    nested = cv["nested"]
    out["cross_validated_fit"] = {
        "folds": cv["folds"], "documents": head.provenance["dataset"]["documents"],
        "auc": nested["auc_3plus_vs_0to1"], "auc_95": nested["auc_3plus_vs_0to1_ci95"],
        "spearman": nested["spearman_edu_score"],
        "auc_definition": "teacher score >= 3 against <= 1, out-of-fold (nested "
                          "cross-validation)"}
  return out


def model_settings(counters: Dict[str, int]) -> Dict[str, Dict[str, Any]]:
  """{model: {setting: value}} from the model_setting: counters (a list of values when
  worker processes disagreed)."""
  found: Dict[str, Dict[str, list]] = {}
  for name in m.by_suffix(counters, m.MODEL_SETTING_PREFIX):
    model, _, setting = name.partition(":")
    key, _, value = setting.partition("=")
    found.setdefault(model, {}).setdefault(key, []).append(value)
  return {model: {k: (v[0] if len(v) == 1 else sorted(v)) for k, v in settings.items()}
          for model, settings in found.items()}


def rejected_by_reason(rejected):
  """A side input {reason: count} of the rejected records (for PipelineSummary)."""
  return beam.pvalue.AsDict(
      rejected | "RejectedReason" >> beam.Map(lambda r: r.reason)
      | "CountPerReason" >> beam.combiners.Count.PerElement())


class PipelineSummary:
  """metrics.json computed inside the pipeline, from its side inputs (the number of
  valid documents, rejected records by reason, the selection plan)."""

  def __init__(self, job: JobConfig, caches: Optional[Dict[str, Any]] = None,
               staging: Optional[str] = None, files: Optional[Dict[str, int]] = None):
    self._job = job
    self._caches = caches or {}
    self._staging = staging
    self._files = files  # the launch's count of matched input paths

  def __call__(self, valid: int, reasons: Dict[str, int], plan) -> Dict[str, Any]:
    counts = {m.VALID: valid, "rejected_by_reason": dict(sorted(reasons.items())),
              m.SELECTED: plan.k}
    counts[m.READ] = valid + sum(reasons.values())
    if self._files is not None:
      counts["files"] = dict(self._files)
    clusters = cluster_stats(self._job, self._staging) if self._staging else None
    cascade = (report_cascade.metrics_part(self._job, self._staging) if self._staging
               else None)
    extra: Dict[str, Any] = {}
    _add_dedup(self._job, self._staging, counts, extra)
    return metrics_document(
        self._job, counts, cache=caching.cache_metrics(self._job, self._caches), **extra,
        note="written by the pipeline; see the runner's counters (namespace "
             "select_data) for per-stage counts and times",
        **({"clusters": clusters} if clusters is not None else {}),
        **({"cascade": cascade} if cascade is not None else {}))


def _add_dedup(job: JobConfig, staging: Optional[str], counts: dict, extra: dict) -> None:
  """--dedup's funnel: counts `duplicates` ({exact, minhash}) and `dedup` (dedup.json)."""
  dedup = report_dedup.dedup_metrics(job, staging)
  if dedup is not None:
    counts["duplicates"] = dict(dedup["duplicates"])
    extra["dedup"] = dedup


def run_failure(job: JobConfig, counts: dict) -> Optional[str]:
  """Why a finished pipeline's run must not be committed: no valid document, or more of
  the records read rejected than --max_rejected_fraction allows. None when it may."""
  read, valid = counts.get("read", 0), counts.get("valid", 0)
  rejected = counts.get("rejected", 0)
  by_reason = sorted(counts.get("rejected_by_reason", {}).items(), key=lambda kv: (-kv[1], kv[0]))
  top = ", ".join(f"{reason} {n}" for reason, n in by_reason[:3] if n)
  why = f" ({top})" if top else ""
  if valid == 0:
    return f"the run found no valid document: {read} records read, {rejected} rejected{why}"
  total = max(read, valid + rejected)
  if total and rejected / total > job.max_rejected_fraction:
    return (f"the run rejected {rejected} of {total} records ({rejected / total:.0%}){why}, "
            f"more than --max_rejected_fraction={job.max_rejected_fraction:g}")
  return None
