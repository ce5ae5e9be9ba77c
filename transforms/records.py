"""The small record types that flow through the pipeline, and pure functions on them.

Beam stays at the edges (see transforms/read.py etc.); everything here is plain Python so
it can be tested without a pipeline.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import unicodedata
from typing import Any, Dict, Mapping, Optional

# Rejection reasons: the short codes used in rejected/ and in the counters
# (`rejected:<reason>`).
INVALID_JSON = "invalid_json"
NOT_AN_OBJECT = "not_a_json_object"
MISSING_TEXT_FIELD = "missing_text_field"
TEXT_NOT_STRING = "text_not_a_string"
EMPTY_TEXT = "empty_text"
INVALID_UTF8 = "invalid_utf8"
TOO_LARGE = "too_large"
INVALID_ID = "invalid_id"
INVALID_TFRECORD = "invalid_tfrecord"
UNREADABLE_FILE = "unreadable_file"
# A matched input path that is never opened (transforms/input_files.py): gone by the time
# it is read (deleted, a broken link), or not a regular file (a pipe, socket, device or
# directory), which could block the reader or means nothing as records.
MISSING_FILE = "missing_file"
NOT_A_REGULAR_FILE = "not_a_regular_file"
# The text holds a lone surrogate (a JSON escape like "\ud800"): not valid Unicode, so it
# cannot be written as UTF-8 or tokenized.
INVALID_TEXT = "invalid_text"
# Belt and braces: any exception nobody foresaw while parsing one record. It is a bug to
# fix, but it must cost one record, not the job.
INVALID_RECORD = "invalid_record"
# A JSON object repeats a key the job reads (text, id, teacher or --keep_fields): Python
# keeps the last value, other parsers the first, so which one is meant is unclear.
DUPLICATE_KEY = "duplicate_key"

# --max_id_bytes default. Every rank boundary is a sort key holding an id, and the
# P + 1 boundaries go to every worker: at 1 KiB an id costs at most 100 MB there at the
# largest --num_rank_partitions, where one 5 MB id took a 3-document job past 8 GB. A
# hash id is 32 bytes; most URLs fit.
MAX_ID_BYTES = 1024

EXCERPT_CHARS = 200
# Every score the job can compute: each is a float feature of every selected record,
# NaN where the run's sampler did not compute it, so that one reader works for every run
# (tests/test_training_output.py checks that graph.score_names stays inside this list).
# The scores of the cluster samplers (transforms/kmeans.py, transforms/cluster_sampling.py).
CLUSTER = "cluster"
CLUSTER_DISTANCE = "cluster_distance"
DUPLICATE_OF = "duplicate_of"
SCORE_FEATURES = ("ask_llm_score", "p_yes", "p_no", "perplexity", "mean_nll",
                  "quality_score", "density", "sampling_weight", CLUSTER_DISTANCE)
# The integer scores: an int64 feature of every selected record, -1 where not computed.
INT_SCORE_FEATURES = (CLUSTER,)
MISSING_INT = -1
# Scores that are text, in scores/ only (the id SemDeDup kept in a duplicate's place).
TEXT_SCORES = (DUPLICATE_OF,)
# --input_format values (transforms/read.py reads them).
INPUT_FORMATS = ("auto", "jsonl", "text", "tfrecord")


@dataclasses.dataclass(frozen=True)
class Document:
  """A valid input document. Scores are attached as it flows, so no join is needed."""
  id: str
  text: str
  source: str
  scores: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # Extra numeric fields carried from the input record (e.g. a teacher score).
  fields: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # Input fields copied to the outputs (--keep_fields): JSON values, None when missing.
  extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  # The sentence embedding (float32 vector) while density is computed; dropped after.
  embedding: Any = dataclasses.field(default=None, compare=False, repr=False)
  # Cluster-balanced samplers: whether the document is within its cluster's quota
  # (transforms/cluster_sampling.py); the selection's sort key reads it. Not written.
  in_quota: Optional[bool] = dataclasses.field(default=None, compare=False, repr=False)

  def with_scores(self, **scores) -> "Document":
    merged = dict(self.scores)
    merged.update(scores)
    return dataclasses.replace(self, scores=merged)


@dataclasses.dataclass(frozen=True)
class Rejected:
  """An input record that could not be used, with the reason."""
  source: str
  reason: str
  excerpt: str
  detail: str = ""

  def to_json(self) -> str:
    out = {"source": self.source, "reason": self.reason, "excerpt": self.excerpt}
    if self.detail:
      out["detail"] = self.detail
    return json.dumps({k: safe_str(v) for k, v in out.items()}, ensure_ascii=False,
                      allow_nan=False)


@dataclasses.dataclass(frozen=True)
class RawRecord:
  """One record as read from a file, before validation."""
  source: str          # "path:line" or "path:#record"
  payload: bytes
  fmt: str             # jsonl | text | tfrecord


def text_id(text: str) -> str:
  """The id of a document without an id field: a hash of its text."""
  return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def is_valid_unicode(s: str) -> bool:
  """False when `s` holds a lone surrogate, which json.loads lets through from "\\ud800"."""
  try:
    s.encode("utf-8")
  except UnicodeEncodeError:
    return False
  return True


def safe_str(s: str) -> str:
  """`s` with lone surrogates spelt as \\udXXX escapes, so it can be written as UTF-8."""
  return s if is_valid_unicode(s) else s.encode("utf-8", "backslashreplace").decode("utf-8")


# A text needs a character outside these categories to be a document: controls (NUL),
# format characters (U+200B, U+FEFF, U+2060, bidi marks), separators, and combining marks
# with nothing to combine with.
_INVISIBLE_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Zs", "Zl", "Zp", "Mn", "Me"))
# Letters and symbols that render as blank space (Hangul fillers, the blank Braille cell).
_BLANK_CHARS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def has_visible_char(text: str) -> bool:
  """Whether `text` shows anything. Stops at the first visible character: O(1) for a
  normal text, one pass over a text that is all invisible."""
  for ch in text.lstrip():
    if ch not in _BLANK_CHARS and unicodedata.category(ch) not in _INVISIBLE_CATEGORIES:
      return True
  return False


def _invisible_detail(text: str) -> str:
  if not text:
    return "the text is empty"
  return (f"no visible character: {len(text)} whitespace, control, format or combining "
          f"characters (the first is U+{ord(text[0]):04X})")


def excerpt(payload: Any, limit: int = EXCERPT_CHARS) -> str:
  if isinstance(payload, bytes):
    payload = payload[: limit * 4].decode("utf-8", errors="replace")
  payload = str(payload)
  payload = payload if len(payload) <= limit else payload[:limit] + "..."
  return safe_str(payload)


def _finite(value) -> Optional[float]:
  """A float, or None for NaN/inf (JSON parsers accept NaN, Infinity and 1e999) and for
  integers too big for a float: a teacher value that cannot be ranked counts as absent."""
  try:
    value = float(value)
  except OverflowError:
    return None
  return value if math.isfinite(value) else None


def _numeric_fields(obj: Mapping[str, Any], names) -> Dict[str, Any]:
  out = {}
  for name in names:
    value = obj.get(name)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      value = _finite(value)
      if value is not None:
        out[name] = value
  return out


class _RepeatedKeys(dict):
  """A JSON object that repeated a key (json keeps the last value); `repeated` names them."""
  repeated = frozenset()


def _json_object(pairs):
  """object_pairs_hook: a dict, that remembers the keys the object repeated."""
  obj = dict(pairs)
  if len(obj) == len(pairs):
    return obj
  seen = set()
  obj = _RepeatedKeys(obj)
  obj.repeated = frozenset(k for k, _ in pairs if k in seen or seen.add(k))
  return obj


def _raw_number(text: str):
  """parse_float/parse_constant: a non-finite number (NaN, Infinity, 1e999) stays the
  text it was in the input, so a copied field is strict JSON and loses nothing."""
  value = float(text)
  return value if math.isfinite(value) else text


# Made once: json.loads with hooks builds a decoder per call, a third of its time.
_RECORD_DECODER = json.JSONDecoder(object_pairs_hook=_json_object)
_COPY_DECODER = json.JSONDecoder(parse_float=_raw_number, parse_constant=_raw_number)


def _strict(value):
  """A tf.train.Example float as strict JSON: a non-finite one as JSON would spell it."""
  if isinstance(value, float) and not math.isfinite(value):
    return "NaN" if value != value else "Infinity" if value > 0 else "-Infinity"
  return value


def _copied_fields(raw: RawRecord, names) -> Dict[str, Any]:
  """The values of `names` in a valid record (None where missing): JSON values from JSON
  Lines, from a tf.train.Example the feature's value (a list when it holds several).
  Non-finite numbers are kept as their text (see _raw_number)."""
  if raw.fmt == "text":
    return {name: None for name in names}
  if raw.fmt == "tfrecord":
    import tensorflow as tf
    feats = tf.train.Example.FromString(raw.payload).features.feature
    out = {}
    for name in names:
      f = feats.get(name)
      values = []
      if f is not None:
        kind = f.WhichOneof("kind")
        values = list(getattr(f, kind).value) if kind else []
      values = [v.decode("utf-8", "replace") if isinstance(v, bytes) else _strict(v)
                for v in values]
      out[name] = None if not values else values[0] if len(values) == 1 else values
    return out
  obj = _COPY_DECODER.decode(raw.payload.decode("utf-8"))  # parsed before: valid
  return {name: obj.get(name) for name in names}


def unexpected(source: Any, payload: Any, error: BaseException) -> Rejected:
  """The rejection for an exception nobody foresaw (see INVALID_RECORD)."""
  return Rejected(str(source), INVALID_RECORD, excerpt(payload),
                  f"{type(error).__name__}: {str(error)[:300]}")


def parse_record(raw: RawRecord, text_field: str = "text", id_field: Optional[str] = None,
                 max_doc_bytes: int = 10 * 1024 * 1024, keep_fields=(), copy_fields=(),
                 max_id_bytes: int = MAX_ID_BYTES):
  """Turns a raw record into a Document or a Rejected. Never raises.

  keep_fields: numeric fields carried for the job's own use (a teacher score);
  copy_fields: fields copied as they are to the outputs (--keep_fields);
  max_id_bytes: a longer id (UTF-8) is invalid_id."""
  try:
    limits = (max_doc_bytes, max_id_bytes)
    doc = _parse_record(raw, text_field, id_field, limits, keep_fields, copy_fields)
    if copy_fields and isinstance(doc, Document):
      doc = dataclasses.replace(doc, extra=_copied_fields(raw, copy_fields))
    return doc
  except Exception as e:  # pylint: disable=broad-except
    return unexpected(getattr(raw, "source", ""), getattr(raw, "payload", b""), e)


def _id_problem(doc_id: str, id_field: str, max_id_bytes: int) -> Optional[str]:
  """Why `doc_id` cannot be an id, or None."""
  if not is_valid_unicode(doc_id):
    return f"field {id_field!r} is not valid Unicode (lone surrogate)"
  size = len(doc_id.encode("utf-8"))
  if size > max_id_bytes:
    return f"id is {size} bytes > --max_id_bytes={max_id_bytes}"
  return None


def _parse_record(raw, text_field, id_field, limits, keep_fields, copy_fields):
  max_doc_bytes, max_id_bytes = limits
  if len(raw.payload) > max_doc_bytes:
    return Rejected(raw.source, TOO_LARGE, excerpt(raw.payload),
                    f"{len(raw.payload)} bytes > --max_doc_bytes={max_doc_bytes}")
  if raw.fmt == "tfrecord":
    return _parse_tfrecord(raw, text_field, id_field, limits, keep_fields)
  try:
    decoded = raw.payload.decode("utf-8")
  except UnicodeDecodeError as e:
    return Rejected(raw.source, INVALID_UTF8, excerpt(raw.payload), str(e))
  if raw.fmt == "text":
    text = decoded.rstrip("\r\n")
    return _make_document(raw.source, text, None, {}, max_doc_bytes)
  try:
    obj = _RECORD_DECODER.decode(decoded)
  except ValueError as e:
    return Rejected(raw.source, INVALID_JSON, excerpt(decoded), str(e)[:200])
  except RecursionError:  # json.loads recurses once per nesting level.
    return Rejected(raw.source, INVALID_JSON, excerpt(decoded),
                    "nested too deep (arrays/objects inside each other)")
  if not isinstance(obj, dict):
    return Rejected(raw.source, NOT_AN_OBJECT, excerpt(decoded))
  repeated = sorted(getattr(obj, "repeated", set()).intersection(
      (text_field, id_field) + tuple(keep_fields) + tuple(copy_fields)))
  if repeated:
    return Rejected(raw.source, DUPLICATE_KEY, excerpt(decoded),
                    f"key {repeated[0]!r} appears more than once in the object")
  if text_field not in obj:
    return Rejected(raw.source, MISSING_TEXT_FIELD, excerpt(decoded),
                    f"no field {text_field!r} (set --text_field)")
  text = obj[text_field]
  if not isinstance(text, str):
    return Rejected(raw.source, TEXT_NOT_STRING, excerpt(decoded),
                    f"field {text_field!r} is {type(text).__name__}")
  doc_id = None
  if id_field:
    doc_id = obj.get(id_field)
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)) or str(doc_id) == "":
      return Rejected(raw.source, INVALID_ID, excerpt(decoded),
                      f"field {id_field!r} missing or not a string/integer")
    doc_id = str(doc_id)  # 1 and "1" are the same id (ids need not be unique)
    problem = _id_problem(doc_id, id_field, max_id_bytes)
    if problem:
      return Rejected(raw.source, INVALID_ID, excerpt(decoded), problem)
  return _make_document(raw.source, text, doc_id, _numeric_fields(obj, keep_fields),
                        max_doc_bytes)


def _make_document(source, text, doc_id, fields, max_doc_bytes):
  if not is_valid_unicode(text):
    return Rejected(source, INVALID_TEXT, excerpt(text),
                    "text is not valid Unicode (lone surrogate)")
  if not has_visible_char(text):
    return Rejected(source, EMPTY_TEXT, excerpt(text), _invisible_detail(text))
  if len(text.encode("utf-8")) > max_doc_bytes:
    return Rejected(source, TOO_LARGE, excerpt(text),
                    f"text is over --max_doc_bytes={max_doc_bytes}")
  return Document(id=doc_id if doc_id is not None else text_id(text), text=text,
                  source=source, fields=fields)


def _parse_tfrecord(raw, text_field, id_field, limits, keep_fields):
  import tensorflow as tf  # Imported lazily: only tfrecord inputs need it.
  max_doc_bytes, max_id_bytes = limits
  try:
    example = tf.train.Example.FromString(raw.payload)
  except Exception as e:  # protobuf raises DecodeError, a plain Exception subclass.
    return Rejected(raw.source, INVALID_TFRECORD, excerpt(raw.payload), str(e)[:200])
  feats = example.features.feature
  if text_field not in feats:
    return Rejected(raw.source, MISSING_TEXT_FIELD, excerpt(raw.payload),
                    f"no feature {text_field!r} (set --text_field)")
  values = feats[text_field].bytes_list.value
  if len(values) != 1:
    return Rejected(raw.source, TEXT_NOT_STRING, excerpt(raw.payload),
                    f"feature {text_field!r} must hold exactly one bytes value")
  try:
    text = values[0].decode("utf-8")
  except UnicodeDecodeError as e:
    return Rejected(raw.source, INVALID_UTF8, excerpt(values[0]), str(e))
  doc_id = None
  if id_field:
    f = feats.get(id_field)
    if f is not None and f.bytes_list.value:
      try:
        doc_id = f.bytes_list.value[0].decode("utf-8")
      except UnicodeDecodeError as e:  # A replaced id could collide with another.
        return Rejected(raw.source, INVALID_ID, excerpt(f.bytes_list.value[0]),
                        f"feature {id_field!r} is not valid UTF-8: {e}")
    elif f is not None and f.int64_list.value:
      doc_id = str(f.int64_list.value[0])
    if not doc_id:
      return Rejected(raw.source, INVALID_ID, excerpt(raw.payload),
                      f"feature {id_field!r} missing or empty")
    problem = _id_problem(doc_id, id_field, max_id_bytes)
    if problem:
      return Rejected(raw.source, INVALID_ID, excerpt(raw.payload), problem)
  fields = {}
  for name in keep_fields:
    f = feats.get(name)
    value = None
    if f is not None and f.float_list.value:
      value = _finite(f.float_list.value[0])
    elif f is not None and f.int64_list.value:
      value = float(f.int64_list.value[0])
    if value is not None:
      fields[name] = value
  return _make_document(raw.source, text, doc_id, fields, max_doc_bytes)


def score_record(doc: Document, selected: bool, rank: Optional[int]) -> Dict[str, Any]:
  """One row of scores/ as a dict: the id, where it was read (ids may repeat), every score,
  and the selection outcome. Written as a JSON line (score_row) or a Parquet row."""
  row = {"id": doc.id, "source": safe_str(doc.source)}
  # JSON has no Infinity/NaN: a non-finite score (e.g. the perplexity of a document too
  # short to predict) is written as null; copied fields hold none (_copied_fields).
  row.update({k: strict_json(v) for k, v in doc.scores.items()})
  row.update({k: strict_json(v) for k, v in doc.extra.items()})
  row["selected"] = selected
  row["rank"] = rank
  return row


def strict_json(value):
  """`value` with every non-finite float in it as None (null)."""
  if isinstance(value, float):
    return value if math.isfinite(value) else None
  if isinstance(value, (list, tuple)):
    return [strict_json(v) for v in value]
  if isinstance(value, dict):
    return {k: strict_json(v) for k, v in value.items()}
  return value


def score_row(doc: Document, selected: bool, rank: Optional[int]) -> str:
  """One line of scores/ (see score_record): strict JSON."""
  return json.dumps(score_record(doc, selected, rank), ensure_ascii=False, allow_nan=False)
