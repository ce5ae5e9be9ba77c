"""Reading and validating input: files -> valid Documents, plus rejected records.

Files are read one per DoFn call (like seqio and the C4 pipeline) so that every record
keeps its file and line number for the dead-letter output; a billion-document corpus is
many shards, which spread over workers after the Reshuffle.
"""
from __future__ import annotations

import logging
import os
from typing import Iterable, Iterator, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil

from transforms import field_paths
from transforms import input_files
from transforms import readers
from transforms import records
from transforms import metrics
from transforms.decompress import open_decompressed
from transforms.input_files import (MATCH_TIMEOUT_S, InputError, InputFiles,  # noqa: F401
                                    has_glob, is_remote, split_patterns)
from transforms.metrics import stage_clock

# The public names, input_files' and decompress.py's re-exported ones included.
__all__ = ["REJECTED_TAG", "FORMATS", "COMPRESSED_SUFFIXES", "format_of", "checked_inputs",
           "check_inputs", "iter_file_records", "ReadDocuments", "open_decompressed",
           "MATCH_TIMEOUT_S", "InputError", "InputFiles", "has_glob", "is_remote",
           "split_patterns"]

_LOG = logging.getLogger(__name__)

REJECTED_TAG = "rejected"
FORMATS = records.INPUT_FORMATS
_EXTENSIONS = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".txt": "text", ".text": "text",
    ".tfrecord": "tfrecord", ".tfrecords": "tfrecord",
    ".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".tsv": "tsv", ".wet": "wet",
}
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".lzma", ".xz")
_BOM = b"\xef\xbb\xbf"


def format_of(path: str, input_format: str) -> str:
  """The record format of one file: --input_format, or by extension when auto."""
  name = path.lower()
  compressed = name.endswith(COMPRESSED_SUFFIXES)
  for suffix in COMPRESSED_SUFFIXES:
    if name.endswith(suffix):
      name = name[: -len(suffix)]
  fmt = input_format
  if fmt == "auto":
    fmt = next((f for ext, f in _EXTENSIONS.items() if name.endswith(ext)), None)
  if fmt is None:
    raise InputError(
        f"cannot tell the format of {path} from its extension; pass "
        f"--input_format={'|'.join(FORMATS[1:])}")
  if compressed and fmt in readers.UNCOMPRESSED_ONLY:
    raise InputError(f"{path}: a {fmt} file cannot be compressed on top (it compresses "
                     "its own pages); decompress it")
  return fmt


def _is_directory(pattern: str, matches, timeout_s: float) -> bool:
  """Whether a pattern without a glob names a directory: a local one, or a gs:// prefix
  that matches nothing as an object but has objects under it."""
  if has_glob(pattern) or pattern.endswith(("/", "\\")):
    return False  # "DIR/" is read as "DIR/*".
  if not is_remote(pattern):
    return os.path.isdir(pattern)
  return not matches and bool(input_files.bounded(
      lambda: FileSystems.match([pattern + "/*"], [1])[0].metadata_list, pattern, timeout_s))


def checked_inputs(patterns: Sequence[str], input_format: str,
                   timeout_s: float = MATCH_TIMEOUT_S) -> InputFiles:
  """Matches --input once (input_files.find_inputs) and fails early, with a clear
  message, when a pattern matches no file it can read, names a directory or cannot be
  listed, or a format is unknown. Warns about paths read once or reported, not read."""
  if input_format not in FORMATS:
    raise InputError(f"--input_format must be one of {', '.join(FORMATS)}")
  if not patterns:
    raise InputError("--input is empty")
  inputs = input_files.find_inputs(patterns, timeout_s)
  for pattern, matches in inputs.by_pattern:
    if _is_directory(pattern, matches, timeout_s):
      raise InputError(f"--input {pattern!r} is a directory; use a glob such as "
                       f"{pattern.rstrip('/')}/* or {pattern.rstrip('/')}/*.jsonl")
    files = [m for m in matches if not m.reason]
    if not files:
      only = (f" (it matched only {len(matches)} paths that are not readable files, e.g. "
              f"{matches[0].path}: {matches[0].detail})" if matches else "")
      raise InputError(f"--input pattern {pattern!r} matches no files{only}")
    for m in files:
      format_of(m.path, input_format)
  input_files.log_warnings(inputs)
  return inputs


