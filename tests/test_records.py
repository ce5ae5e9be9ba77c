"""Pure functions: parsing, rejection reasons, k, selection plan, prompts."""
import json

import pytest

from models.prompts import PROMPTS, resolve_prompt, strip_delimiters
from transforms import records
from transforms.records import Document, RawRecord, Rejected, parse_record
from transforms.select import cutoff_key, make_plan, partition_of, resolve_k
from transforms.write import partition_file_name


def _jsonl(obj_or_bytes, **kw):
  payload = obj_or_bytes if isinstance(obj_or_bytes, bytes) else json.dumps(obj_or_bytes).encode()
  return parse_record(RawRecord("f.jsonl:1", payload, "jsonl"), **kw)


@pytest.mark.parametrize("payload,reason", [
    (b"{not json", records.INVALID_JSON),
    (b"[1, 2]", records.NOT_AN_OBJECT),
    (json.dumps({"body": "x"}).encode(), records.MISSING_TEXT_FIELD),
    (json.dumps({"text": 5}).encode(), records.TEXT_NOT_STRING),
    (json.dumps({"text": "   \n"}).encode(), records.EMPTY_TEXT),
    (b'{"text": "caf\xe9"}', records.INVALID_UTF8),
    (json.dumps({"text": "x" * 100}).encode(), records.TOO_LARGE),
])
def test_each_bad_jsonl_record_gets_its_reason(payload, reason):
  out = _jsonl(payload, max_doc_bytes=64)
  assert isinstance(out, Rejected)
  assert out.reason == reason
  assert out.source == "f.jsonl:1"
  assert json.loads(out.to_json())["reason"] == reason


def test_valid_record_gets_hash_id_or_id_field_and_keeps_numeric_fields():
  doc = _jsonl({"text": "hello world", "id": 7, "edu_score": 3})
  assert isinstance(doc, Document) and doc.id == records.text_id("hello world")
  doc = _jsonl({"text": "hello", "id": 7, "edu_score": 3}, id_field="id", keep_fields=("edu_score",))
  assert doc.id == "7" and doc.fields == {"edu_score": 3.0}
  assert _jsonl({"text": "hello"}, id_field="id").reason == records.INVALID_ID


def test_text_and_tfrecord_formats():
  import tensorflow as tf
  doc = parse_record(RawRecord("a.txt:3", "une ligne é".encode(), "text"))
  assert doc.text == "une ligne é"
  ex = tf.train.Example(features=tf.train.Features(feature={
      "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"from tfrecord"])),
      "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"r1"]))}))
  doc = parse_record(RawRecord("a.tfrecord:#1", ex.SerializeToString(), "tfrecord"), id_field="id")
  assert (doc.id, doc.text) == ("r1", "from tfrecord")
  bad = parse_record(RawRecord("a.tfrecord:#2", b"\xff\x00garbage", "tfrecord"))
  assert bad.reason == records.INVALID_TFRECORD


@pytest.mark.parametrize("n,fraction,count,k", [
    (0, 0.2, None, 0), (3, 0.2, None, 1), (100, 0.29, None, 29), (10, 0.7, None, 7),
    (10, None, 4, 4), (3, None, 10, 3), (10, 1.0, None, 10)])
def test_resolve_k_rounds_down_with_at_least_one(n, fraction, count, k):
  assert resolve_k(n, fraction, count) == k


def test_plan_finds_boundary_and_packs_files():
  bounds = [(i,) for i in range(0, 100, 10)]
  keys = [(i,) for i in range(100)]
  hist = {}
  for key in keys:
    hist[partition_of(key, bounds)] = hist.get(partition_of(key, bounds), 0) + 1
  plan = make_plan(100, hist, 25, docs_per_file=12)
  boundary = [key for key in keys if partition_of(key, bounds) == plan.boundary]
  assert cutoff_key(boundary, plan) == (24,)
  # Files start at ranks that are whole partitions apart and hold >= 12 documents.
  starts = sorted(set(plan.file_of.values()))
  assert starts[0] == 0 and all(b - a >= 12 for a, b in zip(starts, starts[1:]))
  assert make_plan(0, {}, 0).boundary is None


def test_file_names_sort_in_rank_order():
  names = [partition_file_name(s, c) for s, c in [(0, 5), (5, 100), (105, 2000), (2105, 1)]]
  assert names == sorted(names)


def test_strip_delimiters_leaves_no_triple_hash():
  for text in ["a ### b", "#####", "##x###y##", "## ### #", "#" * 7 + "z" + "##"]:
    assert "###" not in strip_delimiters(text)
  assert strip_delimiters("C# and ## stay") == "C# and ## stay"


def test_prompts_by_name_and_file(tmp_path):
  assert resolve_prompt("paper") == PROMPTS["paper"]
  f = tmp_path / "p.txt"
  f.write_text("Judge: {text}\nyes or no?")
  assert resolve_prompt(f"@{f}").startswith("Judge:")
  with pytest.raises(ValueError, match="unknown prompt"):
    resolve_prompt("nope")
  f.write_text("no placeholder")
  with pytest.raises(ValueError, match="exactly once"):
    resolve_prompt(f"@{f}")


def test_progress_line_has_rate_and_time_left():
  from transforms.metrics import progress_line
  line = progress_line("scored", 50, 200, 10.0)
  assert "50/200" in line and "5.0 docs/s" in line and "0.5 min left" in line
  assert progress_line("scored", 5, 0, 1.0) == "scored: 5 documents, 5.0 docs/s"
