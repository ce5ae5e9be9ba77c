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
import os
import re
import threading
from typing import Iterable, Iterator, List, Optional, Sequence, Union

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil

from transforms import records
from transforms import metrics
from transforms.metrics import stage_clock

_LOG = logging.getLogger(__name__)

REJECTED_TAG = "rejected"
FORMATS = records.INPUT_FORMATS
_EXTENSIONS = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".txt": "text", ".text": "text",
    ".tfrecord": "tfrecord", ".tfrecords": "tfrecord",
}
COMPRESSED_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".lzma", ".xz")
_BOM = b"\xef\xbb\xbf"
# Listing a pattern longer than this is taken as a hang (no network, no credentials):
# a listing of 100,000 gs:// objects takes well under a minute.
MATCH_TIMEOUT_S = 300.0


class InputError(ValueError):
  """Bad --input / --input_format; the message says what to fix."""


def split_patterns(input_arg: str) -> List[str]:
  return [p.strip() for p in input_arg.split(",") if p.strip()]


def format_of(path: str, input_format: str) -> str:
  """The record format of one file: --input_format, or by extension when auto."""
  if input_format != "auto":
    return input_format
  name = path.lower()
  for suffix in COMPRESSED_SUFFIXES:
    if name.endswith(suffix):
      name = name[: -len(suffix)]
  for ext, fmt in _EXTENSIONS.items():
    if name.endswith(ext):
      return fmt
  raise InputError(
      f"cannot tell the format of {path} from its extension; pass "
      "--input_format=jsonl|text|tfrecord")


def _has_glob(pattern: str) -> bool:
  return re.search(r"[*?\[]", pattern) is not None


def _match(pattern: str, limit: Optional[int], timeout_s: float) -> list:
  """FileSystems.match of one pattern; any failure or a hang becomes an InputError."""
  box = {}

  def target():
    try:
      box["files"] = FileSystems.match([pattern], [limit])[0].metadata_list
    except Exception as e:  # pylint: disable=broad-except
      box["error"] = e

  # A daemon thread, so that a listing stuck on the network cannot keep the job alive.
  thread = threading.Thread(target=target, name="match-input", daemon=True)
  thread.start()
  thread.join(timeout_s)
  if thread.is_alive():
    raise InputError(f"listing --input pattern {pattern!r} took over {timeout_s:.0f} s; "
                     "check the path, the network and the credentials")
  if "error" in box:
    e = box["error"]
    raise InputError(f"cannot list --input pattern {pattern!r}: "
                     f"{type(e).__name__}: {str(e)[:500]}")
  return box["files"]


def _is_directory(pattern: str, files, timeout_s: float) -> bool:
  """Whether a pattern without a glob names a directory: a local one (matched as itself),
  or a gs:// prefix that matches nothing as an object but has objects under it."""
  if _has_glob(pattern) or pattern.endswith(("/", "\\")):
    return False  # Beam reads "DIR/" as "DIR/*".
  if any(os.path.isdir(m.path) for m in files):
    return True
  return not files and bool(_match(pattern + "/*", 1, timeout_s))


def check_inputs(patterns: Sequence[str], input_format: str,
                 timeout_s: float = MATCH_TIMEOUT_S) -> int:
  """Fails early, with a clear message, when a pattern matches nothing, names a
  directory or cannot be listed, or a format is unknown. Returns the total input size in
  bytes (for progress estimates)."""
  if input_format not in FORMATS:
    raise InputError(f"--input_format must be one of {', '.join(FORMATS)}")
  if not patterns:
    raise InputError("--input is empty")
  total = 0
  for pattern in patterns:
    matched = _match(pattern, None, timeout_s)
    if _is_directory(pattern, matched, timeout_s):
      raise InputError(f"--input {pattern!r} is a directory; use a glob such as "
                       f"{pattern.rstrip('/')}/* or {pattern.rstrip('/')}/*.jsonl")
    files = [m for m in matched if not m.path.endswith("/")]
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
    return io.BufferedReader(_ZstdReader(raw))
  return raw


class _ZstdReader(io.RawIOBase):
  """Decompresses a .zst stream of one or more frames; raises EOFError when the input ends
  inside a frame.

  zstandard's stream_reader and read_to_iter end silently on a truncated frame; a
  decompressobj has `.eof`, which tells a complete frame from a cut one. Input is fed in
  small pieces because decompress() returns all the output of a piece at once.
  """
  _PIECE = 1 << 14

  def __init__(self, raw):
    import zstandard
    super().__init__()
    self._raw = raw
    self._dctx = zstandard.ZstdDecompressor()
    self._frame = None      # the decompressor of the current frame
    self._input = b""       # compressed bytes not yet fed
    self._output = memoryview(b"")

  def readable(self):
    return True

  def readinto(self, buffer):
    while not self._output:
      if not self._decompress_more():
        return 0
    n = min(len(buffer), len(self._output))
    buffer[:n] = self._output[:n]
    self._output = self._output[n:]
    return n

  def _decompress_more(self) -> bool:
    """Decompresses the next piece; False at the clean end of the stream."""
    if not self._input:
      self._input = self._raw.read(self._PIECE)
      if not self._input:
        if self._frame is not None and not self._frame.eof:
          raise EOFError("zstd stream ends inside a frame (the file is truncated)")
        return False
    if self._frame is None or self._frame.eof:
      self._frame = self._dctx.decompressobj()
    piece, self._input = self._input, b""
    self._output = memoryview(self._frame.decompress(piece))
    if self._frame.eof:
      self._input = self._frame.unused_data  # the start of the next frame, if any
    return True

  def close(self):
    try:
      self._raw.close()
    finally:
      super().close()


