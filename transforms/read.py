"""Reading and validating input: files -> valid Documents, plus rejected records.

Files are read one per DoFn call (like seqio and the C4 pipeline) so that every record
keeps its file and line number for the dead-letter output; a billion-document corpus is
many shards, which spread over workers after the Reshuffle.
"""
from __future__ import annotations

import bz2
import gzip
import io
import logging
import lzma
from typing import Iterable, List, Optional, Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil

from transforms import records
from transforms.metrics import stage_clock

_LOG = logging.getLogger(__name__)

REJECTED_TAG = "rejected"
FORMATS = ("auto", "jsonl", "text", "tfrecord")
_EXTENSIONS = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".txt": "text", ".text": "text",
    ".tfrecord": "tfrecord", ".tfrecords": "tfrecord",
}
_COMPRESSED = (".gz", ".bz2", ".zst", ".zstd", ".lzma", ".xz")


class InputError(ValueError):
  """Bad --input / --input_format; the message says what to fix."""


def split_patterns(input_arg: str) -> List[str]:
  return [p.strip() for p in input_arg.split(",") if p.strip()]


def format_of(path: str, input_format: str) -> str:
  """The record format of one file: --input_format, or by extension when auto."""
  if input_format != "auto":
    return input_format
  name = path.lower()
  for suffix in _COMPRESSED:
    if name.endswith(suffix):
      name = name[: -len(suffix)]
  for ext, fmt in _EXTENSIONS.items():
    if name.endswith(ext):
      return fmt
  raise InputError(
      f"cannot tell the format of {path} from its extension; pass "
      "--input_format=jsonl|text|tfrecord")


def check_inputs(patterns: Sequence[str], input_format: str) -> int:
  """Fails early, with a clear message, when a pattern matches nothing or a format is
  unknown. Returns the total input size in bytes (for progress estimates)."""
  if input_format not in FORMATS:
    raise InputError(f"--input_format must be one of {', '.join(FORMATS)}")
  if not patterns:
    raise InputError("--input is empty")
  total = 0
  for pattern, result in zip(patterns, FileSystems.match(patterns)):
    files = [m for m in result.metadata_list if not m.path.endswith("/")]
    if not files:
      raise InputError(f"--input pattern {pattern!r} matches no files")
    for m in files:
      format_of(m.path, input_format)
      total += m.size_in_bytes
  return total


def open_decompressed(path: str):
  """Opens a file through Beam's FileSystems, decompressing by extension.

  Python's own decompressors are used (not Beam's CompressedFile) because they support
  readline(limit), which bounds the memory an over-long line can take.
  """
  raw = FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
  name = path.lower()
  if name.endswith(".gz"):
    return gzip.GzipFile(fileobj=raw)
  if name.endswith(".bz2"):
    return bz2.BZ2File(raw)
  if name.endswith((".xz", ".lzma")):
    return lzma.LZMAFile(raw)
  if name.endswith((".zst", ".zstd")):
    import zstandard
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw))
  return raw


def _read_lines(handle, max_bytes: int):
  """Yields (line_number, bytes) without reading an over-long line into memory."""
  lineno = 0
  while True:
    line = handle.readline(max_bytes + 1)
    if not line:
      return
    lineno += 1
    if len(line) > max_bytes and not line.endswith(b"\n"):
      # Over the limit: skip the rest of the line in bounded pieces, keep a prefix.
      prefix = line[: records.EXCERPT_CHARS * 4]
      while line and not line.endswith(b"\n"):
        line = handle.readline(1 << 20)
      yield lineno, prefix, True
      continue
    yield lineno, line.rstrip(b"\r\n"), False


