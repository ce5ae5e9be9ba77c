"""--keep_fields keep their types (transforms/kept_types.py): ints, floats, bools, strings
and nested values come back typed from Parquet (selected/ and scores/), JSON Lines and
TFRecord, read with pandas, pyarrow, Hugging Face datasets and tf.data; a field whose
types vary across records is JSON text everywhere, and no writer fails on it."""
import glob
import gzip
import json
import os

import pyarrow as pa
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from hypothesis import given, settings, strategies as st

from beam_pipelines import select_data
from transforms import kept_types
from transforms.output_layout import FEATURES_FILE

_N, _KEEP = 12, 7
_KEPT = "n,x,flag,url,meta,mixed,tags,big,meta.lang"


def _record(i):
  rec = {"id": f"d{i:02d}", "text": f"document {i} " + "about rivers " * (i + 1),
         "n": i, "x": i if i % 2 else i + 0.5, "flag": i % 3 == 0,
         "meta": {"lang": "en" if i % 2 else "fr", "score": i},
         "mixed": i if i < 6 else f"s{i}", "tags": ["a", f"t{i}"],
         "big": 2 ** 70 if i == 4 else 1}
  if i != 3:
    rec["url"] = f"https://x/{i}"
  if i == 5:
    rec["meta"]["extra"] = [1, 2]
  return rec


_EXPECTED_KINDS = {"n": "int", "x": "float", "flag": "bool", "url": "string",
                   "meta": "nested", "mixed": "json", "tags": "nested", "big": "json",
                   "meta.lang": "string"}


@pytest.fixture(scope="module")
def out(tmp_path_factory):
  d = tmp_path_factory.mktemp("typed")
  with open(d / "in.jsonl", "w") as f:
    for i in range(_N):
      f.write(json.dumps(_record(i)) + "\n")
  out = str(d / "out")
  select_data.run([f"--input={d}/in.jsonl", f"--output={out}", "--id_field=id",
                   "--sampler=random", f"--keep_count={_KEEP}", "--docs_per_file=3",
                   "--cache=none", "--report=false", f"--keep_fields={_KEPT}",
                   "--scores_format=parquet", "--output_format=parquet,jsonl,tfrecord"],
                  test_pipeline=TestPipeline(runner="FnApiRunner"))
  return out


def _expected(i, name):
  """A kept value as the typed outputs hold it."""
  rec = _record(i)
  value = rec.get(name) if name != "meta.lang" else rec["meta"]["lang"]
  if name == "x":
    return float(value)
  if name in ("mixed", "big"):
    return json.dumps(value)
  if name == "meta":
    return {"lang": value["lang"], "score": value["score"], "extra": value.get("extra")}
  return value


def _index(doc_id):
  return int(doc_id[1:])


def test_features_json_says_each_kept_fields_kind(out):
  spec = json.load(open(os.path.join(out, FEATURES_FILE)))
  assert {n: spec[n]["kind"] for n in _EXPECTED_KINDS} == _EXPECTED_KINDS
  assert spec["n"]["dtype"] == "int64" and spec["x"]["dtype"] == "float32"
  assert spec["meta"]["parquet"].startswith("struct<")


def test_parquet_selected_and_scores_keep_types(out, tmp_path):
  import datasets
  import pandas as pd
  import pyarrow.parquet as pq
  table = pq.read_table(os.path.join(out, "selected"))
  types = {n: table.schema.field(n).type for n in _EXPECTED_KINDS}
  assert types["n"] == pa.int64() and types["x"] == pa.float64()
  assert types["flag"] == pa.bool_() and types["url"] == pa.string()
  assert pa.types.is_struct(types["meta"]) and types["tags"] == pa.list_(pa.string())
  assert types["mixed"] == types["big"] == pa.string()
  rows = table.to_pylist()
  assert len(rows) == _KEEP
  for row in rows:
    for name in _EXPECTED_KINDS:
      assert row[name] == _expected(_index(row["id"]), name), (row["id"], name)
  frame = pd.read_parquet(os.path.join(out, "selected"))
  assert frame["n"].dtype == "int64" and frame["flag"].dtype == bool
  ds = datasets.load_dataset("parquet", data_dir=os.path.join(out, "selected"),
                             split="train", cache_dir=str(tmp_path / "hf"))
  assert ds.features["n"].dtype == "int64" and ds.features["x"].dtype == "float64"
  assert ds[0]["meta"]["lang"] in ("en", "fr")
  scores = pq.read_table(os.path.join(out, "scores")).to_pylist()
  assert len(scores) == _N
  schema = pq.read_schema(sorted(glob.glob(os.path.join(out, "scores", "*.parquet")))[0])
  assert schema.field("n").type == pa.int64() and pa.types.is_struct(schema.field("meta").type)
  for row in scores:
    for name in _EXPECTED_KINDS:
      assert row[name] == _expected(_index(row["id"]), name), (row["id"], name)


