"""Readers of the formats that are not lines of text: Parquet, Arrow IPC, CSV/TSV, Common
Crawl WET and a .json file holding one JSON array.

Each row becomes a RawRecord whose payload is a JSON object of the columns the job needs
(fmt "jsonl", or "wet" so that the WARC record id is the default id), so that
record_parsing validates it exactly like a JSON line. Sources are `path:row` (1-based,
as JSON Lines uses line numbers; a CSV row is named by the line it starts on). A file
that cannot be read raises where the damage starts; what was yielded before stays valid
(transforms/read.py reports it as unreadable_file).
"""
from __future__ import annotations

import csv
import io
import json
import math
from typing import Iterator, Optional, Sequence, Tuple, Union

from transforms import records
from transforms.record_types import INVALID_ROW
from transforms.decompress import _open_raw, open_decompressed

Record = Union[records.RawRecord, records.Rejected]

COLUMNAR = ("parquet", "arrow", "csv", "tsv", "wet")
# Formats that must not be compressed on top (they compress inside, or need to seek).
UNCOMPRESSED_ONLY = ("parquet",)
_BATCH_ROWS = 1024
# A .json array is parsed in memory: larger ones are refused (convert to JSON Lines).
MAX_JSON_ARRAY_BYTES = 1 << 30
WET_FIELDS = ("warc_record_id", "url", "date")


