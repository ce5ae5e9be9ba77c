"""--estimate_only: what a run would cost, stage by stage, from a sample, before any
inference.

Reads the first documents of the input, extrapolates the document count to the whole
input by bytes, and follows the sampler: each stage the run would run (the Ask-LLM judge,
perplexity, embeddings, the quality head, k-means, the density sketch; with
--judge_fraction the cascade's judge share and cheap signal) with its documents, tokens
(counted with each model's own tokenizer and truncation) and GPU-hours. A GPU rate is
measured where --gpu_tokens_per_second gives it (the scorer's: judge and perplexity), else
assumed from the model's size (an L4 at ASSUMED_MFU); the table says which.
estimate_table.py renders it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
from typing import Dict, Iterator, List, Optional

from beam_pipelines import samplers as samplers_lib
from models import loading
from models.loading import load_tokenizer
from transforms import cluster_count
from transforms import read as read_lib
from transforms import records

# Throughput model when none is given: a forward pass costs ~2 x parameters FLOPs per
# token. An NVIDIA L4 offers ~121 TFLOP/s dense bf16; batched scoring of long prompts
# reaches a fraction of that (model FLOPs utilisation). Both are assumptions, printed
# with the estimate; replace them with a measured rate for real budgets.
L4_BF16_FLOPS = 121e12
ASSUMED_MFU = 0.35
# Measured on this project's 2-core CPU machine (benchmarks/scorer_speed.py).
CPU_TOKENS_PER_SECOND_135M = 500.0
# The density sketch reads every embedding twice (build, then query): passes over N.
DENSITY_PASSES = 2


@dataclasses.dataclass
class Stage:
  """One stage of the run: its documents, and for a model stage its tokens and rate."""
  name: str
  documents: int
  tokens: Optional[int] = None
  rate: Optional[float] = None       # tokens/s on one GPU
  rate_source: str = "CPU (no GPU)"
  detail: str = ""

  @property
  def gpu_hours(self) -> Optional[float]:
    if self.tokens is None or not self.rate:
      return None
    return _sig(self.tokens / self.rate / 3600.0)

  def as_dict(self) -> Dict:
    return {"stage": self.name, "documents": self.documents, "tokens": self.tokens,
            "gpu_tokens_per_second": round(self.rate, 1) if self.rate else None,
            "rate": self.rate_source, "gpu_hours": self.gpu_hours, "detail": self.detail}


def _sample_documents(paths: List[str], input_format: str, text_field: str,
                      limit: int, max_doc_bytes: int) -> Iterator[tuple]:
  """Yields (text, bytes) for the first `limit` valid documents, in file order, read as
  the job reads them (the paths the job's matching found, read_lib.iter_file_records)."""
  seen = 0
  for path in sorted(paths):
    fmt = read_lib.format_of(path, input_format)
    file_records = read_lib.iter_file_records(path, fmt, max_doc_bytes)
    with contextlib.closing(file_records):  # closes the file when the sample is full
      for raw in file_records:
        if isinstance(raw, records.Rejected):
          continue
        doc = records.parse_record(raw, text_field=text_field, max_doc_bytes=max_doc_bytes)
        if isinstance(doc, records.Document):
          yield doc.text, len(raw.payload) + 1
          seen += 1
          if seen >= limit:
            return


def count_parameters(resolved: loading.ResolvedModel, encoder: bool = False) -> Optional[int]:
  """Parameter count from the config alone (weights are never loaded)."""
  try:
    import torch
    from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM,
                              AutoModelForSeq2SeqLM)
    config = AutoConfig.from_pretrained(resolved.path, **resolved.from_pretrained_kwargs())
    cls = (AutoModel if encoder else
           AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM)
    with torch.device("meta"):
      model = cls.from_config(config)
    return sum(p.numel() for p in model.parameters())
  except Exception:  # An unknown architecture: the caller then needs a given rate.
    return None


def assumed_rate(params: Optional[int]) -> Optional[float]:
  return ASSUMED_MFU * L4_BF16_FLOPS / (2.0 * params) if params else None


def _assumption(params: int) -> str:
  return (f"assumed: one NVIDIA L4 at {ASSUMED_MFU:.0%} of {L4_BF16_FLOPS / 1e12:.0f} "
          f"TFLOP/s bf16, 2 x {params / 1e6:.3g}M FLOPs per token")


def _rate(params, given) -> tuple:
  if given:
    return given, "measured (--gpu_tokens_per_second)"
  if params:
    return assumed_rate(params), _assumption(params)
  return None, "unknown model size: pass --gpu_tokens_per_second"


