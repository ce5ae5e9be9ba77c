"""--estimate_only: what a run would cost, from a sample, before any inference.

Reads the first documents of the input, counts their prompt tokens with the scorer's
tokenizer (the same truncation as scoring), extrapolates to the whole input by bytes, and
turns tokens into GPU-hours with a throughput that is either given
(--gpu_tokens_per_second, best: measured on a small run) or derived from the model size.
"""
from __future__ import annotations

import contextlib
import itertools
from typing import Dict, Iterator, List, Optional


from models import loading
from models.ask_llm import PromptEncoder
from models.loading import load_tokenizer
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


def count_parameters(resolved: loading.ResolvedModel) -> Optional[int]:
  """Parameter count from the config alone (weights are never loaded)."""
  try:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM
    config = AutoConfig.from_pretrained(resolved.path, **resolved.from_pretrained_kwargs())
    cls = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    with torch.device("meta"):
      model = cls.from_config(config)
    return sum(p.numel() for p in model.parameters())
  except Exception:  # An unknown architecture: the caller then needs a given rate.
    return None


def estimate(job) -> Dict:
  """The estimate of a JobConfig (beam_pipelines/options.py): its scorer, inputs,
  --estimate_sample, --gpu_tokens_per_second and --gpu_price_per_hour."""
  config, sample_size = job.scorer, job.estimate_sample
  gpu_tokens_per_second, gpu_price_per_hour = job.gpu_tokens_per_second, job.gpu_price_per_hour
  patterns = list(job.patterns)
  inputs = read_lib.checked_inputs(patterns, job.input_format)
  total_bytes = inputs.total_bytes
  readable = [m.path for m in inputs.matches if not m.reason]
  resolved = loading.resolve_model(config.model, "scorer", config.allow_pickle_weights)
  tokenizer = load_tokenizer(resolved, config.trust_remote_code)

  from transformers import AutoConfig
  is_enc_dec = bool(getattr(AutoConfig.from_pretrained(
      resolved.path, **resolved.from_pretrained_kwargs()), "is_encoder_decoder", False))
  encoder = PromptEncoder(tokenizer, config, is_enc_dec)

  docs = tokens = sample_bytes = 0
  for text, nbytes in itertools.islice(
      _sample_documents(readable, job.input_format, job.text_field, sample_size,
                        job.max_doc_bytes),
      sample_size):
    docs += 1
    sample_bytes += nbytes
    tokens += len(encoder.encode(text))
  if docs == 0:
    raise ValueError("no valid documents in the input sample")
  # Compressed inputs are measured in compressed bytes by check_inputs; the ratio of
  # uncompressed sample bytes would overstate nothing for plain files and understate
  # compressed ones, so say which.
  compressed = any(p.lower().endswith(read_lib.COMPRESSED_SUFFIXES) for p in patterns)
  est_docs = max(docs, int(round(docs * total_bytes / max(sample_bytes, 1))))
  est_tokens = int(round(tokens / docs * est_docs))
  params = count_parameters(resolved)
  rate_source = "given (--gpu_tokens_per_second)"
  if gpu_tokens_per_second is None and params:
    gpu_tokens_per_second = ASSUMED_MFU * L4_BF16_FLOPS / (2.0 * params)
    rate_source = (f"assumed: one NVIDIA L4 at {ASSUMED_MFU:.0%} of {L4_BF16_FLOPS / 1e12:.0f} "
                   f"TFLOP/s bf16, 2 x {params / 1e6:.0f}M FLOPs per token")
  out = {
      "sample_documents": docs,
      "sample_tokens": tokens,
      "mean_prompt_tokens": round(tokens / docs, 1),
      "input_bytes": total_bytes,
      "estimated_documents": est_docs,
      "estimated_tokens": est_tokens,
      "model": resolved.name,
      "model_parameters": params,
      "max_tokens": config.max_tokens,
      "gpu_tokens_per_second": round(gpu_tokens_per_second, 1) if gpu_tokens_per_second else None,
      "gpu_rate_source": rate_source if gpu_tokens_per_second else "unknown model size: pass "
                         "--gpu_tokens_per_second",
      "estimated_gpu_hours": (_sig(est_tokens / gpu_tokens_per_second / 3600.0)
                              if gpu_tokens_per_second else None),
      "note": ("input is compressed: documents are extrapolated from compressed bytes and "
               "are underestimated by about the compression ratio" if compressed else
               "documents extrapolated from the sample's bytes per document"),
  }
  if gpu_price_per_hour and out["estimated_gpu_hours"] is not None:
    out["estimated_gpu_cost"] = _sig(out["estimated_gpu_hours"] * gpu_price_per_hour)
  if params:
    cpu_rate = CPU_TOKENS_PER_SECOND_135M * 135e6 / params
    out["cpu_2core_hours_reference"] = _sig(est_tokens / cpu_rate / 3600.0)
  return out


def _sig(x: float) -> float:
  return float(f"{x:.4g}")
