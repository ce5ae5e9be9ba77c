"""Parsing and validating one input record (JSON Lines, text or a tf.train.Example; the
other readers' rows arrive as JSON objects, transforms/readers.py) into
a Document or a Rejected with its reason: pure Python, and total (parse_record never
raises). transforms/records.py re-exports it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import unicodedata
from typing import Any, Dict, Mapping, Optional

from transforms.field_paths import get_path, lookup, top_level
from transforms.record_types import (DUPLICATE_KEY, EMPTY_TEXT, INVALID_ID, INVALID_JSON,
                                     INVALID_RECORD, INVALID_TEXT, INVALID_TFRECORD,
                                     INVALID_UTF8, MAX_ID_BYTES, MISSING_TEXT_FIELD,
                                     NOT_AN_OBJECT, TEXT_NOT_STRING, TOO_LARGE, Document,
                                     RawRecord, Rejected, excerpt, is_valid_unicode, text_id)

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
    value = get_path(obj, name)
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
  return {name: get_path(obj, name) for name in names}


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
    if getattr(raw, "fmt", None) == "wet":  # readers.iter_wet: the text and WARC fields
      text_field, id_field = "text", id_field or "warc_record_id"
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
  named = (text_field, id_field) + tuple(keep_fields) + tuple(copy_fields)
  repeated = sorted(getattr(obj, "repeated", set()).intersection(
      named + tuple(top_level(n) for n in named if n)))
  if repeated:
    return Rejected(raw.source, DUPLICATE_KEY, excerpt(decoded),
                    f"key {repeated[0]!r} appears more than once in the object")
  found, text = lookup(obj, text_field)
  if not found:
    return Rejected(raw.source, MISSING_TEXT_FIELD, excerpt(decoded),
                    f"no field {text_field!r} (set --text_field)")
  if not isinstance(text, str):
    return Rejected(raw.source, TEXT_NOT_STRING, excerpt(decoded),
                    f"field {text_field!r} is {type(text).__name__}")
  doc_id = None
  if id_field:
    doc_id = get_path(obj, id_field)
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