class _Model:
  """A model's tokenizer and size, loaded once (never its weights)."""

  def __init__(self, config, kind: str):
    self.resolved = loading.resolve_model(config.model, kind,
                                          getattr(config, "allow_pickle_weights", False))
    self.tokenizer = load_tokenizer(self.resolved, getattr(config, "trust_remote_code",
                                                           False))
    self.params = count_parameters(self.resolved, encoder=kind == "embedding")


def _truncated_tokens(tokenizer, texts, max_tokens: int) -> int:
  return sum(min(len(tokenizer(t, add_special_tokens=True)["input_ids"]), max_tokens)
             for t in texts)


def judge_share(job, n: int, cascade_on: bool = True) -> tuple:
  """(documents the judge scores, why): with the cascade (--judge_fraction F, audit a),
  N * (F + a * (1 - F)); else all N, or the head's teacher fraction."""
  cascade = getattr(job, "cascade", None)
  fraction = getattr(cascade, "judge_fraction", None)
  if fraction is not None and cascade_on:
    audit = getattr(cascade, "audit_fraction", 0.0) or 0.0
    judged = int(round(n * (fraction + audit * (1.0 - fraction))))
    return judged, (f"cascade: the top {fraction:g} by {getattr(cascade, 'signal', '?')} "
                    f"plus an audit of {audit:g} of the rest")
  uses = job.sampler.uses
  if (not uses(samplers_lib.ASK_LLM) and uses(samplers_lib.HEAD)
      and job.teacher_fraction is not None):
    return int(round(n * job.teacher_fraction)), f"the head's teacher: {job.teacher_fraction:g}"
  return n, "every document"


def estimate(job) -> Dict:
  """The estimate of a JobConfig (beam_pipelines/options.py): every stage its sampler
  runs; the totals; with a cascade, the same run without it."""
  inputs = read_lib.checked_inputs(list(job.patterns), job.input_format)
  readable = [m.path for m in inputs.matches if not m.reason]
  sample = list(itertools.islice(
      _sample_documents(readable, job.input_format, job.text_field, job.estimate_sample,
                        job.max_doc_bytes), job.estimate_sample))
  if not sample:
    raise ValueError("no valid documents in the input sample")
  texts = [t for t, _ in sample]
  sample_bytes = sum(b for _, b in sample)
  n = max(len(sample), int(round(len(sample) * inputs.total_bytes / max(sample_bytes, 1))))
  from beam_pipelines import estimate_stages
  stages, without, facts = estimate_stages.plan(job, texts, n)
  out = _summary(job, stages, facts, len(sample), n, inputs.total_bytes)
  if without is not None:
    out["without_cascade"] = _totals(without, job)
  return out


def _totals(stages: List[Stage], job) -> Dict:
  hours = [s.gpu_hours for s in stages if s.gpu_hours is not None]
  total = _sig(sum(hours)) if hours else None
  out = {"stages": [s.as_dict() for s in stages], "estimated_gpu_hours": total}
  if job.gpu_price_per_hour and total is not None:
    out["estimated_gpu_cost"] = _sig(total * job.gpu_price_per_hour)
  return out


def _summary(job, stages, facts, sampled: int, n: int, input_bytes: int) -> Dict:
  compressed = any(p.lower().endswith(read_lib.COMPRESSED_SUFFIXES) for p in job.patterns)
  judge = next((s for s in stages if s.name.startswith("judge")), None)
  gpu = [s for s in stages if s.tokens is not None]
  out = {
      "sampler": job.sampler.name,
      "sample_documents": sampled,
      "input_bytes": input_bytes,
      "estimated_documents": n,
      "estimated_tokens": sum(s.tokens for s in gpu) if gpu else 0,
      **_totals(stages, job),
      "note": ("input is compressed: documents are extrapolated from compressed bytes and "
               "are underestimated by about the compression ratio" if compressed else
               "documents extrapolated from the sample's bytes per document"),
      **facts,
  }
  if judge is not None:
    out.update(gpu_tokens_per_second=round(judge.rate, 1) if judge.rate else None,
               gpu_rate_source=judge.rate_source)
    params = facts.get("model_parameters")
    if params:
      cpu_rate = CPU_TOKENS_PER_SECOND_135M * 135e6 / params
      out["cpu_2core_hours_reference"] = _sig(judge.tokens / cpu_rate / 3600.0)
  return out


def clusters(job, n: int) -> int:
  keep = job.keep_count or max(1, int(n * (job.keep_fraction or 0.2)))
  return cluster_count.clusters_for(job.num_clusters, n, keep, job.kmeans_sample)


def _sig(x: float) -> float:
  return float(f"{x:.4g}")
