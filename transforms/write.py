"""Writing outputs: ranked TFRecords, scores and rejected JSON Lines.

`WriteToTFRecord` does not keep record order, so each ranked partition is written as one
file by a DoFn, named by its rank range: file order then record order is rank order.
"""
from __future__ import annotations

import uuid
from typing import List, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil

from transforms.metrics import stage_clock
from transforms.records import Document, Rejected, score_row

SELECTED_DIR = "selected"
SCORES_DIR = "scores"
REJECTED_DIR = "rejected"


def tf_example(doc: Document, rank: int) -> bytes:
  """A tf.train.Example: id, text (bytes), rank (int64), and every score (float)."""
  import tensorflow as tf
  feature = {
      "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[doc.id.encode("utf-8")])),
      "text": tf.train.Feature(bytes_list=tf.train.BytesList(
          value=[doc.text.encode("utf-8")])),
      "rank": tf.train.Feature(int64_list=tf.train.Int64List(value=[rank])),
  }
  for name, value in sorted(doc.scores.items()):
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      feature[name] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(value)]))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def partition_file_name(start: int, count: int) -> str:
  # Zero-padded so that lexicographic file order is rank order.
  return f"ranks-{start:012d}-{start + count - 1:012d}.tfrecord"


class _WritePartition(beam.DoFn):
  """Writes one ranked partition; emits (Document, rank) for the scores output.

  Written to a temporary name and renamed, so a retried bundle never leaves a partial
  file under the final name.
  """

  def __init__(self, directory: str):
    self._dir = directory

  def process(self, element: Tuple[int, List[Tuple[int, Document]]]):
    stage_clock("write_selected")
    start, ranked = element
    final = FileSystems.join(self._dir, partition_file_name(start, len(ranked)))
    tmp = f"{final}.tmp-{uuid.uuid4().hex}"
    with FileSystems.create(tmp) as f:
      for rank, doc in ranked:
        _TFRecordUtil.write_record(f, tf_example(doc, rank))
    if FileSystems.exists(final):
      FileSystems.delete([final])
    FileSystems.rename([tmp], [final])
    for rank, doc in ranked:
      yield doc, rank


class WriteOutputs(beam.PTransform):
  """Writes selected/ (ranked TFRecords), scores/ and rejected/ under `output`.

  Input: a dict with `ranked` (from SelectTopK), `not_selected` Documents and
  `rejected` records.
  """

  def __init__(self, output: str):
    super().__init__()
    self._output = output

  def expand(self, pcolls):
    out = self._output
    selected = pcolls["ranked"] | "WriteRankedTFRecords" >> beam.ParDo(
        _WritePartition(FileSystems.join(out, SELECTED_DIR)))
    rows = (
        (selected | "SelectedRows" >> beam.MapTuple(lambda d, r: score_row(d, True, r)),
         pcolls["not_selected"] | "OtherRows" >> beam.Map(lambda d: score_row(d, False, None)))
        | "FlattenScores" >> beam.Flatten())
    rows | "WriteScores" >> beam.io.WriteToText(
        FileSystems.join(out, SCORES_DIR, "part"), file_name_suffix=".jsonl")
    pcolls["rejected"] | "RejectedJson" >> beam.Map(Rejected.to_json) \
        | "WriteRejected" >> beam.io.WriteToText(
            FileSystems.join(out, REJECTED_DIR, "part"), file_name_suffix=".jsonl")
    return selected
