"""The reader against damaged and hostile files: truncated compressed files and TFRecords,
bad lines, BOMs, CRLF at the size limit, directories and listings that fail. Every case
must end as documents plus rejections (read = valid + rejected), never as an exception."""
import bz2
import collections
import gzip
import json
import lzma
import os
import threading
import time
import zlib

import apache_beam as beam
import pytest
import zstandard
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.tfrecordio import _TFRecordUtil
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms import read, records
from tests.gcs_emulator import running_emulator


def _read(pattern, docs, rejected, **kw):
  """Runs ReadDocuments; asserts the document texts and rejection reasons (as multisets)
  and that the counters add up."""
  p = TestPipeline(runner="FnApiRunner")
  out = p | read.ReadDocuments([pattern], **kw)
  assert_that(out["documents"] | beam.Map(lambda d: d.text), equal_to(docs), label="docs")
  assert_that(out["rejected"] | beam.Map(lambda r: r.reason), equal_to(rejected),
              label="rejected")
  result = p.run()
  result.wait_until_finish()
  counters = collections.Counter()  # "read" is counted in two steps
  for c in result.metrics().query(MetricsFilter().with_namespace("select_data"))["counters"]:
    counters[c.key.metric.name] += c.committed
  n_rejected = sum(v for k, v in counters.items() if k.startswith("rejected:"))
  assert counters.get("read", 0) == counters.get("valid", 0) + n_rejected
  assert counters.get("valid", 0) == len(docs) and n_rejected == len(rejected)


# --- Truncated and corrupt files: the records before the damage, one unreadable_file.

_LINES = [f"document number {i} with some words {i * 7919 % 1000}" for i in range(20_000)]
_JSONL = "".join(json.dumps({"text": t}) + "\n" for t in _LINES).encode()

# Each codec's compressor, and a decompressor that returns what a cut stream still holds.
_CODECS = {
    ".gz": (gzip.compress, lambda b: zlib.decompressobj(wbits=31).decompress(b)),
    ".bz2": (lambda b: bz2.compress(b, compresslevel=1),  # 100 kB blocks: several
             lambda b: bz2.BZ2Decompressor().decompress(b)),
    ".xz": (lzma.compress, lambda b: lzma.LZMADecompressor().decompress(b)),
    ".zst": (zstandard.ZstdCompressor().compress,
             lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b)),
}


@pytest.mark.parametrize("suffix", sorted(_CODECS))
@pytest.mark.parametrize("keep", [0.6, 0.05])
def test_truncated_compressed_file_keeps_intact_records_and_reports_it(tmp_path, suffix, keep):
  compress, recover = _CODECS[suffix]
  blob = compress(_JSONL)
  cut = blob[: int(len(blob) * keep)]
  path = tmp_path / f"docs.jsonl{suffix}"
  path.write_bytes(cut)
  # The whole lines the cut stream still holds; the partial one after them is lost with
  # the file's unreadable_file, never reported as invalid_json.
  intact = recover(cut).count(b"\n")
  assert intact < len(_LINES)
  _read(str(path), _LINES[:intact], [records.UNREADABLE_FILE])


@pytest.mark.parametrize("suffix", sorted(_CODECS))
def test_whole_compressed_file_is_read_completely(tmp_path, suffix):
  lines = _LINES[:300]
  body = "".join(json.dumps({"text": t}) + "\n" for t in lines).encode()
  # Two compressed streams back to back (as `cat a.gz b.gz`, or a multi-frame .zst).
  path = tmp_path / f"docs.jsonl{suffix}"
  compress = _CODECS[suffix][0]
  path.write_bytes(compress(body[:5000]) + compress(body[5000:]))
  _read(str(path), lines, [])


def _tfrecord_file(path, texts):
  import tensorflow as tf
  offsets = []
  with open(path, "wb") as f:
    for t in texts:
      offsets.append(f.tell())
      ex = tf.train.Example(features=tf.train.Features(feature={"text": tf.train.Feature(
          bytes_list=tf.train.BytesList(value=[t.encode()]))}))
      _TFRecordUtil.write_record(f, ex.SerializeToString())
  return offsets


