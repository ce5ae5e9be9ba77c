"""Saved artifacts and model directories, opened before the run with the loaders the
pipeline itself uses (so the checks cannot drift from it): --sketch_from, --quality_head,
--clusters_from, and the model directories (code of their own, their config, the
embedding dimension the artifacts must match). A problem is one UsageError line; the job
runs these before it creates --output or --cache, so a refused run writes nothing.
"""
from __future__ import annotations

from typing import Callable, Iterator, Optional, Tuple

from beam_pipelines.checks import UsageError, one_line, within_timeout
from beam_pipelines.config import JobConfig
from models import loading


def _models(job: JobConfig) -> Iterator[Tuple[str, str, object]]:
  """(option, kind, config) of each model the job runs."""
  if job.runs_ask_llm or job.runs_perplexity:
    yield "--scorer_model", "scorer", job.scorer
  if job.runs_embeddings:
    yield "--embedding_model", "embedding", job.embedding


def check_model(option: str, kind: str, config) -> Optional[int]:
  """Resolves a model, refuses one that needs code of its own (nothing of it is imported)
  and reads its config; returns its hidden size (None where it is not known here: a hub
  id, a GGUF file, remote code the user allowed)."""
  resolved = loading.resolve_model(config.model, kind, config.allow_pickle_weights)
  if resolved.is_hub:
    _check_hub_reachable(option, config.model)
    return None
  try:
    loading.refuse_remote_code(resolved, kind, config.trust_remote_code)
    if resolved.gguf_file or loading.remote_code_reason(resolved.path):
      return None  # GGUF: read when loaded; allowed remote code: never run here
  except loading.ModelLoadError as e:
    raise UsageError(f"{option}: {e}") from e
  from transformers import AutoConfig
  try:
    model_config = AutoConfig.from_pretrained(resolved.path, trust_remote_code=False)
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f"{option} {config.model}: its config.json cannot be read "
                     f"({one_line(e)})") from e
  size = getattr(model_config, "hidden_size", None)
  return size if isinstance(size, int) else None


def _check_hub_reachable(option: str, model: str) -> None:
  """Offline (HF_HUB_OFFLINE), a hub id loads only from the local cache: refused before
  the run when it is not there (else the run fails on the worker after a long wait)."""
  import os
  if os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes", "on"):
    return
  from huggingface_hub import try_to_load_from_cache
  repo = model.split("@", 1)[0]
  if not isinstance(try_to_load_from_cache(repo, "config.json"), str):
    raise UsageError(f"{option} {model} is a Hugging Face Hub id, and HF_HUB_OFFLINE is set "
                     "with no copy of it in the local cache: download it elsewhere and pass "
                     "a local directory or a gs:// path")


def check_models(job: JobConfig) -> Optional[int]:
  """check_model on every model of the job; the embedding dimension when known."""
  dims = {kind: check_model(option, kind, config) for option, kind, config in _models(job)}
  return dims.get("embedding")


def _open(option: str, path: str, what: str, load: Callable):
  """load() of a saved artifact; anything it raises is one line naming the option."""
  from apache_beam.io.filesystems import FileSystems
  if not FileSystems.exists(path):
    raise UsageError(f"{option} {path} does not exist")
  try:
    return load()
  except ValueError as e:  # the loaders' own refusals name the file and the reason
    raise UsageError(f"{option}: {str(e).splitlines()[0]}") from e
  except Exception as e:  # pylint: disable=broad-except
    raise UsageError(f"{option} {path} is not a {what}: {one_line(e)}") from e


def _other_dimension(option: str, path: str, what: str, has: int, job: JobConfig,
                     dim: int) -> UsageError:
  return UsageError(
      f"{option} {path} holds {what} of {has}-dimensional embeddings, but "
      f"{job.embedding_name()} gives {dim}: use one made with this --embedding_model")


def check_sketch(job: JobConfig, dim: Optional[int]) -> None:
  from transforms import sketch_io
  path = job.sketch_from
  sketch = _open("--sketch_from", path, "sketch.npz", lambda: sketch_io.load_sketch(path))
  if dim is not None and sketch.params.dim != dim:
    raise _other_dimension("--sketch_from", path, "a sketch", sketch.params.dim, job, dim)


def check_head(job: JobConfig, dim: Optional[int]) -> None:
  """--quality_head was fitted on the embeddings this job computes (model, token budget,
  dimension)."""
  from transforms import quality_head
  path = quality_head.head_path(job.quality_head)
  head = _open("--quality_head", path, "quality_head.npz",
               lambda: quality_head.load_head(path, job.embedding_name()))
  if head.embedding_max_tokens not in (None, job.embedding.max_tokens):
    raise UsageError(
        f"--quality_head {job.quality_head} was fitted on embeddings of the first "
        f"{head.embedding_max_tokens} tokens, this run embeds {job.embedding.max_tokens}: "
        f"pass --embedding_max_tokens={head.embedding_max_tokens}")
  if dim is not None and head.weights.shape[0] != dim:
    raise _other_dimension("--quality_head", job.quality_head, "a head",
                           head.weights.shape[0], job, dim)


def check_clusters(job: JobConfig, dim: Optional[int]) -> None:
  from transforms import kmeans
  path = job.clusters_from
  centroids, _ = _open("--clusters_from", path, "clusters.npz",
                       lambda: kmeans.load_clusters(path, job.embedding_name()))
  if dim is not None and centroids.shape[1] != dim:
    raise _other_dimension("--clusters_from", path, "centroids", centroids.shape[1], job,
                           dim)


def check_artifacts(job: JobConfig, local_models: bool) -> None:
  """Every model (where it is on this machine: `local_models`) and saved artifact the job
  reads, opened and matched to each other before the run."""
  dim = check_models(job) if local_models else None
  paths = [p for p in (job.sketch_from, job.quality_head, job.clusters_from) if p]

  def artifacts():
    if job.sketch_from:
      check_sketch(job, dim)
    if job.quality_head:
      check_head(job, dim)
    if job.clusters_from:
      check_clusters(job, dim)
  within_timeout(artifacts, "--sketch_from/--quality_head/--clusters_from", paths)