def test_jsonl_holds_the_same_values_and_opens_with_datasets(out, tmp_path):
  import datasets
  files = sorted(glob.glob(os.path.join(out, "selected_jsonl", "*.jsonl.gz")))
  rows = [json.loads(line) for f in files for line in gzip.open(f, "rt")]
  for row in rows:
    i = _index(row["id"])
    for name in _EXPECTED_KINDS:
      want = _expected(i, name)
      if name == "meta":  # JSON Lines hold the object as it was read
        want = _record(i)["meta"]
      assert row[name] == want and type(row[name]) is type(want), (row["id"], name)
  ds = datasets.load_dataset("json", data_dir=os.path.join(out, "selected_jsonl"),
                             split="train", cache_dir=str(tmp_path / "hf"))
  assert ds.num_rows == _KEEP and ds.features["n"].dtype == "int64"


def test_tfrecord_features_are_typed_as_features_json_says(out):
  import tensorflow as tf
  spec = json.load(open(os.path.join(out, FEATURES_FILE)))
  dtypes = {"int64": tf.int64, "float32": tf.float32, "string": tf.string}
  parse = {n: tf.io.FixedLenFeature([], dtypes[spec[n]["dtype"]]) for n in _EXPECTED_KINDS}
  parse["id"] = tf.io.FixedLenFeature([], tf.string)
  files = sorted(glob.glob(os.path.join(out, "selected_tfrecord", "*.tfrecord")))
  rows = list(tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(r,
                                                                                    parse)))
  assert len(rows) == _KEEP
  for row in rows:
    i = _index(row["id"].numpy().decode())
    rec = _record(i)
    assert int(row["n"]) == rec["n"] and float(row["x"]) == float(rec["x"])
    assert int(row["flag"]) == int(rec["flag"])
    assert row["url"].numpy().decode() == rec.get("url", "")
    assert json.loads(row["meta"].numpy()) == rec["meta"]
    assert row["mixed"].numpy().decode() == json.dumps(rec["mixed"])


_scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=3))
_value = st.recursive(_scalar, lambda kids: st.lists(kids, max_size=3)
                      | st.dictionaries(st.text("ab", max_size=2), kids, max_size=3),
                      max_leaves=6)


@settings(deadline=None)
@given(st.lists(_value, min_size=1, max_size=6))
def test_any_mix_of_values_unifies_to_a_kind_every_value_is_written_in(values):
  # Unified in any order and grouping, the kind is the same, and each format holds every
  # value under it: no writer fails on a mix.
  states = [kept_types.state_of(v) for v in values]
  kind = kept_types.final_kinds({"f": _fold(states)}, ["f"])["f"]
  assert kind == kept_types.final_kinds({"f": _fold(states[::-1])}, ["f"])["f"]
  cells = [kept_types.parquet_value(kind, v) for v in values]
  column = pa.array(cells, type=kept_types.parquet_type(kind))
  assert column.to_pylist() == cells or kept_types.kind_name(kind) == "nested"
  for v in values:
    lst, vals = kept_types.tf_feature_value(kind, v)
    assert lst in ("int64_list", "float_list", "bytes_list") and len(vals) == 1


def _fold(states):
  out = None
  for s in states:
    out = kept_types.merge(out, s)
  return out
