"""The formats of the outputs' records, as tables: the selected records
(`--output_format`: each format is one entry of SELECTED_FORMATS, with its file suffix, its encoder and how a
reader opens it) and scores/ (`--scores_format`: JSON Lines, or Parquet with a typed
column per score). The features come from the registry of signals, so every run's
records have the same ones."""
from __future__ import annotations

import gzip
import io
import json
import math
import numbers
from typing import Any, Dict, Mapping, Sequence, Tuple

import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.tfrecordio import _TFRecordUtil

from transforms import kept_types, selected_formats, signals
from transforms.records import MISSING_INT, Document, safe_str, strict_json

SCORES_FORMATS = ("jsonl", "parquet")
# The columns of a Parquet scores/ that are not a score of the schema.
_ROW_COLUMNS = ("id", "source", "selected", "rank")
OTHER_SCORES = "other_scores"
NUM_TOKENS = "num_tokens"
TARGETS = "targets"


def _kinds(kept_fields) -> Dict[str, Any]:
  """{name: kind} of the kept fields: given as kept_types kinds (WriteOutputs unifies them
  over the run), or as names alone (strings as they are, other values as JSON text: a caller
  that did not unify)."""
  if isinstance(kept_fields, Mapping):
    return dict(kept_fields)
  return kept_types.kinds_or_text(None, kept_fields)


def kept_field_text(value) -> str:
  """A --keep_fields value as text: a string as it is, anything else as JSON text, a
  missing field as the empty string."""
  if value is None:
    return ""
  if isinstance(value, str):
    return safe_str(value)
  return safe_str(json.dumps(value, ensure_ascii=False, default=str))


def int_score(doc: Document, name: str) -> int:
  """An integer score (e.g. the cluster), MISSING_INT where the run did not compute it."""
  value = doc.scores.get(name)
  ok = isinstance(value, int) and not isinstance(value, bool)
  return int(value) if ok else MISSING_INT


def tf_example(doc: Document, rank: int, tokens=None, kinds=None) -> bytes:
  """A tf.train.Example: id, text (bytes), rank (int64), every float feature of the registry (signals.feature_names)
  (float; NaN when not computed), the --keep_fields (by their kinds: kept_types), and with
  `tokens`, targets (int64 list) and num_tokens."""
  import tensorflow as tf

  def floats(v):
    return tf.train.Feature(float_list=tf.train.FloatList(value=[v]))

  def ints(values):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

  feature = {
      "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[doc.id.encode("utf-8")])),
      "text": tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[doc.text.encode("utf-8")])),
      "rank": ints([rank]),
  }
  for name in signals.feature_names(signals.FLOAT):
    value = doc.scores.get(name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    feature[name] = floats(float(value) if ok else float("nan"))
  for name in signals.feature_names(signals.INT):
    feature[name] = ints([int_score(doc, name)])
  kinds = kinds if kinds is not None else _kinds(tuple(doc.extra))
  lists = {"int64_list": tf.train.Int64List, "float_list": tf.train.FloatList,
           "bytes_list": tf.train.BytesList}
  for name, value in doc.extra.items():
    kind, values = kept_types.tf_feature_value(kinds[name], value)
    feature[name] = tf.train.Feature(**{kind: lists[kind](value=values)})
  if tokens is not None:
    feature[TARGETS] = ints(tokens)
    feature[NUM_TOKENS] = ints([len(tokens)])
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def features_spec(tokenized: bool, kept_fields=()) -> Dict[str, Dict[str, Any]]:
  """features.json (beside the selected folders): each feature's type and shape ([] a scalar, [null] a
  variable-length list), as tf.io parsing specs need them."""
  spec = {"id": {"dtype": "string", "shape": []}, "text": {"dtype": "string", "shape": []},
          "rank": {"dtype": "int64", "shape": []}}
  for name in signals.feature_names(signals.FLOAT):
    spec[name] = {"dtype": "float32", "shape": [], "missing": "NaN"}
  for name in signals.feature_names(signals.INT):
    spec[name] = {"dtype": "int64", "shape": [], "missing": MISSING_INT}
  for name, kind in _kinds(kept_fields).items():
    spec[name] = kept_types.feature_spec(kind)
  if tokenized:
    spec[TARGETS] = {"dtype": "int64", "shape": [None]}
    spec[NUM_TOKENS] = {"dtype": "int64", "shape": []}
  return spec


def selected_row(doc: Document, rank: int, tokens=None, kinds=None) -> Dict[str, Any]:
  """A selected record for Parquet and JSON Lines: the TFRecord's features with the
  same values (a score not computed is null). Kept fields: with `kinds`, the cells of
  their kinds (kept_types.parquet_value); without, as read."""
  row = {"id": safe_str(doc.id), "text": safe_str(doc.text), "rank": rank}
  for name in signals.feature_names(signals.FLOAT):
    value = doc.scores.get(name)
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))
    row[name] = float(value) if ok else None
  for name in signals.feature_names(signals.INT):
    value = int_score(doc, name)
    row[name] = None if value == MISSING_INT else value
  for name, value in doc.extra.items():
    row[name] = (strict_json(value) if kinds is None
                 else kept_types.parquet_value(kinds[name], value))
  if tokens is not None:
    row[TARGETS] = [int(t) for t in tokens]
    row[NUM_TOKENS] = len(tokens)
  return row


