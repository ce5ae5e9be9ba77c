"""Dotted field paths (transforms/field_paths.py): into nested JSON objects and Parquet
structs, for the text, the id, the teacher and the kept fields; a literal dotted key wins;
the first-records check lists nested paths."""
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, strategies as st

from beam_pipelines import first_records
from beam_pipelines.checks import UsageError
from beam_pipelines.options import JobConfig, parse_args
from transforms import field_paths, read as read_lib, records


def test_get_path_walks_objects_and_list_indexes():
  rec = {"meta": {"url": "u", "tags": [{"n": 1}, {"n": 2}], "deep": {"x": None}}}
  assert field_paths.get_path(rec, "meta.url") == "u"
  assert field_paths.get_path(rec, "meta.tags.1.n") == 2
  assert field_paths.get_path(rec, "meta") == rec["meta"]
  assert field_paths.lookup(rec, "meta.deep.x") == (True, None)  # present, null
  assert field_paths.lookup(rec, "meta.deep.y") == (False, None)
  assert field_paths.lookup(rec, "meta.tags.5.n") == (False, None)
  assert field_paths.lookup(rec, "meta.url.more") == (False, None)
  assert field_paths.get_path("not an object", "a", default=7) == 7


def test_a_literal_dotted_key_wins_over_the_path():
  rec = {"meta.url": "literal", "meta": {"url": "nested"}}
  assert field_paths.get_path(rec, "meta.url") == "literal"
  assert field_paths.get_path({"a": {"b.c": 1, "b": {"c": 2}}}, "a.b.c") == 1


_keys = st.text(alphabet="abc.", min_size=1, max_size=4)
_json = st.recursive(st.none() | st.integers() | st.text(max_size=3),
                     lambda kids: st.dictionaries(_keys, kids, max_size=3), max_leaves=8)


@given(st.dictionaries(_keys, _json, max_size=4), _keys)
def test_a_key_present_is_always_read_as_it_is(record, key):
  found, value = field_paths.lookup(record, key)
  if key in record:
    assert found and value is record[key]
  elif "." not in key:
    assert not found


def test_iter_paths_lists_nested_keys_parents_first():
  rec = {"id": 1, "meta": {"url": "u", "lang": {"code": "en"}}, "tags": [{"a": 1}]}
  assert [p for p, _ in field_paths.iter_paths(rec)] == [
      "id", "meta", "meta.url", "meta.lang", "meta.lang.code", "tags"]
  assert field_paths.columns_for(("meta.url", "text", None, "meta.lang")) == [
      "meta.url", "meta", "text", "meta.lang"]


def _raw(obj):
  return records.RawRecord("f:1", json.dumps(obj).encode(), "jsonl")


def test_parse_record_reads_text_id_teacher_and_kept_fields_by_path():
  obj = {"content": {"body": "a nested text"}, "meta": {"doc": {"id": 42}, "score": 3.5,
                                                        "tags": ["x", "y"]}}
  doc = records.parse_record(_raw(obj), text_field="content.body", id_field="meta.doc.id",
                             keep_fields=("meta.score",), copy_fields=("meta", "meta.tags"))
  assert isinstance(doc, records.Document), doc
  assert (doc.text, doc.id, doc.fields) == ("a nested text", "42", {"meta.score": 3.5})
  # Kept values arrive as their Python values, keyed by the path as given.
  assert doc.extra == {"meta": obj["meta"], "meta.tags": ["x", "y"]}
  missing = records.parse_record(_raw(obj), text_field="content.title")
  assert missing.reason == records.MISSING_TEXT_FIELD and "content.title" in missing.detail
  bad_id = records.parse_record(_raw(obj), text_field="content.body", id_field="meta.doc")
  assert bad_id.reason == records.INVALID_ID


def test_a_repeated_top_level_key_of_a_path_is_rejected():
  raw = records.RawRecord("f:1", b'{"text": "t", "meta": {"u": 1}, "meta": {"u": 2}}',
                          "jsonl")
  out = records.parse_record(raw, copy_fields=("meta.u",))
  assert out.reason == records.DUPLICATE_KEY


def test_parquet_structs_are_read_by_path(tmp_path):
  path = str(tmp_path / "p.parquet")
  table = pa.table({
      "doc": pa.array([{"body": "first text", "id": "a"}, {"body": "second text", "id": "b"}]),
      "meta": pa.array([{"lang": "en", "score": 1}, {"lang": "fr", "score": 2}]),
      "meta.lang": pa.array(["literal-en", "literal-fr"]),  # a literal dotted column wins
      "unused": pa.array([1, 2])})
  pq.write_table(table, path)
  with TestPipeline(runner="FnApiRunner") as p:
    out = p | read_lib.ReadDocuments([path], text_field="doc.body", id_field="doc.id",
                                     keep_fields=["meta.score"],
                                     copy_fields=["meta.lang", "meta"])
    got = out["documents"] | "Fields" >> __import__("apache_beam").Map(
        lambda d: (d.id, d.text, d.fields, tuple(sorted(d.extra.items()))))
    assert_that(got, equal_to([
        ("a", "first text", {"meta.score": 1.0},
         (("meta", {"lang": "en", "score": 1}), ("meta.lang", "literal-en"))),
        ("b", "second text", {"meta.score": 2.0},
         (("meta", {"lang": "fr", "score": 2}), ("meta.lang", "literal-fr")))]))


def _check(tmp_path, *extra):
  args, _ = parse_args([f"--input={tmp_path}/in/*", f"--output={tmp_path}/o", *extra])
  job = JobConfig.from_args(args)
  first_records.check_first_records(job, read_lib.checked_inputs(list(job.patterns),
                                                                 job.input_format))


def test_the_first_records_check_lists_nested_paths_and_suggests_one(tmp_path):
  os.makedirs(tmp_path / "in")
  with open(tmp_path / "in" / "a.jsonl", "w") as f:
    for i in range(3):
      f.write(json.dumps({"n": i, "doc": {"body": f"text number {i}", "id": f"d{i}"}}) + "\n")
  with pytest.raises(UsageError, match="fields seen: n, doc, doc.body, doc.id; "
                                       "pass --text_field=doc.body"):
    _check(tmp_path)
  _check(tmp_path, "--text_field=doc.body", "--id_field=doc.id")  # passes
  with pytest.raises(UsageError, match='no record has "doc.key".*pass --id_field=doc.id'):
    _check(tmp_path, "--text_field=doc.body", "--id_field=doc.key")
