"""Writing outputs: ranked TFRecords, scores and rejected JSON Lines.

`WriteToTFRecord` does not keep record order, so each ranked partition is written as one
file by a DoFn, named by its rank range: file order then record order is rank order.
"""
from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any, Dict, List, Sequence, Tuple

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil

from transforms.metrics import stage_clock
from transforms.records import Document, Rejected, score_row

SELECTED_DIR = "selected"
SCORES_DIR = "scores"
REJECTED_DIR = "rejected"
SKETCH_FILE = "sketch.npz"
HEAD_FILE = "quality_head.npz"
HEAD_FIT_FILE = "quality_head_fit.json"


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


class FinalizeOutput(beam.PTransform):
  """The last step of a run that nobody waits for (a Flex Template launch): once every
  PCollection in `after` is complete, writes metrics.json (from `metrics_fn`, called with
  the values of `side_inputs`) and moves the staged run into place (finalize_output)."""

  def __init__(self, output: str, staging: str, replaces: Sequence[str], after,
               metrics_fn, side_inputs=()):
    super().__init__()
    self._output, self._staging, self._replaces = output, staging, tuple(replaces)
    self._after, self._metrics_fn, self._side_inputs = list(after), metrics_fn, side_inputs

  def expand(self, pbegin):
    done = [pc | f"Done{i}" >> beam.combiners.Count.Globally()
            for i, pc in enumerate(self._after)]
    output, staging, replaces, metrics_fn = (self._output, self._staging, self._replaces,
                                             self._metrics_fn)
    n_side = len(self._side_inputs)

    def finalize(_, *values):
      finalize_output(output, staging, metrics_fn(*values[:n_side]), replaces)

    return (pbegin | "Trigger" >> beam.Create([None])
            | "MoveIntoPlace" >> beam.Map(
                finalize, *self._side_inputs,
                *[beam.pvalue.AsSingleton(d) for d in done]))


class WriteOutputs(beam.PTransform):
  """Writes selected/ (ranked TFRecords), scores/ and rejected/ under `output`.

  Input: a dict with `ranked` (from SelectTopK), `not_selected` Documents and
  `rejected` records. Returns a dict of PCollections that are complete when each output
  is: `selected` ((Document, rank) after its file is written), `scores_files`,
  `rejected_files` (the written file names).
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
    scores = rows | "WriteScores" >> beam.io.WriteToText(
        FileSystems.join(out, SCORES_DIR, "part"), file_name_suffix=".jsonl")
    rejected = (pcolls["rejected"] | "RejectedJson" >> beam.Map(Rejected.to_json)
                | "WriteRejected" >> beam.io.WriteToText(
                    FileSystems.join(out, REJECTED_DIR, "part"), file_name_suffix=".jsonl"))
    # What finishes when each output is complete (for a step that must run after all).
    return {"selected": selected, "scores_files": scores, "rejected_files": rejected}


# --- Staging and finalising a run ---------------------------------------------------------
# A run writes everything under OUTPUT/_temporary/RUN_ID/ and moves it into OUTPUT only
# once the pipeline has succeeded, so a failed or killed rerun never destroys the results
# of an earlier one, and readers never see a mix of two runs. `_SUCCESS` (the Hadoop /
# Spark convention) is written last: a directory without it holds no finished run.
STAGING_ROOT = "_temporary"
SUCCESS_FILE = "_SUCCESS"
METRICS_FILE = "metrics.json"
# Everything a run writes at the top of --output; a successful rerun replaces these.
OUTPUT_NAMES = (SELECTED_DIR, SCORES_DIR, REJECTED_DIR, METRICS_FILE, SKETCH_FILE,
                HEAD_FILE, HEAD_FIT_FILE)
_MANIFEST = "_manifest.json"


def new_run_id() -> str:
  return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def staging_dir(output: str, run_id: str) -> str:
  return FileSystems.join(output, STAGING_ROOT, run_id)


def list_files(directory: str) -> List[str]:
  """Every file under `directory` (recursively); [] when it does not exist."""
  try:
    found = FileSystems.match([FileSystems.join(directory, "**")])[0].metadata_list
  except Exception:  # A missing local directory raises on some filesystems.
    return []
  return sorted(m.path for m in found if not m.path.endswith("/"))


def _relative(path: str, directory: str) -> str:
  return path[len(directory.rstrip("/")) + 1:]


def write_bytes_atomic(path: str, data: bytes) -> None:
  """Writes under a temporary name, then renames: readers see the old file or the new."""
  tmp = f"{path}.tmp-{uuid.uuid4().hex}"
  with FileSystems.create(tmp) as f:
    f.write(data)
  FileSystems.rename([tmp], [path])


def write_json_atomic(path: str, obj) -> None:
  write_bytes_atomic(path, json.dumps(obj, indent=2, sort_keys=True).encode("utf-8"))


def delete_tree(directory: str) -> None:
  """Removes a directory and everything under it (local or object store); best effort."""
  files = list_files(directory)
  if files:
    FileSystems.delete(files)
  if FileSystems.exists(directory):
    try:
      FileSystems.delete([directory])
    except Exception:  # Object stores have no directories to remove.
      pass


def _move(src: str, dst: str) -> None:
  if "://" not in dst:
    os.makedirs(os.path.dirname(dst), exist_ok=True)  # A local rename needs the parent.
  FileSystems.rename([src], [dst])


def finalize_output(output: str, staging: str, metrics: Dict[str, Any],
                    replaces: Sequence[str]) -> None:
  """Moves a finished run from `staging` into `output`: the earlier run's outputs (the
  top-level names in `replaces`) that the new run does not write are removed, the new
  files are moved in with metrics.json last, then `_SUCCESS` is written and the staging
  directory removed. Safe to call again after a crash part-way (a retried bundle): the
  list of files to move is fixed in a manifest on the first call."""
  write_json_atomic(FileSystems.join(staging, METRICS_FILE), metrics)
  manifest_path = FileSystems.join(staging, _MANIFEST)
  if FileSystems.exists(manifest_path):
    with FileSystems.open(manifest_path) as f:
      moves = json.loads(f.read().decode("utf-8"))
  else:
    moves = [_relative(p, staging) for p in list_files(staging)
             if not p.endswith(_MANIFEST)]
    # metrics.json last: once it is in place, every other output is.
    moves.sort(key=lambda rel: (rel == METRICS_FILE, rel))
    write_json_atomic(manifest_path, moves)
  success = FileSystems.join(output, SUCCESS_FILE)
  if FileSystems.exists(success):
    FileSystems.delete([success])  # From here on the directory is not a finished run.
  keep = set(moves)
  stale = []
  for path in list_files(output):
    rel = _relative(path, output)
    if rel.split("/", 1)[0] in replaces and rel not in keep:
      stale.append(path)
  if stale:
    FileSystems.delete(stale)
  for rel in moves:
    src = FileSystems.join(staging, rel)
    if FileSystems.exists(src):
      _move(src, FileSystems.join(output, rel))
  write_json_atomic(success, {"run_id": _relative(staging, FileSystems.join(
      output, STAGING_ROOT)), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                              "files": len(moves)})
  discard_staging(output, staging)


def discard_staging(output: str, staging: str) -> None:
  """Removes a run's staging directory, and the staging root once no run uses it."""
  delete_tree(staging)
  root = FileSystems.join(output, STAGING_ROOT)
  if not list_files(root):
    delete_tree(root)
