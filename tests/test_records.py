"""Pure functions: parsing, rejection reasons, k, selection plan, prompts."""
import json
import math

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

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


# --- Hostile records: parse_record never raises and never lets invalid Unicode through.

def _deep(n):
  return "[" * n + "]" * n


@pytest.mark.parametrize("payload,reason,detail", [
    (b'{"id": "a", "text": "x \\ud800"}', records.INVALID_TEXT, "lone surrogate"),
    (b'{"id": "\\udfff", "text": "x"}', records.INVALID_ID, "lone surrogate"),
    (b'{"id": "a", "text": "x", "meta": ' + _deep(1000).encode() + b"}",
     records.INVALID_JSON, "nested too deep"),
    (('{"id": "a", "text": "x", "meta": ' + _deep(100_000) + "}").encode(),
     records.INVALID_JSON, "nested too deep"),
])
def test_surrogates_and_deep_nesting_are_rejected_not_raised(payload, reason, detail):
  out = _jsonl(payload, id_field="id")
  assert isinstance(out, Rejected) and out.reason == reason and detail in out.detail
  out.to_json().encode("utf-8")  # rejected/ is written as UTF-8


def test_surrogates_in_a_rejection_are_written_as_escapes():
  out = _jsonl(b'{"text": " \\ud800 "}')  # blank but for a surrogate
  assert out.reason == records.INVALID_TEXT
  line = json.loads(out.to_json().encode("utf-8"))
  assert line["excerpt"] == " \\ud800 "


def test_unexpected_exception_becomes_invalid_record():
  out = parse_record(RawRecord("f.jsonl:9", None, "jsonl"))  # a bug upstream: no payload
  assert out.reason == records.INVALID_RECORD and out.source == "f.jsonl:9"
  assert out.detail.startswith("TypeError: ")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "1" + "0" * 400])
def test_non_finite_teacher_values_count_as_absent(literal):
  payload = ('{"text": "hello", "edu": %s, "ok": 2}' % literal).encode()
  doc = _jsonl(payload, keep_fields=("edu", "ok"))
  assert isinstance(doc, Document) and doc.fields == {"ok": 2.0}


def _example(**feats):
  import tensorflow as tf
  def feature(v):
    if isinstance(v, bytes):
      return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))
    return tf.train.Feature(float_list=tf.train.FloatList(value=[v]))
  return tf.train.Example(features=tf.train.Features(
      feature={k: feature(v) for k, v in feats.items()})).SerializeToString()


def test_tfrecord_id_that_is_not_utf8_is_invalid_and_nan_teacher_is_absent():
  out = parse_record(RawRecord("a.tfrecord:#1", _example(text=b"hi", id=b"r\xff"), "tfrecord"),
                     id_field="id")
  assert out.reason == records.INVALID_ID and "UTF-8" in out.detail
  doc = parse_record(RawRecord("a.tfrecord:#2", _example(text=b"hi", edu=float("nan"), ok=1.5),
                               "tfrecord"), keep_fields=("edu", "ok"))
  assert doc.fields == {"ok": 1.5}


def test_score_row_carries_the_source():
  doc = Document(id="d1", text="t", source="gs://b/in.jsonl:7",
                 scores={"ask_llm_score": 0.5, "perplexity": float("inf")})
  assert json.loads(records.score_row(doc, True, 3)) == {
      "id": "d1", "source": "gs://b/in.jsonl:7", "ask_llm_score": 0.5, "perplexity": None,
      "selected": True, "rank": 3}


# Text with lone surrogates as well as ordinary characters (st.characters() alone never
# draws a surrogate, and a one_of of two characters() strategies drops them).
_TEXT = st.text(st.one_of(st.characters(), st.integers(0xD800, 0xDFFF).map(chr)), max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12)
# Mostly strings where strings belong, so that many records get as far as a Document.
_OBJECT = st.fixed_dictionaries({
    "text": st.one_of(_TEXT, _TEXT, _TEXT, _JSON),
    "id": st.one_of(_TEXT, _TEXT, st.integers(), _JSON)}, optional={
    "edu": st.one_of(st.floats(), st.integers(), _JSON), "meta": _JSON})


