"""Writing outputs: ranked TFRecords, scores (JSON Lines or Parquet), rejected JSON Lines.

`WriteToTFRecord` does not keep record order, so each ranked partition is written as one
file by a DoFn, named by its rank range: file order then record order is rank order.
"""
from __future__ import annotations

import gzip
import io
import json
import math
import numbers
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil

from transforms import output_commit, output_files, output_lock
from transforms.metrics import SELECTED_TOKENS, counter, stage_clock
from transforms.records import (INT_SCORE_FEATURES, MISSING_INT, SCORE_FEATURES, TEXT_SCORES,
                                Document, Rejected, safe_str, score_record, score_row)

SELECTED_DIR = "selected"
SCORES_DIR = "scores"
REJECTED_DIR = "rejected"
SKETCH_FILE = "sketch.npz"
HEAD_FILE = "quality_head.npz"
HEAD_FIT_FILE = "quality_head_fit.json"
CLUSTERS_FILE = "clusters.npz"          # the k-means centroids (--clusters_from reads it)
CLUSTER_STATS_FILE = "clusters.json"    # cluster sizes and the balanced cap
REPORT_FILE = "report.html"
REPORT_DATA_FILE = "report.json"
SCORES_FORMATS = ("jsonl", "parquet")
# The columns of a Parquet scores/ that are not a score of the schema.
_ROW_COLUMNS = ("id", "source", "selected", "rank")
OTHER_SCORES = "other_scores"


# Staging and the commit live in output_commit (re-exported: other modules use them here).
STAGING_ROOT = output_commit.STAGING_ROOT
SUCCESS_FILE = output_commit.SUCCESS_FILE
METRICS_FILE = output_commit.METRICS_FILE
LOCK_FILE = output_lock.LOCK_FILE
new_run_id = output_commit.new_run_id
staging_dir = output_commit.staging_dir
list_files = output_files.list_files
write_bytes_atomic = output_files.write_bytes_atomic
write_json_atomic = output_files.write_json_atomic
delete_tree = output_files.delete_tree
discard_staging = output_commit.discard_staging

FEATURES_FILE = "features.json"  # selected/features.json: the records' schema
NUM_TOKENS = "num_tokens"
TARGETS = "targets"


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


def tf_example(doc: Document, rank: int, tokens=None) -> bytes:
  """A tf.train.Example: id, text (bytes), rank (int64), every score of SCORE_FEATURES
  (float; NaN when not computed), the --keep_fields (bytes, kept_field_text), and with
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
  for name in SCORE_FEATURES:
    value = doc.scores.get(name)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    feature[name] = floats(float(value) if ok else float("nan"))
  for name in INT_SCORE_FEATURES:
    feature[name] = ints([int_score(doc, name)])
  for name, value in doc.extra.items():
    feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(
        value=[kept_field_text(value).encode("utf-8")]))
  if tokens is not None:
    feature[TARGETS] = ints(tokens)
    feature[NUM_TOKENS] = ints([len(tokens)])
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def features_spec(tokenized: bool, kept_fields: Sequence[str] = ()) -> Dict[str, Dict[str, Any]]:
  """selected/features.json: each feature's type and shape ([] a scalar, [null] a
  variable-length list), as tf.io parsing specs need them."""
  spec = {"id": {"dtype": "string", "shape": []}, "text": {"dtype": "string", "shape": []},
          "rank": {"dtype": "int64", "shape": []}}
  for name in SCORE_FEATURES:
    spec[name] = {"dtype": "float32", "shape": [], "missing": "NaN"}
  for name in INT_SCORE_FEATURES:
    spec[name] = {"dtype": "int64", "shape": [], "missing": MISSING_INT}
  for name in kept_fields:
    spec[name] = {"dtype": "string", "shape": [], "missing": "",
                  "encoding": "strings as they are, other values as JSON text"}
  if tokenized:
    spec[TARGETS] = {"dtype": "int64", "shape": [None]}
    spec[NUM_TOKENS] = {"dtype": "int64", "shape": []}
  return spec


# --output_format: the formats of selected/, each ranked the same way (options.py
# declares the same names for the parser; tests/test_training_output.py checks them).
OUTPUT_FORMATS = ("tfrecord", "parquet", "jsonl")
_SUFFIXES = {"tfrecord": ".tfrecord", "parquet": ".parquet", "jsonl": ".jsonl.gz"}


def partition_file_name(start: int, count: int, fmt: str = "tfrecord") -> str:
  # Zero-padded so that lexicographic file order is rank order.
  return f"ranks-{start:012d}-{start + count - 1:012d}{_SUFFIXES[fmt]}"


def selected_row(doc: Document, rank: int, tokens=None) -> Dict[str, Any]:
  """A selected record for Parquet and JSON Lines: the TFRecord's features with the
  same values (a score not computed is null; kept fields as kept_field_text)."""
  row = {"id": safe_str(doc.id), "text": safe_str(doc.text), "rank": rank}
  for name in SCORE_FEATURES:
    value = doc.scores.get(name)
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool)
          and math.isfinite(value))
    row[name] = float(value) if ok else None
  for name in INT_SCORE_FEATURES:
    value = int_score(doc, name)
    row[name] = None if value == MISSING_INT else value
  for name, value in doc.extra.items():
    row[name] = kept_field_text(value)
  if tokens is not None:
    row[TARGETS] = [int(t) for t in tokens]
    row[NUM_TOKENS] = len(tokens)
  return row


def selected_schema(kept_fields: Sequence[str] = (), tokenized: bool = False) -> pa.Schema:
  """The Parquet schema of selected/ (the same columns as features_spec)."""
  fields = [pa.field("id", pa.string(), nullable=False),
            pa.field("text", pa.string(), nullable=False),
            pa.field("rank", pa.int64(), nullable=False)]
  fields += [pa.field(name, pa.float64()) for name in SCORE_FEATURES]
  fields += [pa.field(name, pa.int64()) for name in INT_SCORE_FEATURES]
  fields += [pa.field(name, pa.string()) for name in kept_fields]
  if tokenized:
    fields += [pa.field(TARGETS, pa.list_(pa.int64())), pa.field(NUM_TOKENS, pa.int64())]
  return pa.schema(fields)


def _encode_partition(fmt: str, rows, kept_fields, tokenized) -> bytes:
  """One partition's file in `fmt`, records in rank order. rows: (doc, rank, tokens)."""
  if fmt == "tfrecord":
    out = io.BytesIO()
    for doc, rank, ids in rows:
      _TFRecordUtil.write_record(out, tf_example(doc, rank, ids))
    return out.getvalue()
  records = [selected_row(doc, rank, ids) for doc, rank, ids in rows]
  if fmt == "parquet":
    out = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records, schema=selected_schema(kept_fields,
                                                                         tokenized)),
                   out, compression="snappy")
    return out.getvalue()
  lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
  return gzip.compress(lines.encode("utf-8"), mtime=0)


