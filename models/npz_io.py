"""Small .npz files (heads, centroids) written the same way every time: np.savez would
stamp each member with the current time, so refitting the same thing would change the
file's bytes. (In models/ so that models/ and transforms/ share it.)"""
from __future__ import annotations

import io
import zipfile
from typing import Mapping

import numpy as np


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
  """The arrays as .npz bytes (np.load reads them), identical for identical arrays."""
  buf = io.BytesIO()
  with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
    for name, array in arrays.items():
      member = io.BytesIO()
      np.lib.format.write_array(member, np.asarray(array), allow_pickle=False)
      info = zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
      info.external_attr = 0o644 << 16
      z.writestr(info, member.getvalue())
  return buf.getvalue()