def _serialised(value, ascii_only: bool) -> bytes:
  # ensure_ascii writes a surrogate as the escape "\ud800"; otherwise it is written as
  # its (invalid) UTF-8 bytes.
  return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


_PAYLOAD = st.one_of(
    st.binary(max_size=64),
    st.builds(_serialised, _OBJECT, st.booleans()),
    st.builds(_serialised, _OBJECT, st.booleans()),
    st.builds(_serialised, _JSON, st.booleans()),
    # Deeper than any recursion limit (hypothesis raises Python's while it runs a test).
    st.integers(20_000, 50_000).map(
        lambda n: ('{"id": "d", "text": "x", "a": %s}' % _deep(n)).encode()))


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@example(payload=b'{"id": "a", "text": "x \\ud800"}', fmt="jsonl", wrap=False, tf_id=b"",
         id_field="id")
@example(payload=b'{"id": "\\udfff", "text": "x"}', fmt="jsonl", wrap=False, tf_id=b"",
         id_field="id")
@example(payload=b'{"text": "x", "edu": NaN}', fmt="jsonl", wrap=False, tf_id=b"",
         id_field=None)
@example(payload=('{"text": "x", "a": %s}' % _deep(1000)).encode(), fmt="jsonl", wrap=False,
         tf_id=b"", id_field="id")
@given(payload=_PAYLOAD, fmt=st.sampled_from(["jsonl", "jsonl", "text", "tfrecord"]),
       wrap=st.booleans(), tf_id=st.binary(max_size=8), id_field=st.sampled_from(["id", None]))
def test_parse_record_is_total_on_hostile_input(payload, fmt, wrap, tf_id, id_field):
  if fmt == "tfrecord" and wrap:  # the payload as the text feature of a real Example
    payload = _example(text=payload, id=tf_id)
  out = parse_record(RawRecord("f:1", payload, fmt), id_field=id_field, keep_fields=("edu",),
                     max_doc_bytes=1 << 20)
  assert isinstance(out, (Document, Rejected))
  if isinstance(out, Document):
    out.id.encode("utf-8")
    out.text.encode("utf-8")
    assert out.id and records.has_visible_char(out.text)
    assert len(out.id.encode("utf-8")) <= records.MAX_ID_BYTES
    assert all(math.isfinite(v) for v in out.fields.values())
  else:
    assert out.reason != records.INVALID_RECORD, out.detail  # every case is foreseen
    out.to_json().encode("utf-8")


# --- Bounded ids, visible text, repeated keys, strict copied fields, line endings.

@pytest.mark.parametrize("doc_id", [
    "x" * 17,
    "é" * 9,          # 18 bytes: the limit counts UTF-8 bytes, not characters
    10 ** 16,         # an integer id, as its decimal text (17 digits)
])
def test_an_id_over_max_id_bytes_is_invalid(doc_id):
  out = _jsonl({"id": doc_id, "text": "hello"}, id_field="id", max_id_bytes=16)
  assert out.reason == records.INVALID_ID and "bytes > --max_id_bytes=16" in out.detail
  assert _jsonl({"id": "x" * 16, "text": "hello"}, id_field="id", max_id_bytes=16).id == "x" * 16
  out = parse_record(RawRecord("a.tfrecord:#1", _example(text=b"hi", id=b"r" * 17), "tfrecord"),
                     id_field="id", max_id_bytes=16)
  assert out.reason == records.INVALID_ID and "17 bytes > --max_id_bytes=16" in out.detail


def test_the_default_id_limit_is_1024_bytes():
  assert _jsonl({"id": "x" * 1024, "text": "hello"}, id_field="id").id == "x" * 1024
  out = _jsonl({"id": "x" * 1025, "text": "hello"}, id_field="id")
  assert out.reason == records.INVALID_ID and "--max_id_bytes=1024" in out.detail