def test_truncated_tfrecord_keeps_records_before_the_cut(tmp_path):
  path = str(tmp_path / "docs.tfrecord")
  offsets = _tfrecord_file(path, _LINES[:50])
  with open(path, "r+b") as f:
    f.truncate(offsets[30] + 20)  # inside record 31's data
  _read(path, _LINES[:30], [records.UNREADABLE_FILE])


def test_tfrecord_with_bad_data_crc_keeps_records_before_the_damage(tmp_path):
  path = str(tmp_path / "docs.tfrecord")
  offsets = _tfrecord_file(path, _LINES[:50])
  with open(path, "r+b") as f:
    f.seek(offsets[30] + 12 + 5)  # a byte of record 31's data, after its 12-byte header
    byte = f.read(1)
    f.seek(-1, os.SEEK_CUR)
    f.write(bytes([byte[0] ^ 0xFF]))
  # Records after the damage are not read: the README says so.
  _read(path, _LINES[:30], [records.UNREADABLE_FILE])


def test_truncated_compressed_tfrecord_is_reported(tmp_path):
  plain = str(tmp_path / "plain.tfrecord")
  _tfrecord_file(plain, _LINES[:2000])
  blob = zstandard.ZstdCompressor().compress(open(plain, "rb").read())
  path = tmp_path / "docs.tfrecord.zst"
  path.write_bytes(blob[: len(blob) // 2])
  p = TestPipeline(runner="FnApiRunner")
  out = p | read.ReadDocuments([str(path)])

  def check(reasons):
    assert reasons == [records.UNREADABLE_FILE], reasons
  assert_that(out["rejected"] | beam.Map(lambda r: r.reason), check)
  p.run().wait_until_finish()


# --- Hostile lines.

def test_bad_lines_are_rejected_one_by_one_and_counters_add_up(tmp_path):
  lines = [
      b'{"id": "ok1", "text": "fine", "edu": NaN}',
      b'{"id": "a", "text": "x \\ud800"}',                 # lone surrogate in the text
      b'{"id": "\\udfff", "text": "x"}',                   # lone surrogate in the id
      b'{"id": "b", "text": "x", "m": ' + b"[" * 1000 + b"]" * 1000 + b"}",
      b'{"id": "c", "text": "caf\xe9"}',                   # Latin-1, not UTF-8
      b'{"id": "d", "text": "\xed\xa0\x80"}',              # an encoded surrogate
      b"",
      b"\xff\xfe\x00garbage",
      b'{"id": "ok2", "text": "also fine", "edu": 1e999}',
  ]
  path = tmp_path / "bad.jsonl"
  path.write_bytes(b"\n".join(lines) + b"\n")
  _read(str(path), ["fine", "also fine"], [
      records.INVALID_TEXT, records.INVALID_ID, records.INVALID_JSON, records.INVALID_UTF8,
      records.INVALID_UTF8, records.EMPTY_TEXT, records.INVALID_UTF8],
      id_field="id", keep_fields=("edu",))


def test_file_of_unknown_format_is_reported_not_raised(tmp_path):
  # check_inputs refuses it up front; a file that appears after that must not crash.
  (tmp_path / "notes.dat").write_text("hello\n")
  _read(str(tmp_path / "*"), [], [records.UNREADABLE_FILE])


@pytest.mark.parametrize("suffix,fmt", [(".jsonl", "jsonl"), (".txt", "text")])
def test_leading_bom_is_dropped(tmp_path, suffix, fmt):
  body = ['{"text": "first"}', '{"text": "second"}'] if fmt == "jsonl" else ["first", "second"]
  path = tmp_path / f"bom{suffix}"
  path.write_bytes(b"\xef\xbb\xbf" + "\n".join(body).encode() + b"\n")
  _read(str(path), ["first", "second"], [])


def test_size_limit_ignores_the_line_terminator(tmp_path):
  path = tmp_path / "lines.txt"
  path.write_bytes(b"a" * 64 + b"\r\n" + b"b" * 64 + b"\n" + b"c" * 65 + b"\r\n"
                   + b"d" * 65 + b"\n" + b"e" * 200 + b"\r\n" + b"f" * 64)
  _read(str(path), ["a" * 64, "b" * 64, "f" * 64], [records.TOO_LARGE] * 3,
        max_doc_bytes=64)


# --- Paths that are not files (any more): reported, never opened, never waited on.

def _reasons(out):
  return out["rejected"] | beam.Map(lambda r: (os.path.basename(r.source), r.reason))


def test_paths_gone_or_replaced_by_a_pipe_after_the_listing_are_reported(tmp_path):
  for name in ("gone.jsonl", "piped.jsonl", "kept.jsonl"):
    (tmp_path / name).write_text('{"text": "a document"}\n')
  inputs = read.checked_inputs([str(tmp_path / "*.jsonl")], "auto")
  os.remove(tmp_path / "gone.jsonl")
  os.remove(tmp_path / "piped.jsonl")
  os.mkfifo(tmp_path / "piped.jsonl")
  p = TestPipeline(runner="FnApiRunner")
  out = p | read.ReadDocuments(["unused"], inputs=inputs)
  assert_that(out["documents"] | beam.Map(lambda d: d.text), equal_to(["a document"]),
              label="docs")
  assert_that(_reasons(out), equal_to([("gone.jsonl", records.MISSING_FILE),
                                          ("piped.jsonl", records.NOT_A_REGULAR_FILE)]))
  p.run().wait_until_finish()


def test_opening_a_pipe_fails_at_once_instead_of_waiting_for_a_writer(tmp_path):
  fifo = str(tmp_path / "p.jsonl")
  os.mkfifo(fifo)
  box = {}

  def target():
    try:
      list(read.iter_file_records(fifo, "jsonl", 1000))
    except Exception as e:  # pylint: disable=broad-except
      box["error"] = e

  thread = threading.Thread(target=target, daemon=True)
  thread.start()
  thread.join(10)
  stuck = thread.is_alive()
  if stuck:  # the old reader: let it go
    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
  assert not stuck and "not a regular file" in str(box["error"])


# --- check_inputs.

def test_pattern_matching_only_paths_that_are_not_files_is_refused(tmp_path):
  os.mkfifo(tmp_path / "p.jsonl")
  os.symlink("missing.jsonl", tmp_path / "broken.jsonl")
  with pytest.raises(read.InputError, match=r"matches no files \(it matched only 2 paths"):
    read.check_inputs([str(tmp_path / "*.jsonl")], "auto")


def test_directory_input_is_refused_with_a_glob_hint(tmp_path):
  (tmp_path / "a.jsonl").write_text('{"text": "x"}\n')
  (tmp_path / "empty").mkdir()
  for directory in (str(tmp_path), str(tmp_path / "empty")):
    with pytest.raises(read.InputError, match=r"is a directory; use a glob such as .*/\*"):
      read.check_inputs([directory], "auto")
    with pytest.raises(read.InputError, match="is a directory"):
      read.check_inputs([directory], "jsonl")
  assert read.check_inputs([str(tmp_path / "*")], "auto") > 0
  with pytest.raises(read.InputError, match="matches no files"):
    read.check_inputs([str(tmp_path / "nothing*.jsonl")], "auto")


def test_listing_errors_and_hangs_become_input_errors(monkeypatch):
  with pytest.raises(read.InputError, match=r"cannot list --input pattern 'nofs://b/\*'"):
    read.check_inputs(["nofs://b/*"], "auto")
  release = threading.Event()
  monkeypatch.setattr(read.FileSystems, "match", lambda *a, **k: release.wait(30))
  try:
    start = time.monotonic()
    with pytest.raises(read.InputError, match=r"listing --input pattern 'gs://b/\*' took over"):
      read.check_inputs(["gs://b/*"], "auto", timeout_s=0.5)
    assert time.monotonic() - start < 5
  finally:
    release.set()


@pytest.fixture
def gcs_bucket():
  with running_emulator("hardening") as root:
    yield root


def test_gcs_directory_input_is_refused(gcs_bucket):
  with FileSystems.create(f"{gcs_bucket}/in/a.jsonl") as f:
    f.write(b'{"text": "x"}\n')
  with pytest.raises(read.InputError, match="is a directory"):
    read.check_inputs([f"{gcs_bucket}/in"], "auto")
  assert read.check_inputs([f"{gcs_bucket}/in/*"], "auto") > 0
  assert read.check_inputs([f"{gcs_bucket}/in/a.jsonl"], "auto") > 0
  with pytest.raises(read.InputError, match="matches no files"):
    read.check_inputs([f"{gcs_bucket}/nothing"], "auto")
