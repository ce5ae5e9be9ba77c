"""Each --output_format's folder opens as a dataset with the readers users have: pandas,
pyarrow, Hugging Face `datasets` and a tf.data glob. A folder holds one format's data
files and nothing else (features.json lies beside the folders), rows in rank order."""
import glob
import json
import os

import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from beam_pipelines import select_data
from transforms import output_layout, write

_N, _KEEP = 24, 10


@pytest.fixture(scope="module")
def out(tmp_path_factory):
  """One run writing every format; parquet first, so it is the one in selected/."""
  d = tmp_path_factory.mktemp("folders")
  rng = np.random.default_rng(7)
  words = "river stone cloud light tree wind water energy market city school".split()
  with open(d / "d.jsonl", "w") as f:
    for i in range(_N):
      f.write(json.dumps({"id": f"d{i:03d}", "text": " ".join(rng.choice(words, 4 + i))})
              + "\n")
  out = str(d / "out")
  select_data.run([f"--input={d}/d.jsonl", f"--output={out}", "--id_field=id",
                   "--sampler=random", f"--keep_count={_KEEP}", "--docs_per_file=4",
                   "--cache=none", "--report=false", "--output_format=parquet,jsonl,tfrecord"],
                  test_pipeline=TestPipeline(runner="FnApiRunner"))
  return out


def test_each_format_has_a_folder_of_its_own_data_files_only(out):
  assert output_layout.selected_dirs(["parquet", "jsonl", "tfrecord"]) == {
      "parquet": "selected", "jsonl": "selected_jsonl", "tfrecord": "selected_tfrecord"}
  for name, suffix in (("selected", ".parquet"), ("selected_jsonl", ".jsonl.gz"),
                       ("selected_tfrecord", ".tfrecord")):
    files = os.listdir(os.path.join(out, name))
    assert len(files) == 3 and all(f.endswith(suffix) for f in files), (name, files)
  spec = json.load(open(os.path.join(out, output_layout.FEATURES_FILE)))
  assert spec == write.features_spec(tokenized=False)
  assert os.path.exists(os.path.join(out, "_SUCCESS"))


def test_every_format_folder_is_replaced_by_a_rerun():
  names = set(output_layout.OUTPUT_NAMES)
  assert output_layout.FEATURES_FILE in names
  for fmt in write.OUTPUT_FORMATS:
    assert output_layout.selected_dir_of(fmt) in names


def _ranks(rows):
  return [int(r) for r in rows]


def test_parquet_folder_opens_with_pandas_pyarrow_and_datasets(out, tmp_path):
  import datasets
  import pandas as pd
  import pyarrow.parquet as pq
  folder = os.path.join(out, "selected")
  frame = pd.read_parquet(folder)
  assert _ranks(frame["rank"]) == list(range(_KEEP))
  table = pq.read_table(folder)
  assert table.num_rows == _KEEP and table.schema.field("rank").type == "int64"
  assert _ranks(table.column("rank").to_pylist()) == list(range(_KEEP))
  ds = datasets.load_dataset("parquet", data_dir=folder, split="train",
                             cache_dir=str(tmp_path / "hf"))
  assert _ranks(ds["rank"]) == list(range(_KEEP))
  assert set(ds.column_names) == set(write.features_spec(tokenized=False))


def test_jsonl_folder_opens_with_pandas_and_datasets(out, tmp_path):
  import datasets
  import pandas as pd
  folder = os.path.join(out, "selected_jsonl")
  frame = pd.concat([pd.read_json(f, lines=True)
                     for f in sorted(glob.glob(os.path.join(folder, "*.jsonl.gz")))])
  assert _ranks(frame["rank"]) == list(range(_KEEP))
  ds = datasets.load_dataset("json", data_dir=folder, split="train",
                             cache_dir=str(tmp_path / "hf"))
  assert _ranks(ds["rank"]) == list(range(_KEEP))
  parquet = pd.read_parquet(os.path.join(out, "selected"))
  assert list(frame["id"]) == list(parquet["id"]) == list(ds["id"])


def test_tfrecord_folder_opens_as_a_tf_data_glob(out):
  import tensorflow as tf
  pattern = os.path.join(out, "selected_tfrecord", "*.tfrecord")
  spec = {"id": tf.io.FixedLenFeature([], tf.string),
          "rank": tf.io.FixedLenFeature([], tf.int64)}
  files = tf.data.Dataset.list_files(pattern, shuffle=False)  # sorted: rank order
  rows = list(tf.data.TFRecordDataset(files).map(
      lambda r: tf.io.parse_single_example(r, spec)))
  assert _ranks(r["rank"] for r in rows) == list(range(_KEEP))
  import pandas as pd
  ids = list(pd.read_parquet(os.path.join(out, "selected"))["id"])
  assert [r["id"].numpy().decode() for r in rows] == ids