def check_inputs(patterns: Sequence[str], input_format: str,
                 timeout_s: float = MATCH_TIMEOUT_S) -> int:
  """checked_inputs; returns the total input size in bytes (for progress estimates)."""
  return checked_inputs(patterns, input_format, timeout_s).total_bytes


_READ_PIECE = 1 << 20  # bytes asked of a file at a time: the memory is a piece plus one line


def _split_lines(pieces, keep: int):
  """(the first `keep` bytes of a line, the line's length) for each line of a byte stream
  given in pieces. A line ends at \\n, \\r\\n or a lone \\r; a last line without one
  is yielded once the pieces end."""
  head, size, after_cr = [], 0, False
  for piece in pieces:
    if after_cr and piece.startswith(b"\n"):
      piece = piece[1:]  # the \n of a \r\n cut between two pieces
    after_cr = False
    for part in piece.splitlines(keepends=True):  # bytes: only \n, \r\n and \r
      body = part[:-2] if part.endswith(b"\r\n") else part.rstrip(b"\r\n")
      if size < keep:
        head.append(body[: keep - size])
      size += len(body)
      if len(body) < len(part):
        yield b"".join(head), size
        head, size = [], 0
      after_cr = part.endswith(b"\r")
  if head:
    yield b"".join(head), size


def _read_lines(handle, max_bytes: int):
  """Yields (line_number, bytes, too_long) without reading an over-long line into memory.

  Lines end at \\n, \\r\\n or a lone \\r (universal newlines, as Python's text mode: a
  file with CR-only endings is split into its lines, not read as one). The limit applies
  to the line without its terminator. A leading UTF-8 BOM is dropped. A last line without
  a terminator is yielded only once the end of the file is confirmed, so that a line cut
  by a truncated file is never taken for a record; read1 hands over what the file gave
  before any damage.
  """
  read = getattr(handle, "read1", handle.read)
  pieces = iter(lambda: read(_READ_PIECE), b"")
  for lineno, (content, size) in enumerate(_split_lines(pieces, max_bytes + len(_BOM)), 1):
    if lineno == 1 and content.startswith(_BOM):
      content, size = content[len(_BOM):], size - len(_BOM)
    if size > max_bytes:
      yield lineno, content[: records.EXCERPT_CHARS * 4], True
    else:
      yield lineno, content, False


def iter_file_records(path: str, fmt: str, max_doc_bytes: int, columns=None,
                      numeric: Sequence[str] = (), part: int = -1
                      ) -> Iterator[Union[records.RawRecord, records.Rejected]]:
  """The records of one file in format `fmt`, in file order: RawRecords, and a Rejected
  for each line over max_doc_bytes or blank jsonl line. A file that cannot be read raises
  where the damage starts (what was yielded before stays valid); lines follow _read_lines.
  Shared by the pipeline's reader and --estimate_only, so that both see the same records.
  Sources name the file as text: a name that is not UTF-8 is spelt with escapes.
  The other formats (readers.py) read `columns` (all when None; `numeric` ones as
  numbers from CSV) and a Parquet file's row group `part` (all when -1).
  """
  name = records.safe_str(path)
  other = _other_reader(path, name, fmt, max_doc_bytes, columns, numeric, part)
  if other is not None:
    yield from other
    return
  with open_decompressed(path) as handle:
    if fmt == "tfrecord":
      count = 0
      while True:
        payload = _TFRecordUtil.read_record(handle)
        if payload is None:
          return
        count += 1
        yield records.RawRecord(f"{name}:#{count}", payload, fmt)
    for lineno, payload, too_long in _read_lines(handle, max_doc_bytes):
      if too_long:
        yield records.Rejected(f"{name}:{lineno}", records.TOO_LARGE, records.excerpt(payload),
                               f"line is over --max_doc_bytes={max_doc_bytes}")
      elif not payload.strip() and fmt == "jsonl":
        yield records.Rejected(f"{name}:{lineno}", records.EMPTY_TEXT, "", "blank line")
      else:
        yield records.RawRecord(f"{name}:{lineno}", payload, fmt)


