"""Loud failures: a field that no first record has is one `error:` line before the run
(the fields seen, the option to set); a run with no valid document, or more rejected
than --max_rejected_fraction, fails after the pipeline with one line, no _SUCCESS, and
its outputs kept in staging for inspection."""
import json
import os

import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from beam_pipelines import first_records, select_data
from beam_pipelines.checks import UsageError
from beam_pipelines.options import JobConfig, parse_args
from tests.test_run_safety import _main_error as _main_errors


def _main_error(argv, capsys) -> str:
  """The one `error:` line of a refused or failed run."""
  return _main_errors(argv, capsys).strip().splitlines()[-1]


def _jsonl(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.writelines((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


def _rows(n, text="text"):
  return [{"doc_id": f"d{i}", text: f"document number {i} about rivers"} for i in range(n)]


def test_a_text_field_no_record_has_is_one_line_naming_the_fields(tmp_path, capsys):
  _jsonl(str(tmp_path / "in" / "a.jsonl"), _rows(5, text="raw_content"))
  err = _main_error([f"--input={tmp_path}/in/*.jsonl", f"--output={tmp_path}/o",
                     "--sampler=random"], capsys)
  assert err.startswith('error: no record has "text" in the first 5 records of ')
  assert err.endswith("fields seen: doc_id, raw_content; pass --text_field=raw_content")
  assert not (tmp_path / "o").exists()  # refused before --output is made


def test_an_id_field_no_record_has_names_one_that_is(tmp_path, capsys):
  _jsonl(str(tmp_path / "in" / "a.jsonl"), _rows(4))
  err = _main_error([f"--input={tmp_path}/in/*.jsonl", f"--output={tmp_path}/o",
                     "--sampler=random", "--id_field=id"], capsys)
  assert 'no record has "id"' in err and err.endswith("pass --id_field=doc_id")


def _check(tmp_path, *extra):
  args, _ = parse_args([f"--input={tmp_path}/in/*", f"--output={tmp_path}/o", *extra])
  job = JobConfig.from_args(args)
  from transforms import read as read_lib
  first_records.check_first_records(job, read_lib.checked_inputs(list(job.patterns),
                                                          job.input_format))


def test_the_first_check_passes_once_any_first_record_is_a_document(tmp_path):
  # Other rejections (bad JSON) are left to the run, which counts them.
  _jsonl(str(tmp_path / "in" / "a.jsonl"), ["{not json"] * 3 + _rows(1))
  _check(tmp_path)
  _jsonl(str(tmp_path / "in" / "a.jsonl"), ["{not json"] * 3)
  _check(tmp_path)
  _jsonl(str(tmp_path / "in" / "b.jsonl"), [{"body": 3, "content": "the text"}])
  with pytest.raises(UsageError, match="fields seen: body, content; pass --text_field=content"):
    _check(tmp_path)


def test_a_tfrecord_input_names_its_features(tmp_path):
  import tensorflow as tf
  os.makedirs(tmp_path / "in")
  with tf.io.TFRecordWriter(str(tmp_path / "in" / "a.tfrecord")) as w:
    w.write(tf.train.Example(features=tf.train.Features(feature={
        "content": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"some text"])),
        "n": tf.train.Feature(int64_list=tf.train.Int64List(value=[1]))})).SerializeToString())
  with pytest.raises(UsageError, match="fields seen: content, n; pass --text_field=content"):
    _check(tmp_path)


def _run(tmp_path, rows, *extra):
  _jsonl(str(tmp_path / "in" / "a.jsonl"), rows)
  return select_data.run([f"--input={tmp_path}/in/*.jsonl", f"--output={tmp_path}/o",
                          "--sampler=random", "--cache=none", "--report=false", *extra],
                         test_pipeline=TestPipeline(runner="FnApiRunner"))


def _staged(tmp_path):
  root = tmp_path / "o" / "_temporary"
  return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_too_many_rejected_fails_the_run_and_keeps_its_outputs(tmp_path):
  rows = _rows(3) + ["{not json"] * 4 + [{"doc_id": "e", "text": " "}]  # 5 of 8 rejected
  with pytest.raises(UsageError) as e:
    _run(tmp_path, rows)
  message = str(e.value)
  assert "\n" not in message
  assert message.startswith("the run rejected 5 of 8 records (62%) (invalid_json 4, "
                            "empty_text 1), more than --max_rejected_fraction=0.5")
  assert not (tmp_path / "o" / "_SUCCESS").exists()
  assert not (tmp_path / "o" / "selected").exists()
  [run_id] = _staged(tmp_path)
  staging = tmp_path / "o" / "_temporary" / run_id
  assert str(staging) in message and "--overwrite or --resume" in message
  assert (staging / "metrics.json").exists() and list((staging / "rejected").iterdir())
  # Allowed: the run commits, and clears the staging left by the failed one.
  metrics = _run(tmp_path, rows, "--max_rejected_fraction=0.7", "--overwrite")
  assert metrics["counts"]["rejected"] == 5 and (tmp_path / "o" / "_SUCCESS").exists()
  assert _staged(tmp_path) == []


def test_no_valid_document_fails_the_run_with_one_line(tmp_path, capsys):
  _jsonl(str(tmp_path / "in" / "a.jsonl"), ["{not json"] * 3)
  err = _main_error([f"--input={tmp_path}/in/*.jsonl", f"--output={tmp_path}/o",
                     "--sampler=random", "--cache=none", "--report=false",
                     "--max_rejected_fraction=1"], capsys)
  assert err.startswith("error: the run found no valid document: 3 records read, 3 "
                        "rejected (invalid_json 3); nothing was committed")
  assert not (tmp_path / "o" / "_SUCCESS").exists() and len(_staged(tmp_path)) == 1