def _json_value(value):
  """A column value as JSON: bytes as UTF-8 text (a lone surrogate marks bytes that are
  not), dates as ISO text, NaN kept as the JSON parsers' NaN (counts as absent)."""
  if isinstance(value, bytes):
    return value.decode("utf-8", "surrogateescape")
  if isinstance(value, dict):
    return {str(k): _json_value(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    if all(isinstance(p, tuple) and len(p) == 2 for p in value) and value:
      return {str(k): _json_value(v) for k, v in value}  # an Arrow map
    return [_json_value(v) for v in value]
  if value is None or isinstance(value, (str, int, float, bool)):
    return value
  if hasattr(value, "isoformat"):
    return value.isoformat()
  return str(value)


def row_record(source: str, row: dict, fmt: str = "jsonl") -> Record:
  """One row (a dict) as a RawRecord holding it as a JSON object; a row whose text is not
  UTF-8 is rejected as invalid_utf8."""
  try:
    payload = json.dumps({k: _json_value(v) for k, v in row.items()}, ensure_ascii=False)
    return records.RawRecord(source, payload.encode("utf-8"), fmt)
  except UnicodeEncodeError as e:
    bad = ", ".join(k for k, v in row.items() if isinstance(v, (str, bytes)) and not
                    records.is_valid_unicode(_json_value(v)))
    return records.Rejected(source, records.INVALID_UTF8, "",
                            f"column(s) {bad or '?'} not valid UTF-8: {str(e)[:200]}")


def _wanted(names: Sequence[str], columns: Optional[Sequence[str]]):
  """The columns to read: those named that exist (all when `columns` is None)."""
  if columns is None:
    return list(names)
  return [c for c in dict.fromkeys(columns) if c in names]


# --- Parquet: one row group per work item.

def row_groups(path: str) -> int:
  """The number of row groups of a Parquet file (raises when its footer is unreadable)."""
  import pyarrow.parquet as pq
  with _open_raw(path) as raw:
    return pq.ParquetFile(raw).metadata.num_row_groups


def iter_parquet(path: str, name: str, columns=None, row_group: Optional[int] = None
                 ) -> Iterator[Record]:
  """The rows of one row group (or of every group, when None), read in batches."""
  import pyarrow.parquet as pq
  with _open_raw(path) as raw:
    # Pages written with a CRC (write_page_checksum) are checked: a flipped bit raises.
    pf = pq.ParquetFile(raw, page_checksum_verification=True)
    meta = pf.metadata
    groups = range(meta.num_row_groups) if row_group is None else [row_group]
    cols = _wanted(pf.schema_arrow.names, columns)
    for group in groups:
      row = sum(meta.row_group(g).num_rows for g in range(group))
      for batch in pf.iter_batches(batch_size=_BATCH_ROWS, row_groups=[group],
                                   columns=cols, use_threads=False):
        for values in batch.to_pylist():
          row += 1
          yield row_record(f"{name}:{row}", values)


# --- Arrow IPC: the stream format (datasets.save_to_disk) or the file format.

def iter_arrow(path: str, name: str, columns=None) -> Iterator[Record]:
  import pyarrow as pa
  with open_decompressed(path) as handle:
    head = handle.read(6)
    if head == b"ARROW1":  # the file format: needs seeking, so read from the raw file
      with _open_raw(path) as raw:
        reader = pa.ipc.open_file(raw)
        batches = (reader.get_batch(i) for i in range(reader.num_record_batches))
        yield from _arrow_rows(name, reader.schema, batches, columns)
      return
    stream = io.BufferedReader(_Prefixed(head, handle))
    reader = pa.ipc.open_stream(stream)
    yield from _arrow_rows(name, reader.schema, reader, columns)


def _arrow_rows(name, schema, batches, columns):
  cols = _wanted(schema.names, columns)
  row = 0
  for batch in batches:
    batch = batch.select(cols)
    for values in batch.to_pylist():
      row += 1
      yield row_record(f"{name}:{row}", values)


class _Prefixed(io.RawIOBase):
  """A stream of `head` then the rest of `handle`."""

  def __init__(self, head: bytes, handle):
    super().__init__()
    self._head, self._handle = head, handle

  def readable(self):
    return True

  def readinto(self, buffer):
    if self._head:
      n = min(len(buffer), len(self._head))
      buffer[:n], self._head = self._head[:n], self._head[n:]
      return n
    data = self._handle.read(len(buffer))
    buffer[: len(data)] = data
    return len(data)


# --- CSV and TSV with a header row.

class BadRow(ValueError):
  pass


def iter_csv(path: str, name: str, delimiter: str, columns=None, numeric=(),
             max_doc_bytes: int = 10 * 1024 * 1024) -> Iterator[Record]:
  """Rows of a CSV/TSV with a header; a row with the wrong number of fields is rejected
  (invalid_row); a field over the limit (e.g. an unclosed quote) ends the file's read.
  `numeric` columns (the teacher field) are read as numbers where they parse."""
  csv.field_size_limit(max(max_doc_bytes + 1, csv.field_size_limit()))
  with open_decompressed(path) as handle:
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", errors="surrogateescape",
                            newline="")
    reader = csv.reader(text, delimiter=delimiter, strict=True)
    header = next(reader, None)
    if header is None:
      return
    if len(set(header)) != len(header):
      raise BadRow(f"the header repeats a column name: {header!r}"[:300])
    keep = [i for i, h in enumerate(header) if columns is None or h in columns]
    start = reader.line_num + 1
    for fields in reader:
      source, start = f"{name}:{start}", reader.line_num + 1
      if len(fields) != len(header):
        yield records.Rejected(source, INVALID_ROW,
                               records.excerpt(delimiter.join(fields)),
                               f"{len(fields)} fields, the header has {len(header)}")
        continue
      row = {header[i]: fields[i] for i in keep}
      for col in numeric:
        if col in row:
          row[col] = _number(row[col])
      yield row_record(source, row)


def _number(text: str):
  try:
    value = float(text)
  except ValueError:
    return text if text.strip() else None
  return value if math.isfinite(value) else None


# --- Common Crawl WET: conversion records.

def iter_wet(path: str, name: str) -> Iterator[Record]:
  """The conversion records of a WET file (text in `text`, the WARC record id, target URI
  and date as warc_record_id, url and date). Decompressed by Python's own gzip, which
  raises on a truncated or corrupt member where fastwarc's own decoder ends quietly; the
  error is held until fastwarc has handed over the whole records it read before it."""
  from fastwarc.warc import ArchiveIterator, WarcRecordType
  with open_decompressed(path) as handle:
    stream = _HeldError(handle)
    records_iter = ArchiveIterator(stream, record_types=WarcRecordType.conversion,
                                   parse_http=False, stream_detect=False,
                                   fsspec_args=False)
    count, short = 0, None
    for rec in records_iter:
      body, headers = rec.reader.read(), rec.headers
      declared = headers.get("Content-Length")
      if declared is None or not declared.strip().isdigit() or int(declared) != len(body):
        short = f"WARC record {count + 1} is cut short ({len(body)} of {declared} bytes)"
        break  # a header or block cut by the end of the stream
      count += 1
      row = {"text": body, "warc_record_id": rec.record_id,
             "url": headers.get("WARC-Target-URI"), "date": headers.get("WARC-Date")}
      yield row_record(f"{name}:#{count}", row, "wet")
    if stream.error is not None:
      raise stream.error
    if short:
      raise ValueError(short)


class _HeldError(io.RawIOBase):
  """A stream that ends where reading `handle` fails, and keeps the error in `.error`."""

  def __init__(self, handle):
    super().__init__()
    # read1: what the decompressor gave before the damage is handed over, not lost.
    self._read = getattr(handle, "read1", handle.read)
    self.error, self._pos = None, 0

  def readable(self):
    return True

  def seekable(self):
    return True

  def tell(self):
    return self._pos

  def seek(self, offset, whence=io.SEEK_SET):
    """Only where the stream is (fastwarc asks for its position this way)."""
    target = {io.SEEK_SET: offset, io.SEEK_CUR: self._pos + offset}.get(whence)
    if target != self._pos:
      raise io.UnsupportedOperation("seek")
    return self._pos

  def readinto(self, buffer):
    if self.error is not None:
      return 0
    try:
      data = self._read(len(buffer))
    except Exception as e:  # pylint: disable=broad-except
      self.error = e
      return 0
    self._pos += len(data)
    buffer[: len(data)] = data
    return len(data)

  def read(self, size=-1):
    if size is None or size < 0:
      size = 1 << 20
    buffer = bytearray(size)
    n = self.readinto(buffer)
    return bytes(buffer[:n])


# --- A .json file holding one JSON array.

def iter_json_array(path: str, name: str) -> Iterator[Record]:
  """The elements of a JSON array, each a record `path:[i]` (1-based); elements before
  damage are kept, the damage raises with its character offset."""
  with open_decompressed(path) as handle:
    data = handle.read(MAX_JSON_ARRAY_BYTES + 1)
  if len(data) > MAX_JSON_ARRAY_BYTES:
    raise ValueError(f"{name} holds one JSON array over {MAX_JSON_ARRAY_BYTES >> 20} MiB; "
                     "convert it to JSON Lines (jq -c '.[]' FILE > FILE.jsonl)")
  text = data.decode("utf-8-sig", "surrogateescape")
  decoder = json.JSONDecoder()
  pos = _skip(text, text.index("[") + 1)
  count = 0
  while pos < len(text) and text[pos] != "]":
    try:
      value, end = decoder.raw_decode(text, pos)
    except ValueError as e:
      raise ValueError(f"JSON array element {count + 1} at character {pos}: {e}") from None
    count += 1
    raw = text[pos:end]
    source = f"{name}:[{count}]"
    if records.is_valid_unicode(raw):
      yield records.RawRecord(source, raw.encode("utf-8"), "jsonl")
    else:
      yield records.Rejected(source, records.INVALID_UTF8, records.excerpt(raw),
                             "element is not valid UTF-8")
    pos = _skip(text, end)
    if pos < len(text) and text[pos] == ",":
      pos = _skip(text, pos + 1)
    elif pos < len(text) and text[pos] != "]":
      raise ValueError(f"expected ',' or ']' at character {pos} after element {count}")
  if pos >= len(text):
    raise ValueError(f"the JSON array ends without ']' after element {count} (truncated)")


def _skip(text: str, pos: int) -> int:
  while pos < len(text) and text[pos] in " \t\r\n":
    pos += 1
  return pos


def starts_json_array(path: str) -> bool:
  """Whether a .json file's first non-blank character is '['."""
  with open_decompressed(path) as handle:
    head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
  return head.startswith(b"[")


def work_items(path: str, fmt: str) -> Sequence[Tuple[str, int]]:
  """The pieces one file is read in: (path, row group) for each row group of a Parquet
  file, else (path, -1), the whole file. A footer that cannot be read gives (path, -1),
  so that the reader reports the file."""
  if fmt == "parquet":
    try:
      return [(path, g) for g in range(row_groups(path))] or [(path, -1)]
    except Exception:  # pylint: disable=broad-except
      pass
  return [(path, -1)]