def _other_reader(path, name, fmt, max_doc_bytes, columns, numeric, part):
  """The readers.py iterator of a file, or None for the line and TFRecord formats."""
  if fmt == "parquet":
    return readers.iter_parquet(path, name, columns, None if part < 0 else part)
  if fmt == "arrow":
    return readers.iter_arrow(path, name, columns)
  if fmt in ("csv", "tsv"):
    return readers.iter_csv(path, name, "," if fmt == "csv" else "\t", columns, numeric,
                            max_doc_bytes)
  if fmt == "wet":
    return readers.iter_wet(path, name)
  plain = path.lower()
  for suffix in COMPRESSED_SUFFIXES:
    plain = plain[: -len(suffix)] if plain.endswith(suffix) else plain
  if fmt == "jsonl" and plain.endswith(".json") and readers.starts_json_array(path):
    return readers.iter_json_array(path, name)
  return None


def _not_read(path: str, reason: str, detail: str) -> records.Rejected:
  _LOG.warning("Not reading %s: %s", path, detail)
  return records.Rejected(records.safe_str(path), reason, "", detail)


def _part_name(part: int) -> str:
  return "" if part < 0 else f":row_group#{part + 1}"


def _work_items(wire_path: bytes, input_format: str):
  """(wire path, part) for each piece of a file read on its own (readers.work_items)."""
  path = wire_path.decode("utf-8", "surrogateescape")
  try:
    fmt = format_of(path, input_format)
  except InputError:
    return [(wire_path, -1)]  # reported by the reader
  if input_files.problem(path):
    return [(wire_path, -1)]
  return [(wire_path, part) for _, part in readers.work_items(path, fmt)]


def _to_wire(path: str) -> bytes:
  """A path as a pipeline element: bytes, so that a local name that is not UTF-8 (held
  with surrogate escapes) survives Beam's string coder."""
  return path.encode("utf-8", "surrogateescape")


def _problem_after_error(path: str):
  """(reason, detail) when a file that failed to open is gone or not a regular file."""
  if not is_remote(path):
    return input_files.problem(path)
  try:
    gone = not FileSystems.exists(path)
  except Exception:  # pylint: disable=broad-except
    return None
  return (records.MISSING_FILE, "no such object (deleted after the job started)") if gone else None


class _ReadFileRecords(beam.DoFn):
  """One matched path -> RawRecords; a path that is gone or not a regular file (never
  opened), or a file that cannot be read -> a rejection."""

  def __init__(self, input_format: str, max_doc_bytes: int, columns=None, numeric=()):
    self._format = input_format
    self._max = max_doc_bytes
    self._columns = columns
    self._numeric = tuple(numeric)

  def process(self, item):
    stage_clock("read")
    wire_path, part = item
    path = wire_path.decode("utf-8", "surrogateescape")
    found = input_files.problem(path)
    if found:
      yield beam.pvalue.TaggedOutput(REJECTED_TAG, _not_read(path, *found))
      return
    count = 0
    try:
      fmt = format_of(path, self._format)  # Checked up front, but files may change.
      for record in iter_file_records(path, fmt, self._max, self._columns, self._numeric,
                                      part):
        count += 1
        if isinstance(record, records.Rejected):
          yield beam.pvalue.TaggedOutput(REJECTED_TAG, record)
        else:
          yield record
    except Exception as e:  # pylint: disable=broad-except
      found = None if count else _problem_after_error(path)
      if found:  # gone, or replaced by a pipe, since the check above
        yield beam.pvalue.TaggedOutput(REJECTED_TAG, _not_read(path, *found))
        return
      # A corrupt or truncated file: report it, keep what was read before the damage.
      _LOG.warning("Cannot read %s after %d records: %s", path, count, e)
      yield beam.pvalue.TaggedOutput(REJECTED_TAG, records.Rejected(
          f"{records.safe_str(path)}{_part_name(part)}:after#{count}",
          records.UNREADABLE_FILE, "",
          f"{type(e).__name__}: {str(e)[:300]}"))


