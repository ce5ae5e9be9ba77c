"""The whole job on the FnApiRunner with a tiny model: accounting, ranking, outputs."""
import glob
import gzip
import json
import os

import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline

from beam_pipelines import select_data
from transforms import records

FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "text": tf.io.FixedLenFeature([], tf.string),
    "rank": tf.io.FixedLenFeature([], tf.int64),
    "ask_llm_score": tf.io.FixedLenFeature([], tf.float32),
}

GOOD = [f"Document number {i} explains how {w} works in plain words."
        for i, w in enumerate(["rain", "light", "cells", "money", "maps", "gravity", "engines",
                               "vaccines", "bridges", "soil", "tides", "music"])]


def _tf_example(text, doc_id):
  return tf.train.Example(features=tf.train.Features(feature={
      "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()])),
      "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[doc_id.encode()]))
  })).SerializeToString()


def write_inputs(d):
  """Good documents in four formats, and every kind of bad record. Returns
  (number of records, {reason: count})."""
  os.makedirs(d, exist_ok=True)
  lines = [json.dumps({"id": f"j{i}", "text": t}) for i, t in enumerate(GOOD[:6])]
  bad = [
      (b"{broken json", records.INVALID_JSON),
      (json.dumps({"body": "no text field"}).encode(), records.MISSING_TEXT_FIELD),
      (json.dumps({"id": "e", "text": "  "}).encode(), records.EMPTY_TEXT),
      (b'{"id": "u", "text": "bad \xff byte"}', records.INVALID_UTF8),
      (json.dumps({"id": "big", "text": "x" * 5000}).encode(), records.TOO_LARGE),
      (b"[1, 2, 3]", records.NOT_AN_OBJECT),
      (json.dumps({"id": "n", "text": 42}).encode(), records.TEXT_NOT_STRING),
      (json.dumps({"text": "no id"}).encode(), records.INVALID_ID),
      (b"", records.EMPTY_TEXT),
  ]
  with open(os.path.join(d, "a.jsonl"), "wb") as f:
    f.write(b"\n".join([l.encode() for l in lines] + [b for b, _ in bad]) + b"\n")
  with gzip.open(os.path.join(d, "b.jsonl.gz"), "wt") as f:
    for i, t in enumerate(GOOD[6:9]):
      f.write(json.dumps({"id": f"g{i}", "text": t}) + "\n")
  with open(os.path.join(d, "c.jsonl.gz"), "wb") as f:
    f.write(b"\x1f\x8b\x08\x00this is not really gzip")
  with tf.io.TFRecordWriter(os.path.join(d, "d.tfrecord")) as w:
    for i, t in enumerate(GOOD[9:]):
      w.write(_tf_example(t, f"t{i}"))
  reasons = {}
  for _, r in bad:
    reasons[r] = reasons.get(r, 0) + 1
  reasons[records.UNREADABLE_FILE] = 1
  return len(GOOD) + len(bad) + 1, reasons


def read_jsonl(pattern):
  return [json.loads(l) for f in sorted(glob.glob(pattern)) for l in open(f) if l.strip()]


def read_selected(out, features=None):
  features = features or FEATURES
  files = sorted(glob.glob(os.path.join(out, "selected", "*.tfrecord")))
  ds = tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(r, features))
  return [{k: (v.numpy().decode() if v.dtype == tf.string else v.numpy().item())
           for k, v in ex.items()} for ex in ds]


def run_job(tmp_path, model_dir, *extra, name="out"):
  out = str(tmp_path / name)
  argv = [f"--input={tmp_path}/in/*", f"--output={out}", f"--scorer_model={model_dir}",
          "--id_field=id", "--max_doc_bytes=4000", "--max_tokens=128", "--device=cpu",
          "--report=false", *extra]  # the report has its own tests
  metrics = select_data.run(argv, test_pipeline=TestPipeline(runner="FnApiRunner"))
  return out, metrics


def test_every_record_accounted_and_top_k_ranked(tmp_path, tiny_causal_lm_dir):
  n_records, reasons = write_inputs(str(tmp_path / "in"))
  out, metrics = run_job(tmp_path, tiny_causal_lm_dir, "--keep_fraction=0.4",
                         "--docs_per_file=1", "--num_rank_partitions=3")
  scores = read_jsonl(os.path.join(out, "scores", "*.jsonl"))
  rejected = read_jsonl(os.path.join(out, "rejected", "*.jsonl"))
  # Every input record is in exactly one place.
  assert len(scores) + len(rejected) == n_records
  assert sorted(s["id"] for s in scores) == sorted(
      [f"j{i}" for i in range(6)] + [f"g{i}" for i in range(3)] + [f"t{i}" for i in range(3)])
  got = {}
  for r in rejected:
    got[r["reason"]] = got.get(r["reason"], 0) + 1
    assert r["source"] and "excerpt" in r
  assert got == reasons
  c = metrics["counts"]
  assert (c["read"], c["valid"], c["rejected"], c["scored"]) == (n_records, 12, n_records - 12, 12)
  assert c["accounted"] and c["rejected_by_reason"] == reasons
  assert json.load(open(os.path.join(out, "metrics.json")))["counts"] == c
  # --chat_template=auto, as the scorer resolved it (the tiny tokenizer has a template).
  assert metrics["ask_llm"]["chat_template"] == "auto"
  assert metrics["ask_llm"]["chat_template_used"] == "on"

  # Exactly floor(12 * 0.4) = 4 selected: the top 4 by score, ties by id.
  k = 4
  assert c["selected"] == k
  best = sorted(scores, key=lambda s: (-s["ask_llm_score"], s["id"]))
  assert [s["id"] for s in best[:k]] == [s["id"] for s in sorted(
      (s for s in scores if s["selected"]), key=lambda s: s["rank"])]
  assert all(s["rank"] is None for s in scores if not s["selected"])
  for s in scores:
    assert 0 < s["p_yes"] < 1 and 0 < s["p_no"] < 1 and s["ask_llm_score"] == s["p_yes"]

  # The TFRecords, read back with tf.data, are in rank order file by file.
  selected = read_selected(out)
  assert [e["rank"] for e in selected] == list(range(k))
  assert [e["id"] for e in selected] == [s["id"] for s in best[:k]]
  by_id = {s["id"]: s for s in scores}
  for e in selected:
    assert e["ask_llm_score"] == pytest.approx(by_id[e["id"]]["ask_llm_score"], rel=1e-6)
    assert e["text"] in GOOD  # kept whole
  assert len(glob.glob(os.path.join(out, "selected", "*.tfrecord"))) >= 2