def _read_lines(handle, max_bytes: int):
  """Yields (line_number, bytes, too_long) without reading an over-long line into memory.

  The limit applies to the line without its terminator (\\n or \\r\\n). A leading UTF-8
  BOM is dropped. A last line without a terminator is yielded only once the end of the
  file is confirmed, so that a line cut by a truncated file is never taken for a record.
  """
  lineno = 0
  while True:
    line = handle.readline(max_bytes + 2)
    if not line:
      return
    lineno += 1
    cut_at_limit = len(line) == max_bytes + 2 and not line.endswith(b"\n")
    if lineno == 1 and line.startswith(_BOM):
      line = line[len(_BOM):]
    if cut_at_limit:
      # Over the limit: skip the rest of the line in bounded pieces, keep a prefix.
      prefix = line[: records.EXCERPT_CHARS * 4]
      rest = line
      while rest and not rest.endswith(b"\n"):
        rest = handle.readline(1 << 20)
      yield lineno, prefix, True
      continue
    if not line.endswith(b"\n") and handle.read(1):
      # readline stops short only at the end of the file; anything else is a broken reader.
      raise IOError(f"line {lineno} ended before its terminator")
    content = line.rstrip(b"\r\n")
    if len(content) > max_bytes:
      yield lineno, content[: records.EXCERPT_CHARS * 4], True
      continue
    yield lineno, content, False


def iter_file_records(path: str, fmt: str, max_doc_bytes: int
                      ) -> Iterator[Union[records.RawRecord, records.Rejected]]:
  """The records of one file in format `fmt`, in file order: RawRecords, and a Rejected
  for each line over max_doc_bytes or blank jsonl line. A file that cannot be read raises
  where the damage starts (what was yielded before stays valid); lines follow _read_lines.
  Shared by the pipeline's reader and --estimate_only, so that both see the same records.
  """
  with open_decompressed(path) as handle:
    if fmt == "tfrecord":
      count = 0
      while True:
        payload = _TFRecordUtil.read_record(handle)
        if payload is None:
          return
        count += 1
        yield records.RawRecord(f"{path}:#{count}", payload, fmt)
    for lineno, payload, too_long in _read_lines(handle, max_doc_bytes):
      if too_long:
        yield records.Rejected(f"{path}:{lineno}", records.TOO_LARGE, records.excerpt(payload),
                               f"line is over --max_doc_bytes={max_doc_bytes}")
      elif not payload.strip() and fmt == "jsonl":
        yield records.Rejected(f"{path}:{lineno}", records.EMPTY_TEXT, "", "blank line")
      else:
        yield records.RawRecord(f"{path}:{lineno}", payload, fmt)


class _ReadFileRecords(beam.DoFn):
  """One matched file -> RawRecords; a file that cannot be read -> a rejection."""

  def __init__(self, input_format: str, max_doc_bytes: int):
    self._format = input_format
    self._max = max_doc_bytes

  def process(self, metadata):
    stage_clock("read")
    path = metadata.path
    count = 0
    try:
      fmt = format_of(path, self._format)  # Checked up front, but files may change.
      for record in iter_file_records(path, fmt, self._max):
        count += 1
        if isinstance(record, records.Rejected):
          yield beam.pvalue.TaggedOutput(REJECTED_TAG, record)
        else:
          yield record
    except Exception as e:  # pylint: disable=broad-except
      # A corrupt or truncated file: report it, keep what was read before the damage.
      _LOG.warning("Cannot read %s after %d records: %s", path, count, e)
      yield beam.pvalue.TaggedOutput(REJECTED_TAG, records.Rejected(
          f"{path}:after#{count}", records.UNREADABLE_FILE, "",
          f"{type(e).__name__}: {str(e)[:300]}"))


class _Validate(beam.DoFn):
  def __init__(self, text_field, id_field, max_doc_bytes, keep_fields, copy_fields=()):
    self._args = dict(text_field=text_field, id_field=id_field,
                      max_doc_bytes=max_doc_bytes, keep_fields=tuple(keep_fields),
                      copy_fields=tuple(copy_fields))

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
    input_format: auto | jsonl | text | tfrecord.
    text_field: the JSON field / tf.train.Example feature holding the text.
    id_field: optional field holding the document id (else a hash of the text).
    max_doc_bytes: longer records are rejected as too_large.
    keep_fields: numeric fields to carry on the Document (e.g. a teacher score).
    copy_fields: fields copied as they are into Document.extra (--keep_fields).

  Returns:
    A dict with `documents` (valid Documents) and `rejected` (Rejected records).
  """

  def __init__(self, patterns: Sequence[str], input_format: str = "auto",
               text_field: str = "text", id_field: Optional[str] = None,
               max_doc_bytes: int = 10 * 1024 * 1024, keep_fields: Iterable[str] = (),
               copy_fields: Iterable[str] = ()):
    super().__init__()
    self._patterns = list(patterns)
    self._format = input_format
    self._text_field = text_field
    self._id_field = id_field
    self._max = max_doc_bytes
    self._keep = tuple(keep_fields)
    self._copy = tuple(copy_fields)

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
                     self._text_field, self._id_field, self._max, self._keep, self._copy)
                 ).with_outputs(REJECTED_TAG, main="documents"))
    rejected = ((raw[REJECTED_TAG] | "CountReadRejected" >> beam.Map(_count_read),
                 validated[REJECTED_TAG])
                | "FlattenRejected" >> beam.Flatten()
                | "CountRejected" >> beam.Map(_count_rejected))
    return {"documents": validated.documents, "rejected": rejected}