class _Validate(beam.DoFn):
  def __init__(self, text_field, id_field, max_doc_bytes, keep_fields, copy_fields=(),
               max_id_bytes=records.MAX_ID_BYTES):
    self._args = dict(text_field=text_field, id_field=id_field,
                      max_doc_bytes=max_doc_bytes, keep_fields=tuple(keep_fields),
                      copy_fields=tuple(copy_fields), max_id_bytes=max_id_bytes)

  def process(self, raw):
    stage_clock("read")
    try:
      out = records.parse_record(raw, **self._args)  # Total already; belt and braces.
    except Exception as e:  # pylint: disable=broad-except
      out = records.unexpected(getattr(raw, "source", ""), getattr(raw, "payload", b""), e)
    if isinstance(out, records.Rejected):
      yield beam.pvalue.TaggedOutput(REJECTED_TAG, out)
    else:
      metrics.counter(metrics.VALID).inc()
      yield out


def _count_rejected(rejected: records.Rejected):
  metrics.counter(metrics.REJECTED_PREFIX + rejected.reason).inc()
  return rejected


def _count_read(x):
  metrics.counter(metrics.READ).inc()
  return x


class ReadDocuments(beam.PTransform):
  """Reads and validates documents.

  Args:
    patterns: file patterns (local or any Beam filesystem such as gs://); .gz and other
      compressions are read transparently.
    input_format: one of records.INPUT_FORMATS (auto: by extension).
    text_field: the JSON field / tf.train.Example feature holding the text.
    id_field: optional field holding the document id (else a hash of the text).
    max_doc_bytes: longer records are rejected as too_large.
    keep_fields: numeric fields to carry on the Document (e.g. a teacher score).
    copy_fields: fields copied as they are into Document.extra (--keep_fields).
    max_id_bytes: longer ids (UTF-8) are rejected as invalid_id.
    inputs: what the launcher matched (checked_inputs): read as listed, so that a file
      gone since the check is reported. None: the patterns are matched when the job runs.

  Returns:
    A dict with `documents` (valid Documents) and `rejected` (Rejected records).
  """

  def __init__(self, patterns: Sequence[str], input_format: str = "auto",
               text_field: str = "text", id_field: Optional[str] = None,
               max_doc_bytes: int = 10 * 1024 * 1024, keep_fields: Iterable[str] = (),
               copy_fields: Iterable[str] = (), max_id_bytes: int = records.MAX_ID_BYTES,
               inputs: Optional[InputFiles] = None):
    super().__init__()
    self._patterns = list(patterns)
    self._paths = None if inputs is None else inputs.paths
    self._format = input_format
    self._text_field = text_field
    self._id_field = id_field
    self._max = max_doc_bytes
    self._keep = tuple(keep_fields)
    self._copy = tuple(copy_fields)
    self._max_id = max_id_bytes

  def expand(self, pbegin):
    if self._paths is not None:
      paths = pbegin | "InputPaths" >> beam.Create([_to_wire(p) for p in self._paths])
    else:  # Matched in one step, so that a path two patterns match is read once.
      paths = (pbegin | "Patterns" >> beam.Create([tuple(self._patterns)])
               | "MatchFiles" >> beam.FlatMap(
                   lambda ps: [_to_wire(p) for p in input_files.find_inputs(ps).paths]))
    # Spread files over workers before the expensive steps; a Parquet file is read as
    # its row groups, spread again, so that one large shard uses many workers.
    files = (paths | "ReshuffleFiles" >> beam.Reshuffle()
             | "WorkItems" >> beam.FlatMap(_work_items, self._format)
             | "ReshuffleParts" >> beam.Reshuffle())
    # A dotted path reads its top-level column (a Parquet struct), or the literal column.
    columns = tuple(field_paths.columns_for((self._text_field, self._id_field)
                                            + self._keep + self._copy))
    raw = files | "ReadFileRecords" >> beam.ParDo(
        _ReadFileRecords(self._format, self._max, columns, self._keep)
    ).with_outputs(REJECTED_TAG, main="raw")
    validated = (raw.raw
                 | "CountRead" >> beam.Map(_count_read)
                 | "Validate" >> beam.ParDo(_Validate(
                     self._text_field, self._id_field, self._max, self._keep, self._copy,
                     self._max_id)).with_outputs(REJECTED_TAG, main="documents"))
    rejected = ((raw[REJECTED_TAG] | "CountReadRejected" >> beam.Map(_count_read),
                 validated[REJECTED_TAG])
                | "FlattenRejected" >> beam.Flatten()
                | "CountRejected" >> beam.Map(_count_rejected))
    return {"documents": validated.documents, "rejected": rejected}