class _ReadFileRecords(beam.DoFn):
  """One matched file -> RawRecords; a file that cannot be read -> a rejection."""

  def __init__(self, input_format: str, max_doc_bytes: int):
    self._format = input_format
    self._max = max_doc_bytes

  def process(self, metadata):
    stage_clock("read")
    path = metadata.path
    fmt = format_of(path, self._format)
    count = 0
    try:
      with open_decompressed(path) as handle:
        if fmt == "tfrecord":
          while True:
            payload = _TFRecordUtil.read_record(handle)
            if payload is None:
              break
            count += 1
            yield records.RawRecord(f"{path}:#{count}", payload, fmt)
        else:
          for lineno, payload, too_long in _read_lines(handle, self._max):
            count += 1
            if too_long:
              yield beam.pvalue.TaggedOutput(REJECTED_TAG, records.Rejected(
                  f"{path}:{lineno}", records.TOO_LARGE, records.excerpt(payload),
                  f"line is over --max_doc_bytes={self._max}"))
            elif not payload.strip() and fmt == "jsonl":
              yield beam.pvalue.TaggedOutput(REJECTED_TAG, records.Rejected(
                  f"{path}:{lineno}", records.EMPTY_TEXT, "", "blank line"))
            else:
              yield records.RawRecord(f"{path}:{lineno}", payload, fmt)
    except Exception as e:  # A corrupt gzip or TFRecord: report it, keep what was read.
      _LOG.warning("Cannot read %s after %d records: %s", path, count, e)
      yield beam.pvalue.TaggedOutput(REJECTED_TAG, records.Rejected(
          f"{path}:after#{count}", records.UNREADABLE_FILE, "",
          f"{type(e).__name__}: {str(e)[:300]}"))


class _Validate(beam.DoFn):
  def __init__(self, text_field, id_field, max_doc_bytes, keep_fields):
    self._args = dict(text_field=text_field, id_field=id_field,
                      max_doc_bytes=max_doc_bytes, keep_fields=tuple(keep_fields))

  def process(self, raw):
    stage_clock("read")
    out = records.parse_record(raw, **self._args)
    if isinstance(out, records.Rejected):
      yield beam.pvalue.TaggedOutput(REJECTED_TAG, out)
    else:
      beam.metrics.Metrics.counter("select_data", "valid").inc()
      yield out


def _count_rejected(rejected: records.Rejected):
  beam.metrics.Metrics.counter("select_data", f"rejected:{rejected.reason}").inc()
  return rejected


def _count_read(x):
  beam.metrics.Metrics.counter("select_data", "read").inc()
  return x


class ReadDocuments(beam.PTransform):
  """Reads and validates documents.

  Args:
    patterns: file patterns (local or any Beam filesystem such as gs://); .gz and other
      compressions are read transparently.
    input_format: auto | jsonl | text | tfrecord.
    text_field: the JSON field / tf.train.Example feature holding the text.
    id_field: optional field holding the document id (else a hash of the text).
    max_doc_bytes: longer records are rejected as too_large.
    keep_fields: numeric fields to carry on the Document (e.g. a teacher score).

  Returns:
    A dict with `documents` (valid Documents) and `rejected` (Rejected records).
  """

  def __init__(self, patterns: Sequence[str], input_format: str = "auto",
               text_field: str = "text", id_field: Optional[str] = None,
               max_doc_bytes: int = 10 * 1024 * 1024, keep_fields: Iterable[str] = ()):
    super().__init__()
    self._patterns = list(patterns)
    self._format = input_format
    self._text_field = text_field
    self._id_field = id_field
    self._max = max_doc_bytes
    self._keep = tuple(keep_fields)

  def expand(self, pbegin):
    files = (pbegin
             | "Patterns" >> beam.Create(self._patterns)
             | "MatchFiles" >> fileio.MatchAll()
             | "DropDirectories" >> beam.Filter(lambda m: not m.path.endswith("/"))
             # Spread files over workers before the expensive steps.
             | "ReshuffleFiles" >> beam.Reshuffle())
    raw = files | "ReadFileRecords" >> beam.ParDo(
        _ReadFileRecords(self._format, self._max)).with_outputs(REJECTED_TAG, main="raw")
    validated = (raw.raw
                 | "CountRead" >> beam.Map(_count_read)
                 | "Validate" >> beam.ParDo(_Validate(
                     self._text_field, self._id_field, self._max, self._keep)
                 ).with_outputs(REJECTED_TAG, main="documents"))
    rejected = ((raw[REJECTED_TAG] | "CountReadRejected" >> beam.Map(_count_read),
                 validated[REJECTED_TAG])
                | "FlattenRejected" >> beam.Flatten()
                | "CountRejected" >> beam.Map(_count_rejected))
    return {"documents": validated.documents, "rejected": rejected}