@pytest.mark.parametrize("text", [
    "\u200b", "\ufeff\ufeff", "\u2060", "\u200e\u200f\u202e", "\x00", " \x00\t\u200b ",
    "\u3164\u2800", "\u034f\ufe0f", "\u2028\u2029\u00a0"])
def test_a_text_without_a_visible_character_is_empty_text(text):
  for out in (_jsonl({"text": text}), parse_record(RawRecord("f.txt:1", text.encode(), "text"))):
    assert out.reason == records.EMPTY_TEXT and "no visible character" in out.detail
  assert not records.has_visible_char(text)
  assert records.has_visible_char(text + "a") and records.has_visible_char("\u200b字")


@pytest.mark.parametrize("payload,key", [
    (b'{"text": "a", "text": "b"}', "text"),
    (b'{"id": 1, "text": "a", "id": 2}', "id"),
    (b'{"id": 1, "text": "a", "edu": 1, "edu": 3}', "edu"),
    (b'{"id": 1, "text": "a", "url": "u", "url": "v"}', "url"),
])
def test_a_repeated_key_the_job_reads_is_rejected(payload, key):
  out = _jsonl(payload, id_field="id", keep_fields=("edu",), copy_fields=("url",))
  assert out.reason == records.DUPLICATE_KEY and repr(key) in out.detail
  # Keys the job does not read may repeat, at the top or nested (Python keeps the last).
  doc = _jsonl(b'{"text": "a", "m": 1, "m": 2, "n": {"k": 1, "k": 2}}', id_field=None)
  assert isinstance(doc, Document) and doc.text == "a"


def test_copied_fields_keep_non_finite_numbers_as_their_text():
  payload = (b'{"text": "a", "n": NaN, "i": -Infinity, "big": 1e999, "l": [Infinity, 2.5],'
             b' "o": {"x": NaN}}')
  doc = _jsonl(payload, copy_fields=("n", "i", "big", "l", "o"))
  assert doc.extra == {"n": "NaN", "i": "-Infinity", "big": "1e999", "l": ["Infinity", 2.5],
                       "o": {"x": "NaN"}}
  doc = parse_record(RawRecord("a.tfrecord:#1", _example(text=b"hi", s=float("-inf")),
                               "tfrecord"), copy_fields=("s",))
  assert doc.extra == {"s": "-Infinity"}
  # scores/ is strict JSON whatever a Document holds.
  doc = Document(id="d", text="t", source="s", scores={"p": float("nan")},
                 extra={"e": [float("inf"), 1.0]})
  assert json.loads(records.score_row(doc, False, None),
                    parse_constant=_no_constant) == {
      "id": "d", "source": "s", "p": None, "e": [None, 1.0], "selected": False, "rank": None}


def _no_constant(name):
  raise ValueError(f"not strict JSON: {name}")


@pytest.mark.parametrize("data,lines", [
    (b"one\rtwo\rthree\r", [b"one", b"two", b"three"]),        # CR-only (classic Mac)
    (b"a\r\nb\nc\rd", [b"a", b"b", b"c", b"d"]),               # mixed, last unterminated
    (b"a\r\r\nb", [b"a", b"", b"b"]),
    (b"\xef\xbb\xbfx\ry", [b"x", b"y"]),
])
def test_lines_end_at_lf_crlf_or_a_lone_cr(data, lines):
  import io
  from transforms import read
  assert [c for _, c, _ in read._read_lines(io.BytesIO(data), 64)] == lines
  # The same lines whichever way the file is cut into pieces (a \r\n across two pieces).
  for cut in range(len(data) + 1):
    pieces = [p for p in (data[:cut], data[cut:]) if p]
    got = [h for h, _ in read._split_lines(pieces, 64)]
    assert got == ([b"\xef\xbb\xbf" + lines[0]] + lines[1:] if data.startswith(b"\xef")
                   else lines), cut