class _WritePartition(beam.DoFn):
  """Writes one ranked partition; emits (Document, rank) for the scores output (with
  num_tokens among its scores when tokenizing).

  Written to a temporary name and renamed, so a retried bundle never leaves a partial
  file under the final name.
  """

  def __init__(self, directory: str, tokenizer: Optional[str] = None,
               append_eos: bool = False, formats: Sequence[str] = ("tfrecord",),
               kept_fields: Sequence[str] = ()):
    self._dir = directory
    self._tokenizer_path = tokenizer
    self._append_eos = append_eos
    self._formats = tuple(formats)
    self._kept = tuple(kept_fields)

  def setup(self):
    self._tokenizer = None
    self._tokens = counter(SELECTED_TOKENS)
    if self._tokenizer_path:
      from transforms.tokenize import load_tokenizer
      self._tokenizer = load_tokenizer(self._tokenizer_path, self._append_eos)

  def process(self, element: Tuple[int, List[Tuple[int, Document]]]):
    stage_clock("write_selected")
    start, ranked = element
    tokens = ([None] * len(ranked) if self._tokenizer is None
              else self._tokenizer.tokenize([doc.text for _, doc in ranked]))
    rows = [(doc, rank, ids) for (rank, doc), ids in zip(ranked, tokens)]
    for fmt in self._formats:
      data = _encode_partition(fmt, rows, self._kept, self._tokenizer is not None)
      final = FileSystems.join(self._dir, partition_file_name(start, len(ranked), fmt))
      if FileSystems.exists(final):
        FileSystems.delete([final])
      write_bytes_atomic(final, data)
    if self._tokenizer is not None:
      self._tokens.inc(sum(len(ids) for ids in tokens))
    for (rank, doc), ids in zip(ranked, tokens):
      yield (doc, rank) if ids is None else (doc.with_scores(**{NUM_TOKENS: len(ids)}), rank)


def is_text_column(name: str) -> bool:
  """Whether a score name holds text, not a number."""
  # `<namespace>_error` holds why a model failed on a document (inference.error_field);
  # TEXT_SCORES are text too.
  return name.endswith("_error") or name in TEXT_SCORES