def selected_schema(kept_fields=(), tokenized: bool = False) -> pa.Schema:
  """The Parquet schema of selected/ (the same columns as features_spec)."""
  fields = [pa.field("id", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("rank", pa.int64(), nullable=False)]
  fields += [pa.field(name, pa.float64()) for name in signals.feature_names(signals.FLOAT)]
  fields += [pa.field(name, pa.int64()) for name in signals.feature_names(signals.INT)]
  fields += [pa.field(name, kept_types.parquet_type(kind))
             for name, kind in _kinds(kept_fields).items()]
  if tokenized:
    fields += [pa.field(TARGETS, pa.list_(pa.int64())), pa.field(NUM_TOKENS, pa.int64())]
  return pa.schema(fields)


def encode_tfrecord(rows, kept_fields, tokenized) -> bytes:
  out = io.BytesIO()
  kinds = _kinds(kept_fields)
  for doc, rank, ids in rows:
    _TFRecordUtil.write_record(out, tf_example(doc, rank, ids, kinds))
  return out.getvalue()


def encode_parquet(rows, kept_fields, tokenized) -> bytes:
  kinds = _kinds(kept_fields)
  records = [selected_row(doc, rank, ids, kinds) for doc, rank, ids in rows]
  out = io.BytesIO()
  pq.write_table(pa.Table.from_pylist(records, schema=selected_schema(kept_fields,
                                                                       tokenized)),
                 out, compression="snappy")
  return out.getvalue()


def encode_jsonl_gz(rows, kept_fields, tokenized) -> bytes:
  # The kinds as in Parquet (a field of mixed types as JSON text), so that the folder
  # loads with readers that type a column, such as datasets' json loader.
  kinds = _kinds(kept_fields)
  records = [selected_row(doc, rank, ids, kinds) for doc, rank, ids in rows]
  lines = "".join(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n"
                  for r in records)
  return gzip.compress(lines.encode("utf-8"), mtime=0)


# --output_format's table (light, for the parser): transforms/selected_formats.py.
SELECTED_FORMATS, OUTPUT_FORMATS = selected_formats.SELECTED_FORMATS, selected_formats.OUTPUT_FORMATS


def partition_file_name(start: int, count: int, fmt: str = "tfrecord") -> str:
  # Zero-padded so that lexicographic file order is rank order.
  return f"ranks-{start:012d}-{start + count - 1:012d}{SELECTED_FORMATS[fmt].suffix}"


def encode_partition(fmt: str, rows, kept_fields, tokenized) -> bytes:
  """One partition's file in `fmt`, records in rank order. rows: (doc, rank, tokens)."""
  return SELECTED_FORMATS[fmt].encode(rows, kept_fields, tokenized)


def is_text_column(name: str) -> bool:
  """Whether a score name holds text, not a number."""
  # `<namespace>_error` holds why a model failed on a document (inference.error_field);
  # the registry's text columns (duplicate_of, ...) are text too.
  return name.endswith("_error") or name in signals.text_columns()


def scores_schema(score_names: Sequence[str], text_columns=()) -> pa.Schema:
  """The columns of a Parquet scores/: id, source, one per name in `score_names` (float64;
  int64 for the registry's integer columns; string for its text columns), one column per
  kept field in `text_columns` (--keep_fields: {name: kind} gives each its kept_types
  type; names alone are JSON text), selected, rank, and other_scores: a JSON
  object of the scores of a row that have no column (null when there are none)."""
  kept = _kinds(text_columns)
  names = list(score_names) + list(kept)
  clash = sorted(set(names) & set(_ROW_COLUMNS + (OTHER_SCORES,)))
  repeated = sorted({n for n in names if names.count(n) > 1})
  if clash or repeated:
    raise ValueError(f"score names must be unique and not a column of scores/: "
                     f"clash {clash}, repeated {repeated}")
  return pa.schema(
      [pa.field("id", pa.string(), nullable=False),
       pa.field("source", pa.string(), nullable=False)]
      + [pa.field(n, kept_types.parquet_type(kept[n]) if n in kept
                  else pa.string() if is_text_column(n)
                  else pa.int64() if n in signals.int_columns() else pa.float64())
         for n in names]
      + [pa.field("selected", pa.bool_(), nullable=False), pa.field("rank", pa.int64()),
         pa.field(OTHER_SCORES, pa.string())])


def _cell(name: str, value) -> Tuple[bool, Any]:
  """(fits, cell): `value` as the cell of score column `name`; fits is False for a value
  the column cannot hold (it then goes into other_scores)."""
  if value is None:
    return True, None
  if is_text_column(name):
    # A lone surrogate (from an exception message) cannot be written as UTF-8.
    return (True, safe_str(value)) if isinstance(value, str) else (False, None)
  if name in signals.int_columns():
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    return (True, int(value)) if ok else (False, None)
  if isinstance(value, numbers.Real) and not isinstance(value, bool):
    try:
      value = float(value)
    except OverflowError:  # An integer too big for a float: kept exact in other_scores.
      return False, None
    return True, value if math.isfinite(value) else None  # null, as in JSON Lines.
  return False, None


def parquet_row(record: Mapping[str, Any], schema_names: Sequence[str],
                text_columns=()) -> Dict[str, Any]:
  """A score_record as a row of scores_schema (whose column names are `schema_names`). A
  missing score is null; a score without a column, or one its column cannot hold, goes
  into other_scores, so nothing is lost and no row fails the write. `text_columns` (the
  --keep_fields, names or {name: kind} as scores_schema takes) hold their kind's cell
  (kept_types.parquet_value), null when missing."""
  kept = _kinds(text_columns)
  row = {name: record[name] for name in _ROW_COLUMNS}
  columns = [n for n in schema_names if n not in _ROW_COLUMNS and n != OTHER_SCORES]
  known = set(columns).union(_ROW_COLUMNS)
  other = {k: v for k, v in record.items() if k not in known}
  for name in columns:
    if name in kept:
      row[name] = kept_types.parquet_value(kept[name], record.get(name))
      continue
    fits, row[name] = _cell(name, record.get(name))
    if not fits:
      other[name] = record[name]
  # default=str: a value JSON cannot hold is kept as its text rather than failing the row.
  row[OTHER_SCORES] = (safe_str(json.dumps(other, ensure_ascii=False, default=str))
                       if other else None)
  return row
