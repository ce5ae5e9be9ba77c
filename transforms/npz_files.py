"""Small .npz files (heads, centroids) written the same way every time: np.savez would
stamp each member with the current time, so refitting the same thing would change the
file's bytes."""
from __future__ import annotations

import io
import zipfile
from typing import Sequence

import numpy as np

from models.npz_io import npz_bytes  # noqa: F401  (written the same way by models/)


def load_npz(data: bytes, path: str, what: str, arrays: Sequence[str]):
  """np.load of a saved artifact's bytes, refused in one line when it is not an .npz
  (np.load would take other bytes for a pickle) or lacks one of `arrays`."""
  if not data.startswith(b"PK"):
    raise ValueError(f"{path} is not a {what}: not an .npz file")
  try:
    npz = np.load(io.BytesIO(data), allow_pickle=False)
  except (ValueError, OSError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path} is not a {what}: not a readable .npz file ({e})") from e
  missing = [a for a in arrays if a not in npz.files]
  if missing:
    raise ValueError(f"{path} is not a {what}: it has no {', '.join(missing)} (it holds "
                     f"{', '.join(npz.files) or 'nothing'})")
  return npz
