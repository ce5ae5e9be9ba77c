"""Numeric precision of the models: which devices have native bf16 matrix units, what
`--precision=auto` chooses for each model there, and the context a forward pass runs in.

Precisions: `fp32`, and `bf16` (on a CPU through torch.autocast: the matrix products run
in bf16 on the AMX / AVX512-BF16 units while the weights stay fp32 and the ops autocast
keeps in fp32 (softmax, layer norm) stay there; on CUDA the weights are loaded in bf16).
The steps that decide a score (the log-softmax over the answer tokens, the NLL, the
embedding's pooling and normalisation) run in fp32 outside the autocast region in every
precision. On a GPU without native bf16 (T4, V100) `bf16` falls back to fp16.

`auto` is decided per model and device kind (docs/measurements.md#precision). On a CPU,
bf16 for the models that run faster in it and whose quality in bf16 was measured to stay
within the interval of their fp32 quality: the embedder (the head's AUC moved by less
than 0.001) and the judge (1.5x as fast; AUC 0.011 lower on 1,000 dev pages, the paired
interval holding 0 on both halves). Perplexity stays fp32 there: it is no faster in bf16
(its time goes to the fp32 log-softmax over the vocabulary). On CUDA
`auto` keeps the job's earlier default, bf16 weights for every model (fp32 on a GPU runs
without tensor cores at a fraction of the speed); --precision=fp32 asks for exact scores.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import os
from typing import FrozenSet, Optional

_LOG = logging.getLogger(__name__)

AUTO, FP32, BF16, FP16 = "auto", "fp32", "bf16", "fp16"
CHOICES = (AUTO, FP32, BF16)
# The models of the job (their `role`), and auto's choice for each where the device has
# native bf16 (measured by benchmarks/precision_bench.py, docs/measurements.md#precision).
ROLES = ("scorer", "perplexity", "embedding")
AUTO_ON_BF16_DEVICES = {
    "cpu": {"scorer": BF16, "perplexity": FP32, "embedding": BF16},
    "cuda": {"scorer": BF16, "perplexity": BF16, "embedding": BF16}}
# CPU flags (/proc/cpuinfo) of units that multiply bf16 matrices natively.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(path: str = "/proc/cpuinfo") -> FrozenSet[str]:
  """The CPU's feature flags (empty where /proc/cpuinfo does not exist, e.g. macOS)."""
  try:
    with open(path, encoding="utf-8", errors="replace") as f:
      for line in f:
        if line.startswith(("flags", "Features")):
          return frozenset(line.split(":", 1)[1].split())
  except OSError:
    pass
  return frozenset()


@functools.lru_cache(maxsize=None)
def _this_cpu_flags() -> FrozenSet[str]:
  return cpu_flags()


def cpu_has_native_bf16(flags: Optional[FrozenSet[str]] = None) -> bool:
  flags = _this_cpu_flags() if flags is None else flags
  return any(f in flags for f in CPU_BF16_FLAGS)


def cuda_has_native_bf16() -> bool:
  import torch
  return bool(torch.cuda.is_available()
              and torch.cuda.is_bf16_supported(including_emulation=False))


def launch_device(device: str) -> str:
  """The device a model will run on, as far as the launching machine can tell: `auto` is
  CUDA where CUDA is usable here; `cuda` stays cuda even without a GPU here (Dataflow
  workers have the GPU the launcher lacks)."""
  if device != AUTO:
    return device
  import torch
  return "cuda" if torch.cuda.is_available() else "cpu"


def device_has_native_bf16(device: str, flags: Optional[FrozenSet[str]] = None) -> bool:
  if device == "cuda":
    import torch
    # A launcher without a GPU cannot ask: GPUs on Dataflow (L4, A100, H100) have bf16.
    return cuda_has_native_bf16() if torch.cuda.is_available() else True
  return cpu_has_native_bf16(flags)


def resolve(requested: str, role: str, device: str,
            flags: Optional[FrozenSet[str]] = None) -> str:
  """`fp32` or `bf16` for a model (`role`) on `device` (auto | cpu | cuda)."""
  if requested not in CHOICES:
    raise ValueError(f"--precision must be one of {', '.join(CHOICES)}, not {requested!r}")
  if role not in ROLES:
    raise ValueError(f"unknown model role {role!r}")
  if requested != AUTO:
    return requested
  device = launch_device(device)
  if device_has_native_bf16(device, flags):
    return AUTO_ON_BF16_DEVICES[device][role]
  return FP32


def weights_dtype(precision: str, device: str):
  """The dtype the weights are loaded in: fp32 on a CPU (autocast casts the inputs of
  the matrix products), the precision itself on CUDA (fp16 where bf16 is emulated)."""
  import torch
  if device != "cuda" or precision == FP32:
    return torch.float32
  return torch.bfloat16 if cuda_has_native_bf16() else torch.float16


def applied(precision: str, device: str) -> str:
  """What a model actually runs in (for metrics.json): `fp16` for bf16 on an old GPU."""
  if precision == BF16 and device == "cuda" and not cuda_has_native_bf16():
    return FP16
  return precision


def warn_if_emulated(precision: str, device: str) -> None:
  if precision == BF16 and device == "cpu" and not cpu_has_native_bf16():
    _LOG.warning("--precision=bf16 on a CPU without bf16 units (no %s in /proc/cpuinfo): "
                 "bf16 is emulated there and slower than fp32", " or ".join(CPU_BF16_FLAGS))


def autocast(precision: str, device: str):
  """The context a forward pass runs in: bf16 autocast on a CPU, nothing otherwise (on
  CUDA the weights already have the precision's dtype)."""
  if precision == BF16 and device == "cpu":
    import torch
    return torch.autocast("cpu", dtype=torch.bfloat16)
  return contextlib.nullcontext()


def peak_tflops(device: str = "cpu") -> Optional[dict]:
  """A rough theoretical peak (dense matrix products) of this machine per precision, for
  benchmarks: CPU cores x clock x FLOPs per cycle (AVX-512: 2 FMA units x 16 fp32 lanes x
  2, half that on Zen 4; AVX512-BF16 dot products: twice fp32; AMX-BF16: 1024)."""
  if device != "cpu":
    return None
  ghz = _cpu_ghz()
  cores = os.cpu_count() or 1
  flags = _this_cpu_flags()
  fp32 = 64 if "avx512f" in flags else 32
  if _cpuinfo_field("vendor_id") == "AuthenticAMD" and _cpuinfo_field("cpu family") == "25":
    fp32 = 32  # Zen 4 runs 512-bit instructions on 256-bit units
  bf16 = 1024 if "amx_bf16" in flags else (2 * fp32 if "avx512_bf16" in flags else fp32)
  return {"cores": cores, "ghz": ghz, "fp32": cores * ghz * fp32 / 1000,
          "bf16": cores * ghz * bf16 / 1000}


def _cpuinfo_field(name: str) -> str:
  try:
    with open("/proc/cpuinfo", encoding="utf-8") as f:
      for line in f:
        if line.split(":")[0].strip() == name:
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return ""


def _cpu_ghz() -> float:
  try:
    return float(_cpuinfo_field("cpu MHz")) / 1000
  except ValueError:
    return 2.0