def test_output_is_not_overwritten_without_asking(tmp_path, tiny_causal_lm_dir):
  os.makedirs(tmp_path / "in")
  (tmp_path / "in" / "x.txt").write_text("\n".join(GOOD[:5]) + "\n")
  out, _ = run_job(tmp_path, tiny_causal_lm_dir, "--keep_count=2")
  with pytest.raises(select_data.UsageError, match="--overwrite"):
    run_job(tmp_path, tiny_causal_lm_dir, "--keep_count=2")
  (tmp_path / "out" / "notes.txt").write_text("user file")
  out, metrics = run_job(tmp_path, tiny_causal_lm_dir, "--keep_count=3", "--overwrite")
  assert metrics["counts"]["selected"] == 3 and len(read_selected(out)) == 3
  assert (tmp_path / "out" / "notes.txt").read_text() == "user file"
  # One document per line for text input; ids are hashes of the text.
  ids = {s["id"] for s in read_jsonl(os.path.join(out, "scores", "*.jsonl"))}
  assert ids == {records.text_id(t) for t in GOOD[:5]}


def test_an_input_without_a_valid_document_fails_the_run(tmp_path, tiny_causal_lm_dir):
  # (tests/test_loud_failures.py: the line, the staging kept for inspection.)
  os.makedirs(tmp_path / "in")
  (tmp_path / "in" / "x.jsonl").write_text(json.dumps({"id": "a", "text": ""}) + "\n")
  with pytest.raises(select_data.UsageError,
                     match="the run found no valid document: 1 records read, 1 rejected "
                           ".empty_text 1.; nothing was committed"):
    run_job(tmp_path, tiny_causal_lm_dir, "--max_rejected_fraction=1")
  assert not os.path.exists(tmp_path / "out" / "_SUCCESS")
  assert not os.path.exists(tmp_path / "out" / "selected")


@pytest.mark.parametrize("argv,message", [
    (["--input=/nonexistent/*.jsonl", "--output=/tmp/x"], "matches no files"),
    (["--input=setup.py", "--output=/tmp/x"], "--input_format"),
])
def test_clear_errors_without_traceback(argv, message, capsys):
  with pytest.raises(SystemExit) as e:
    select_data.main(argv)
  assert e.value.code == 2
  assert message in capsys.readouterr().err


def test_cli_rejects_typos_and_bad_values(capsys):
  for argv in (["--input=a", "--output=b", "--keep_fracton=0.1"],
               ["--input=a", "--output=b", "--keep_fraction=1.5"],
               ["--input=a", "--output=b", "--keep_fraction=0.1", "--keep_count=3"]):
    with pytest.raises(SystemExit) as e:
      select_data.parse_args(argv)
    assert e.value.code == 2
  args, options = select_data.parse_args(["--input=a", "--output=b", "--direct_num_workers=2"])
  assert args.keep_fraction == 0.2 and options.get_all_options()["direct_num_workers"] == 2


def test_estimate_only_counts_tokens_without_inference(tmp_path, tiny_causal_lm_dir, capsys):
  os.makedirs(tmp_path / "in")
  with open(tmp_path / "in" / "x.jsonl", "w") as f:
    for i in range(30):
      f.write(json.dumps({"text": GOOD[i % len(GOOD)] + f" copy {i}"}) + "\n")
    f.write("{bad json\n")
  result = select_data.run([f"--input={tmp_path}/in/x.jsonl", f"--output={tmp_path}/out",
                            f"--scorer_model={tiny_causal_lm_dir}", "--estimate_only",
                            "--estimate_sample=10", "--gpu_tokens_per_second=1000",
                            "--gpu_price_per_hour=2", "--estimate_format=json"])
  assert result["sample_documents"] == 10
  assert 25 <= result["estimated_documents"] <= 40  # 30 valid documents of similar size
  per_doc = result["sample_tokens"] / 10
  assert result["estimated_tokens"] == pytest.approx(per_doc * result["estimated_documents"], rel=0.01)
  assert result["estimated_gpu_hours"] == pytest.approx(result["estimated_tokens"] / 1000 / 3600, rel=1e-3)
  assert result["model_parameters"] > 0
  assert not os.path.exists(tmp_path / "out")  # nothing written, no pipeline run
  assert '"estimated_gpu_hours"' in capsys.readouterr().out
