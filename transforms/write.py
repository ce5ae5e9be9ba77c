"""Writing outputs: ranked selected/ partitions, scores/ (JSON Lines or Parquet) and
rejected/ (JSON Lines), as Beam steps; the FinalizeOutput step of launches that do not
wait. The names of the outputs are output_layout's, the record formats output_formats',
the staging and the commit output_commit's (all re-exported here for the modules that
use them through this one).

`WriteToTFRecord` does not keep record order, so each ranked partition is written as one
file by a DoFn, named by its rank range: file order then record order is rank order.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems

from transforms import output_commit, output_files, output_lock, typed_parquet
from transforms.metrics import SELECTED_TOKENS, counter, stage_clock
from transforms.output_formats import (  # noqa: F401  (re-exported)
    NUM_TOKENS, OTHER_SCORES, OUTPUT_FORMATS, SCORES_FORMATS, SELECTED_FORMATS, TARGETS,
    encode_partition, features_spec, int_score, is_text_column, kept_field_text,
    parquet_row, partition_file_name, scores_schema, selected_row, selected_schema,
    tf_example)
from transforms.output_layout import (  # noqa: F401  (re-exported)
    CLUSTER_STATS_FILE, CLUSTERS_FILE, FEATURES_FILE, HEAD_FILE, HEAD_FIT_FILE, LOCK_FILE,
    METRICS_FILE, OUTPUT_NAMES, REJECTED_DIR, REPORT_DATA_FILE, REPORT_FILE, SCORES_DIR,
    SELECTED_DIR, SKETCH_FILE, STAGING_ROOT, SUCCESS_FILE, selected_dirs)
from transforms.records import Document, Rejected, score_record, score_row

new_run_id = output_commit.new_run_id
staging_dir = output_commit.staging_dir
list_files = output_files.list_files
write_bytes_atomic = output_files.write_bytes_atomic
write_json_atomic = output_files.write_json_atomic
delete_tree = output_files.delete_tree
discard_staging = output_commit.discard_staging


class _WritePartition(beam.DoFn):
  """Writes one ranked partition; emits (Document, rank) for the scores output (with
  num_tokens among its scores when tokenizing).

  Written to a temporary name and renamed, so a retried bundle never leaves a partial
  file under the final name.
  """

  def __init__(self, directories: Dict[str, str], tokenizer: Optional[str] = None,
               append_eos: bool = False, kept_fields: Sequence[str] = ()):
    # {format: its folder}, one folder per format (output_layout.selected_dirs).
    self._dirs = dict(directories)
    self._tokenizer_path = tokenizer
    self._append_eos = append_eos
    self._kept = tuple(kept_fields)

  def setup(self):
    self._tokenizer = None
    self._tokens = counter(SELECTED_TOKENS)
    if self._tokenizer_path:
      from transforms.tokenize import load_tokenizer
      self._tokenizer = load_tokenizer(self._tokenizer_path, self._append_eos)

  def process(self, element: Tuple[int, List[Tuple[int, Document]]], kinds=None):
    # kinds: the kept fields' kinds over the run (typed_parquet.KeptKinds), a side input.
    stage_clock("write_selected")
    start, ranked = element
    tokens = ([None] * len(ranked) if self._tokenizer is None
              else self._tokenizer.tokenize([doc.text for _, doc in ranked]))
    rows = [(doc, rank, ids) for (rank, doc), ids in zip(ranked, tokens)]
    for fmt, directory in self._dirs.items():
      data = encode_partition(fmt, rows, self._kept if kinds is None else kinds,
                              self._tokenizer is not None)
      final = FileSystems.join(directory, partition_file_name(start, len(ranked), fmt))
      if FileSystems.exists(final):
        FileSystems.delete([final])
      write_bytes_atomic(final, data)
    if self._tokenizer is not None:
      self._tokens.inc(sum(len(ids) for ids in tokens))
    for (rank, doc), ids in zip(ranked, tokens):
      yield (doc, rank) if ids is None else (doc.with_scores(**{NUM_TOKENS: len(ids)}), rank)


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
  """Writes selected/ (ranked TFRecords; each further output format in its own folder,
  output_layout.selected_dirs), features.json, scores/ and rejected/ under `output`.

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
    self._score_names = tuple(score_names)

  def expand(self, pcolls):
    out = self._output
    dirs = {fmt: FileSystems.join(out, name)
            for fmt, name in selected_dirs(self._formats).items()}
    # Kept fields keep their types: each field's kind over the whole run (kept_types).
    kinds = (beam.pvalue.AsSingleton(pcolls | "KeptKinds" >> typed_parquet.KeptKinds(
        self._kept)) if self._kept else None)
    side = (kinds,) if kinds is not None else ()
    selected = pcolls["ranked"] | "WriteRankedTFRecords" >> beam.ParDo(
        _WritePartition(dirs, self._tokenizer, self._append_eos, self._kept), *side)
    tokenized, kept = self._tokenizer is not None, self._kept
    # Beside the folders, not in one (output_layout.FEATURES_FILE).
    features = FileSystems.join(out, FEATURES_FILE)
    schema = (pcolls["ranked"].pipeline | "SchemaFile" >> beam.Create([None])
              | "WriteSchema" >> beam.Map(
                  lambda _, k=None: write_json_atomic(
                      features, features_spec(tokenized, kept if k is None else k)), *side))
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
      if kinds is None:
        scores = (rows
                  | "ParquetScoreRows" >> beam.Map(parquet_row, table_schema.names)
                  | "WriteScoresParquet" >> beam.io.WriteToParquet(
                      prefix, schema=table_schema, codec="snappy",
                      file_name_suffix=".parquet"))
      else:  # the kept columns' types are known once the run has seen every record
        scores = (rows
                  | "ParquetScoreRows" >> beam.Map(parquet_row, table_schema.names, kinds)
                  | "WriteScoresParquet" >> typed_parquet.WriteRowsParquet(
                      prefix, functools.partial(scores_schema, self._score_names),
                      kinds, table_schema))
    rejected = (pcolls["rejected"] | "RejectedJson" >> beam.Map(Rejected.to_json)
                | "WriteRejected" >> beam.io.WriteToText(
                    FileSystems.join(out, REJECTED_DIR, "part"), file_name_suffix=".jsonl"))
    # What finishes when each output is complete (for a step that must run after all).
    out = {"selected": selected, "scores_files": scores, "rejected_files": rejected,
           "schema_file": schema}
    if self._tap is not None:
      out["tap"] = tapped
    return out


def finalize_output(output: str, staging: str, metrics: Optional[Dict[str, Any]],
                    replaces: Sequence[str], step=None) -> None:
  """Commits a finished run (output_commit.commit): all of it or, on failure, none."""
  output_commit.commit(output, staging, metrics, replaces, step=step)