def scores_schema(score_names: Sequence[str], text_columns: Sequence[str] = ()) -> pa.Schema:
  """The columns of a Parquet scores/: id, source, one per name in `score_names` (float64;
  int64 for INT_SCORE_FEATURES; string for `*_error` and TEXT_SCORES), one string column
  per name in `text_columns` (--keep_fields), selected, rank, and other_scores: a JSON
  object of the scores of a row that have no column (null when there are none)."""
  names = list(score_names) + list(text_columns)
  texts = set(text_columns)
  clash = sorted(set(names) & set(_ROW_COLUMNS + (OTHER_SCORES,)))
  repeated = sorted({n for n in names if names.count(n) > 1})
  if clash or repeated:
    raise ValueError(f"score names must be unique and not a column of scores/: "
                     f"clash {clash}, repeated {repeated}")
  return pa.schema(
      [pa.field("id", pa.string(), nullable=False),
       pa.field("source", pa.string(), nullable=False)]
      + [pa.field(n, pa.string() if is_text_column(n) or n in texts
                  else pa.int64() if n in INT_SCORE_FEATURES else pa.float64())
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
  if name in INT_SCORE_FEATURES:
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
                text_columns: Sequence[str] = ()) -> Dict[str, Any]:
  """A score_record as a row of scores_schema (whose column names are `schema_names`). A
  missing score is null; a score without a column, or one its column cannot hold, goes
  into other_scores, so nothing is lost and no row fails the write. `text_columns` (the
  --keep_fields) hold kept_field_text, null when missing."""
  row = {name: record[name] for name in _ROW_COLUMNS}
  columns = [n for n in schema_names if n not in _ROW_COLUMNS and n != OTHER_SCORES]
  known = set(columns).union(_ROW_COLUMNS)
  other = {k: v for k, v in record.items() if k not in known}
  for name in columns:
    if name in text_columns:
      value = record.get(name)
      row[name] = None if value is None else kept_field_text(value)
      continue
    fits, row[name] = _cell(name, record.get(name))
    if not fits:
      other[name] = record[name]
  # default=str: a value JSON cannot hold is kept as its text rather than failing the row.
  row[OTHER_SCORES] = (safe_str(json.dumps(other, ensure_ascii=False, default=str))
                       if other else None)
  return row


class FinalizeOutput(beam.PTransform):
  """The last step of a run that nobody waits for (a Flex Template launch): once every
  PCollection in `after` is complete, writes metrics.json (from `metrics_fn`, called with
  the values of `side_inputs`) and moves the staged run into place (finalize_output)."""

  def __init__(self, output: str, staging: str, replaces: Sequence[str], after,
               metrics_fn, side_inputs=(), before_move=None):
    super().__init__()
    self._output, self._staging, self._replaces = output, staging, tuple(replaces)
    self._after, self._metrics_fn, self._side_inputs = list(after), metrics_fn, side_inputs
    # Called with (staging, metrics) before the move (e.g. to write report.html).
    self._before_move = before_move

  def expand(self, pbegin):
    done = [pc | f"Done{i}" >> beam.combiners.Count.Globally()
            for i, pc in enumerate(self._after)]
    output, staging, replaces, metrics_fn = (self._output, self._staging, self._replaces,
                                             self._metrics_fn)
    n_side, before_move = len(self._side_inputs), self._before_move

    def finalize(_, *values):
      metrics = metrics_fn(*values[:n_side])
      # metrics.json first: a report that fails (a full disk) never blocks it.
      write_json_atomic(FileSystems.join(staging, METRICS_FILE), metrics)
      if before_move is not None:
        before_move(staging, metrics)
      finalize_output(output, staging, None, replaces)
      # The launch handed the output's lock to the pipeline: give it back.
      output_lock.release_for_pipeline(output, staging.rstrip("/").rsplit("/", 1)[-1])

    return (pbegin | "Trigger" >> beam.Create([None])
            | "MoveIntoPlace" >> beam.Map(
                finalize, *self._side_inputs,
                *[beam.pvalue.AsSingleton(d) for d in done]))


class _ScoreRows(beam.DoFn):
  """scores/ rows of outcomes ((Document, rank) when `selected`, else Documents). With a
  `tap` (an object whose start() gives a per-bundle observer: the report's ReportTap),
  the observer sees every outcome here, and what it returns goes out under its tags."""

  def __init__(self, to_row: Callable, selected: bool, tap=None):
    self._to_row = to_row
    self._selected = selected
    self._tap = tap

  def start_bundle(self):
    self._observer = self._tap.start() if self._tap is not None else None

  def process(self, outcome):
    doc, rank = outcome if self._selected else (outcome, None)
    if self._observer is not None:
      out = self._observer.add(doc, rank)
      if out is not None:
        yield beam.pvalue.TaggedOutput(*out)
    yield self._to_row(doc, rank is not None, rank)

  def finish_bundle(self):
    if self._observer is not None:
      for tag, value in self._observer.finish():
        yield beam.pvalue.TaggedOutput(tag, value)


class WriteOutputs(beam.PTransform):
  """Writes selected/ (ranked TFRecords), scores/ and rejected/ under `output`.

  Input: a dict with `ranked` (from SelectTopK), `not_selected` Documents and
  `rejected` records. Returns a dict of PCollections that are complete when each output
  is: `selected` ((Document, rank) after its file is written), `scores_files`,
  `rejected_files` (the written file names); with a `tap` (see _ScoreRows), also `tap`:
  {tag: the tap's outputs}.

  scores/ is JSON Lines, or with `scores_format="parquet"` Parquet with a column per name
  in `score_names` (see scores_schema).
  """

  def __init__(self, output: str, scores_format: str = "jsonl",
               score_names: Sequence[str] = (), tokenizer: Optional[str] = None,
               append_eos: bool = False, kept_fields: Sequence[str] = (),
               output_formats: Sequence[str] = ("tfrecord",), tap=None):
    super().__init__()
    self._tap = tap
    if scores_format not in SCORES_FORMATS:
      raise ValueError(f"scores_format must be one of {SCORES_FORMATS}, "
                       f"not {scores_format!r}")
    self._output = output
    self._tokenizer, self._append_eos = tokenizer, append_eos
    self._kept = tuple(kept_fields)
    unknown = sorted(set(output_formats) - set(OUTPUT_FORMATS))
    if unknown or not output_formats:
      raise ValueError(f"output formats must be some of {OUTPUT_FORMATS}, not {unknown}")
    self._formats = tuple(output_formats)
    # Built here, so that bad score names fail when the pipeline is built, not on a worker.
    self._schema = (scores_schema(score_names, kept_fields) if scores_format == "parquet"
                    else None)

  def expand(self, pcolls):
    out = self._output
    selected_dir = FileSystems.join(out, SELECTED_DIR)
    selected = pcolls["ranked"] | "WriteRankedTFRecords" >> beam.ParDo(
        _WritePartition(selected_dir, self._tokenizer, self._append_eos, self._formats,
                        self._kept))
    spec = features_spec(self._tokenizer is not None, self._kept)
    schema = (pcolls["ranked"].pipeline | "SchemaFile" >> beam.Create([spec])
              | "WriteSchema" >> beam.Map(
                  lambda s: write_json_atomic(FileSystems.join(selected_dir, FEATURES_FILE), s)))
    to_row = score_row if self._schema is None else score_record
    tags = self._tap.TAGS if self._tap is not None else ()
    parts = [pcoll | f"{label}Rows" >> beam.ParDo(
                 _ScoreRows(to_row, label == "Selected", self._tap)).with_outputs(
                     *tags, main="rows")
             for label, pcoll in (("Selected", selected), ("Other", pcolls["not_selected"]))]
    rows = [p.rows for p in parts] | "FlattenScores" >> beam.Flatten()
    tapped = {tag: [p[tag] for p in parts] | f"Flatten_{tag}" >> beam.Flatten()
              for tag in tags}
    prefix = FileSystems.join(out, SCORES_DIR, "part")
    if self._schema is None:
      scores = rows | "WriteScores" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl")
    else:
      # (Not `schema`: that is the features.json step, which the caller waits for.)
      table_schema = self._schema
      # A file sink (temp dir, then finalisation), so a retried bundle leaves no duplicate
      # rows. Snappy: pyarrow's own default, and every Parquet reader has it.
      scores = (rows
                | "ParquetScoreRows" >> beam.Map(parquet_row, table_schema.names, self._kept)
                | "WriteScoresParquet" >> beam.io.WriteToParquet(
                    prefix, schema=table_schema, codec="snappy", file_name_suffix=".parquet"))
    rejected = (pcolls["rejected"] | "RejectedJson" >> beam.Map(Rejected.to_json)
                | "WriteRejected" >> beam.io.WriteToText(
                    FileSystems.join(out, REJECTED_DIR, "part"), file_name_suffix=".jsonl"))
    # What finishes when each output is complete (for a step that must run after all).
    out = {"selected": selected, "scores_files": scores, "rejected_files": rejected,
           "schema_file": schema}
    if self._tap is not None:
      out["tap"] = tapped
    return out


# --- Staging and committing a run: transforms/output_commit.py ---------------------------
# Everything a run writes at the top of --output; a successful rerun replaces these.
OUTPUT_NAMES = (SELECTED_DIR, SCORES_DIR, REJECTED_DIR, METRICS_FILE, SKETCH_FILE,
                HEAD_FILE, HEAD_FIT_FILE, CLUSTERS_FILE, CLUSTER_STATS_FILE, REPORT_FILE,
                REPORT_DATA_FILE)


def finalize_output(output: str, staging: str, metrics: Optional[Dict[str, Any]],
                    replaces: Sequence[str], step=None) -> None:
  """Commits a finished run (output_commit.commit): all of it or, on failure, none."""
  output_commit.commit(output, staging, metrics, replaces, step=step)
