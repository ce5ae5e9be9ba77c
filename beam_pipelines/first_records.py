"""Loud failures before the run: the first records of the first inputs are parsed with
the run's fields, and when none yields a document because of a field, one line names
the fields seen and the option to set (checks.py calls it right after matching)."""
from __future__ import annotations

from typing import List, Optional

from beam_pipelines.checks import UsageError
from beam_pipelines.config import JobConfig
from transforms import field_paths

# check_first_records reads at most this many records of each of the first files.
FIRST_FILES, FIRST_RECORDS = 3, 100
# Names a text field often has in public corpora, tried first for the suggestion.
_TEXT_NAMES = ("text", "raw_content", "content", "contents", "body", "document", "article",
               "passage", "markdown", "html")


def first_input_paths(inputs) -> List[str]:
  """The first FIRST_FILES readable paths of --input, in match order."""
  return [m.path for m in inputs.matches if not m.reason][:FIRST_FILES]


def _record_fields(raw) -> dict:
  """{field: a sample value} of a raw record (a JSON object's keys and paths, an Example's
  features); {} for a record that has none (plain text, or one that does not parse)."""
  import json
  try:
    if raw.fmt == "tfrecord":
      import tensorflow as tf
      feats = tf.train.Example.FromString(raw.payload).features.feature
      out = {}
      for name, f in sorted(feats.items()):  # a proto map has no order
        values = f.bytes_list.value or f.int64_list.value or f.float_list.value
        value = values[0] if len(values) == 1 else list(values)
        out[name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
      return out
    if raw.fmt in ("text", "wet"):
      return {}
    obj = json.loads(raw.payload)
    # Nested objects' keys as dotted paths too (meta.url): the options accept them.
    return dict(field_paths.iter_paths(obj)) if isinstance(obj, dict) else {}
  except Exception:  # pylint: disable=broad-except  (the pipeline rejects it, with why)
    return {}


def _suggest(fields: dict, want_text: bool) -> Optional[str]:
  """The seen field most likely to be the text (the longest strings, a usual name
  first) or the id (string or integer values, a name with "id" first)."""
  def is_text(v):
    return isinstance(v, str) and v.strip()
  if want_text:
    texts = {n: v for n, v in fields.items() if all(is_text(x) for x in v)}
    for name in _TEXT_NAMES:
      if name in texts:
        return name
    return max(texts, key=lambda n: sum(len(x) for x in texts[n]), default=None)
  ids = [n for n, v in fields.items()
         if all((is_text(x) or isinstance(x, int)) and not isinstance(x, bool) for x in v)]
  named = [n for n in ids if n.lower() == "id" or n.lower().endswith(("id", "_id"))]
  return (named or ids or [None])[0]


def check_first_records(job: JobConfig, inputs) -> None:
  """Parses the first records of the first input files (read.iter_file_records, then
  records.parse_record, as the pipeline does) with the given --text_field and
  --id_field. When none yields a document because of a field, one error names the
  fields seen and the option to set, instead of a run that rejects every record."""
  import contextlib
  from transforms import read as read_lib
  from transforms import records
  field_reasons = {records.MISSING_TEXT_FIELD, records.TEXT_NOT_STRING, records.INVALID_ID}
  seen, reasons, parsed = {}, {}, 0
  for path in first_input_paths(inputs):
    try:
      fmt = read_lib.format_of(path, job.input_format)
      file_records = read_lib.iter_file_records(path, fmt, job.max_doc_bytes)
      with contextlib.closing(file_records):
        for i, raw in enumerate(file_records):
          if i >= FIRST_RECORDS:
            break
          if isinstance(raw, records.Rejected):
            continue
          out = records.parse_record(
              raw, text_field=job.text_field, id_field=job.id_field,
              max_doc_bytes=job.max_doc_bytes, max_id_bytes=job.max_id_bytes)
          if isinstance(out, records.Document):
            return
          parsed += 1
          reasons[out.reason] = reasons.get(out.reason, 0) + 1
          for name, value in _record_fields(raw).items():
            seen.setdefault(name, []).append(value)
    except Exception:  # pylint: disable=broad-except  (an unreadable file: the run says)
      continue
  if not parsed or not field_reasons & set(reasons):
    return  # Nothing read, or rejected for other reasons: the run reports those.
  names = ", ".join(list(seen)[:20]) + (", ..." if len(seen) > 20 else "")
  where = f"the first {parsed} record{'s' * (parsed != 1)} of {', '.join(first_input_paths(inputs))[:200]}"
  if reasons.get(records.MISSING_TEXT_FIELD) or reasons.get(records.TEXT_NOT_STRING):
    guess = _suggest({n: v for n, v in seen.items() if n != job.text_field}, True)
    problem = (f'no record has "{job.text_field}"' if job.text_field not in seen else
               f'no record has "{job.text_field}" as a string')
    fix = f"pass --text_field={guess}" if guess else "pass --text_field=FIELD"
  else:
    guess = _suggest({n: v for n, v in seen.items() if n != job.id_field}, False)
    problem = (f'no record has "{job.id_field}"' if job.id_field not in seen else
               f'no record has a usable id in "{job.id_field}" (a string or integer within '
               f"--max_id_bytes)")
    fix = (f"pass --id_field={guess}" if guess else
           "pass --id_field=FIELD, or leave it out to use a hash of the text")
  raise UsageError(f"{problem} in {where}; fields seen: {names or 'none'}; {fix}")
