"""The score cache's codecs: what each cached signal stores (model output rows <->
Parquet columns). Each signal of the registry names its codec (transforms/signals.py);
transforms/score_cache.py reads and writes the files."""
from __future__ import annotations

import math
from typing import Any, Iterator, Tuple

import numpy as np

from transforms.records import Document

KEY = "key"
KEY_BYTES = 16

# --- What each model stage stores ---------------------------------------------------------
# A row is what the model returned for one text (what the handler's attach function takes):
# (p_yes, p_no) for Ask-LLM, the mean NLL for perplexity, the vector for embeddings.

class Codec:
  """Model output rows <-> Parquet columns, for one model stage."""
  namespace = ""

  def row(self, doc: Document):
    """The model output row of a scored Document; None when the model failed on it."""
    raise NotImplementedError

  def table(self, keys, rows):
    raise NotImplementedError

  def rows(self, table) -> Iterator[Tuple[bytes, Any]]:
    """(key, row) of each valid entry; raises ValueError on a table of the wrong shape.
    Invalid entries (a wrong value) are counted and skipped."""
    raise NotImplementedError


def _keys(table):
  import pyarrow as pa
  if table.schema.field(KEY).type != pa.binary(KEY_BYTES):
    raise ValueError(f"column {KEY} is {table.schema.field(KEY).type}, "
                     f"not fixed_size_binary[{KEY_BYTES}]")
  return table.column(KEY).to_pylist()


def _float_columns(table, names):
  import pyarrow as pa
  cols = []
  for name in names:
    if not pa.types.is_floating(table.schema.field(name).type):
      raise ValueError(f"column {name} is {table.schema.field(name).type}, not a float")
    cols.append(table.column(name).to_numpy(zero_copy_only=False).astype(np.float64))
  return cols


class AskLLMCodec(Codec):
  namespace = "ask_llm"

  def row(self, doc):
    s = doc.scores
    if "p_yes" not in s or "p_no" not in s:
      return None
    return (float(s["p_yes"]), float(s["p_no"]))

  def table(self, keys, rows):
    import pyarrow as pa
    return pa.table({KEY: pa.array(keys, pa.binary(KEY_BYTES)),
                     "p_yes": pa.array([r[0] for r in rows], pa.float64()),
                     "p_no": pa.array([r[1] for r in rows], pa.float64())})

  def rows(self, table):
    keys = _keys(table)
    p_yes, p_no = _float_columns(table, ("p_yes", "p_no"))
    for key, y, n in zip(keys, p_yes, p_no):
      if 0.0 <= y <= 1.0 and 0.0 <= n <= 1.0:  # False for NaN too.
        yield key, (float(y), float(n))
      else:
        yield key, None


class PerplexityCodec(Codec):
  namespace = "perplexity"

  def row(self, doc):
    return float(doc.scores["mean_nll"]) if "mean_nll" in doc.scores else None

  def table(self, keys, rows):
    import pyarrow as pa
    return pa.table({KEY: pa.array(keys, pa.binary(KEY_BYTES)),
                     "mean_nll": pa.array(rows, pa.float64()),
                     # Derived, kept for readers of the cache (exp of mean_nll).
                     "perplexity": pa.array([math.exp(min(r, 709.0)) for r in rows],
                                            pa.float64())})

  def rows(self, table):
    keys = _keys(table)
    (mean_nll,) = _float_columns(table, ("mean_nll",))
    for key, v in zip(keys, mean_nll):
      # NaN is a real result (a text too short to predict); a negative NLL is not.
      yield key, (float(v) if (math.isnan(v) or v >= 0.0) else None)


def round_embedding(vector) -> np.ndarray:
  """Embeddings are kept as float16 in the cache; every run uses the float16 values (as
  float32), so that a cached run and a fresh one select the same documents."""
  with np.errstate(over="ignore"):  # an out-of-range value becomes inf: an invalid entry
    return np.asarray(vector, dtype=np.float16).astype(np.float32)


def valid_embedding(vector) -> bool:
  """A usable embedding: finite and not all zeros (the model's vectors have unit length:
  a zero one is a broken entry, whose density and cluster would be meaningless)."""
  vector = np.asarray(vector)
  return bool(vector.size and np.all(np.isfinite(vector)) and np.any(vector))


class EmbeddingCodec(Codec):
  namespace = "embeddings"

  def row(self, doc):
    # An invalid vector is not kept (a reader would skip it anyway).
    if doc.embedding is None or not valid_embedding(round_embedding(doc.embedding)):
      return None
    return doc.embedding

  def table(self, keys, rows):
    import pyarrow as pa
    with np.errstate(over="ignore"):  # out of float16's range: inf, an invalid entry
      matrix = np.stack([np.asarray(r, dtype=np.float16) for r in rows])
    return pa.table({KEY: pa.array(keys, pa.binary(KEY_BYTES)),
                     "embedding": pa.FixedSizeListArray.from_arrays(
                         pa.array(matrix.ravel(), pa.float16()), matrix.shape[1])})

  def rows(self, table):
    import pyarrow as pa
    keys = _keys(table)
    column = table.column("embedding").combine_chunks()
    if not (pa.types.is_fixed_size_list(column.type)
            and pa.types.is_float16(column.type.value_type)):
      raise ValueError(f"column embedding is {column.type}, not a fixed-size list of "
                       "float16")
    dim = column.type.list_size
    values = column.values.to_numpy(zero_copy_only=False).reshape(-1, dim)
    for key, vec in zip(keys, values):
      yield key, (vec.astype(np.float32) if valid_embedding(vec) else None)


class ColumnsCodec(Codec):
  """A simple signal's outputs (transforms/signals.py): its float columns, as they are."""

  def __init__(self, namespace: str, names):
    self.namespace, self.names = namespace, tuple(names)

  def row(self, doc):
    values = [doc.scores.get(n) for n in self.names]
    if any(v is None or isinstance(v, bool) for v in values):
      return None
    return tuple(float(v) for v in values)

  def table(self, keys, rows):
    import pyarrow as pa
    columns = {KEY: pa.array(keys, pa.binary(KEY_BYTES))}
    for i, name in enumerate(self.names):
      columns[name] = pa.array([r[i] for r in rows], pa.float64())
    return pa.table(columns)

  def rows(self, table):
    keys = _keys(table)
    for key, values in zip(keys, zip(*_float_columns(table, self.names))):
      yield key, tuple(float(v) for v in values)

  def attach(self, doc, row):
    return doc.with_scores(**dict(zip(self.names, row)))
