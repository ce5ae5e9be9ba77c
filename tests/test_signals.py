"""The registry of signals (transforms/signals.py): a new signal is one entry plus its
function, and reaches scores/, the Parquet schema, features.json, the selected records,
the report and the score cache."""
import glob
import json
import os

import pyarrow.parquet as pq
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline

from beam_pipelines import select_data
from beam_pipelines.graph import score_names
from transforms import signals

# The whole of adding a signal: this entry and its function.
TEXT_LENGTH = signals.Signal(
    "text_length", per_document=lambda doc: {"text_length": float(len(doc.text))},
    description="the document's length in characters (a test signal)",
    writes=(signals.Column("text_length", signals.FLOAT,
                           "the document's length in characters", higher_is_better=True),))


@pytest.fixture
def text_length():
  signals.register(TEXT_LENGTH)
  yield TEXT_LENGTH
  signals.unregister(TEXT_LENGTH.name)


def _docs(path, n=12):
  texts = [f"Document {i}: " + "about rivers and their deltas. " * (1 + i % 5)
           for i in range(n)]
  with open(path, "w") as f:
    for i, text in enumerate(texts):
      f.write(json.dumps({"id": f"d{i:02d}", "text": text}) + "\n")
  return {f"d{i:02d}": text for i, text in enumerate(texts)}


def test_registry_orders_signals_after_what_they_read():
  names = [s.name for s in signals.in_order(["density", "ask_llm", "quality_head"])]
  assert names == ["ask_llm", "embeddings", "quality_head", "density"]
  with pytest.raises(ValueError, match="unknown signal"):
    signals.in_order(["nope"])
  with pytest.raises(ValueError, match="already written by"):
    signals.register(signals.Signal("again", per_document=len, writes=(
        signals.Column("p_yes"),)))


def test_a_new_signal_reaches_every_output_and_the_cache(tmp_path, text_length):
  texts = _docs(tmp_path / "docs.jsonl")
  out = tmp_path / "out"
  argv = [f"--input={tmp_path}/docs.jsonl", f"--output={out}", "--id_field=id",
          "--sampler=random", "--keep_count=4", "--signals=text_length",
          "--scores_format=parquet", "--output_format=parquet,tfrecord"]
  metrics = select_data.run(argv, test_pipeline=TestPipeline(runner="FnApiRunner"))
  # scores/ (Parquet): a typed column with the function's value for every document.
  table = pq.read_table(glob.glob(str(out / "scores" / "*.parquet")))
  assert table.schema.field("text_length").type == "double"
  rows = table.to_pylist()
  assert len(rows) == 12 and all(r["text_length"] == len(texts[r["id"]]) for r in rows)
  # selected/: features.json, the Parquet and the TFRecord records.
  spec = json.load(open(out / "features.json"))
  assert spec["text_length"]["dtype"] == "float32"
  selected = pq.read_table(glob.glob(str(out / "selected" / "*.parquet"))).to_pylist()
  assert [r["text_length"] for r in selected] == [len(texts[r["id"]]) for r in selected]
  records = tf.data.TFRecordDataset(sorted(glob.glob(str(out / "selected_tfrecord" /
                                                             "*.tfrecord"))))
  for raw in records:
    example = tf.train.Example.FromString(raw.numpy())
    doc_id = example.features.feature["id"].bytes_list.value[0].decode()
    assert example.features.feature["text_length"].float_list.value[0] == len(texts[doc_id])
  # The report summarises it, with its description.
  report = json.load(open(out / "report.json"))
  assert "text_length" in report["score_names"] and "text_length" in report["scores"]
  assert "the document&#x27;s length in characters" in (out / "report.html").read_text()
  # The cache: computed once, then taken from the cache.
  assert metrics["counts"]["inferred"]["text_length"] == 12
  assert glob.glob(str(out / "cache" / "text_length" / "*" / "part-*.parquet"))
  again = select_data.run(argv + ["--overwrite"],
                          test_pipeline=TestPipeline(runner="FnApiRunner"))
  assert again["counts"]["from_cache"]["text_length"] == 12
  assert again["counts"]["inferred"]["text_length"] == 0


def test_score_names_come_from_the_registry(tmp_path, text_length):
  from beam_pipelines.options import JobConfig, parse_args
  args, _ = parse_args([f"--input={tmp_path}/x.jsonl", f"--output={tmp_path}/o",
                        "--sampler=density", "--signals=text_length", "--dedup=none"])
  names = score_names(JobConfig.from_args(args))
  # (every job that embeds with the bundled model also gives each document its topic)
  assert names == ["embeddings_error", "topic", "topic_name", "topic_confidence", "density",
                   "sampling_weight", "text_length"]
