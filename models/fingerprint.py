"""What a model's output depends on, as a small dict and a short hash: the score cache
reuses a result only when every setting in it is the same.

A model is identified by its content, not its name: the bundled packages by their pinned
version, a local directory or .gguf file by the SHA-256 of its files, a gs:// model by the
checksums GCS keeps for its objects, a hub id by the revision it resolves to. The device
is left out on purpose (fp32 scores agree across devices to rounding); the precision is
in each model's settings (models/precision.py): bf16 moves scores far beyond that, so a
bf16 score is never reused as an fp32 one. A cache filled on GPUs in bf16 is reused on a
CPU run with --precision=bf16 (or auto on a CPU with bf16 units).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any, Dict, Optional

from models import loading, storage

_LOG = logging.getLogger(__name__)
_CHUNK = 8 << 20


def settings_fingerprint(settings: Dict[str, Any]) -> str:
  """A 16-hex-digit hash of a JSON-serialisable settings dict (key order ignored)."""
  blob = json.dumps(settings, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
  return hashlib.sha256(blob.encode("ascii")).hexdigest()[:16]


def file_sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    while True:
      chunk = f.read(_CHUNK)
      if not chunk:
        return h.hexdigest()
      h.update(chunk)


def _directory_files(directory: str) -> Dict[str, str]:
  """{relative path: sha256} of every file a model directory holds (hidden ones aside)."""
  files = {}
  for root, dirs, names in os.walk(directory):
    dirs[:] = sorted(d for d in dirs if not d.startswith("."))
    for name in sorted(names):
      if name.startswith("."):
        continue
      path = os.path.join(root, name)
      files[os.path.relpath(path, directory)] = file_sha256(path)
  return files


def _gcs_files(uri: str) -> Dict[str, str]:
  """{relative path: size and checksum} of a gs:// model, from object metadata (nothing
  is downloaded)."""
  if uri.endswith(".gguf"):
    found = storage.match(uri)
    base = uri.rsplit("/", 1)[0]
  else:
    base = uri.rstrip("/")
    found = storage.match(base + "/**")
  files = {}
  for m in found:
    if m.path.endswith("/"):
      continue
    files[m.path[len(base) + 1:]] = f"{m.size_in_bytes}:{storage.checksum(m.path)}"
  if not files:
    raise loading.ModelNotFoundError(f"model path {uri!r} holds no files")
  return files


def _hub_revision(spec: str) -> Optional[str]:
  """The commit a hub id resolves to: from the local hub cache when the model was
  downloaded, else asked of the hub (skipped when offline)."""
  try:
    from huggingface_hub import constants
    ref = os.path.join(constants.HF_HUB_CACHE, "models--" + spec.replace("/", "--"),
                       "refs", "main")
    if os.path.isfile(ref):
      with open(ref) as f:
        return f.read().strip()
    if constants.HF_HUB_OFFLINE:
      return None
    from huggingface_hub import HfApi
    return HfApi().model_info(spec, timeout=10).sha
  except Exception as e:  # pylint: disable=broad-except
    _LOG.warning("could not resolve the revision of %s (%s)", spec, e)
    return None


def model_identity(spec: str, kind: str) -> Dict[str, Any]:
  """The content identity of --scorer_model / --embedding_model `spec`."""
  if spec == loading.DEFAULT:
    return {"bundled": loading.model_name(spec, kind)}  # The name pins the version.
  if spec.startswith("gs://"):
    return {"gcs": spec, "files": _gcs_files(spec)}
  if os.path.isfile(spec):
    return {"file": os.path.basename(spec), "sha256": file_sha256(spec)}
  if os.path.isdir(spec):
    return {"files": _directory_files(spec)}
  revision = _hub_revision(spec)
  if revision is None:
    _LOG.warning("the score cache knows %s by its name only: if the model changes on the "
                 "hub under the same name, old cache entries would be reused. Pass a "
                 "local or gs:// copy to pin it.", spec)
  return {"hub": spec, "revision": revision}
