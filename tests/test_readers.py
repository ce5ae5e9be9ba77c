"""The Parquet, Arrow IPC, CSV/TSV, WET and JSON-array readers against their reference
libraries on files built here: the same records through the real job, row groups as work
items, and damage (a truncated file, a bad row) reported with the file and position."""
import csv
import glob
import gzip
import io
import json
import os

import apache_beam as beam
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from beam_pipelines import select_data
from transforms import read, readers, records
from transforms.record_types import INVALID_ROW

ROWS = [{"id": f"doc-{i}", "text": f"Document {i}: " + "some words here " * (i % 7 + 1),
         "edu": float(i % 5), "url": f"https://example.com/{i}"} for i in range(40)]


def _run_job(tmp_path, pattern, *extra):
  """The whole job (random sampler); its scores/ rows and rejected/ rows."""
  out = str(tmp_path / "out")
  select_data.run([f"--input={pattern}", f"--output={out}", "--sampler=random",
                   "--keep_count=5", *extra], test_pipeline=TestPipeline(runner="FnApiRunner"))

  def rows(sub):
    return [json.loads(l) for f in sorted(glob.glob(os.path.join(out, sub, "*")))
            for l in open(f, encoding="utf-8") if l.strip()]
  return rows("scores"), rows("rejected")


# Each example runs a pipeline: few examples, and no shrinking (minutes of pipelines).
_NO_SHRINK = (Phase.explicit, Phase.reuse, Phase.generate)
_SEEN = {}  # what _read's pipeline saw (FnApiRunner runs in this process)


def _collect(items, name):
  _SEEN[name] = sorted(items)


def _read(pattern, **kw):
  """ReadDocuments alone: (documents as (id, text, extra), rejected as (source, reason))."""
  _SEEN.clear()
  p = TestPipeline(runner="FnApiRunner")
  out = p | read.ReadDocuments([pattern], **kw)
  assert_that(out["documents"] | beam.Map(lambda d: (d.id, d.text, dict(d.extra))),
              lambda items: _collect(items, "docs"), label="docs")
  assert_that(out["rejected"] | beam.Map(lambda r: (r.source, r.reason)),
              lambda items: _collect(items, "rejected"), label="rejected")
  p.run().wait_until_finish()
  return _SEEN["docs"], _SEEN["rejected"]


# --- Parquet.

def _parquet(path, rows, row_group_size):
  pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=row_group_size)


def test_parquet_through_the_job_matches_pyarrow(tmp_path):
  path = str(tmp_path / "shard.parquet")
  _parquet(path, ROWS, 16)
  expected = pq.read_table(path).to_pylist()  # the reference reader
  scores, rejected = _run_job(tmp_path, path, "--id_field=id", "--keep_fields=url")
  assert rejected == []
  assert sorted((s["id"], s["url"]) for s in scores) == sorted(
      (r["id"], r["url"]) for r in expected)
  by_id = {r["id"]: i for i, r in enumerate(expected, 1)}
  assert all(s["source"] == f"{path}:{by_id[s['id']]}" for s in scores)


def test_parquet_row_groups_are_work_items_and_all_rows_are_read(tmp_path):
  path = str(tmp_path / "big.parquet")
  _parquet(path, ROWS[:30], 10)
  assert readers.work_items(path, "parquet") == [(path, 0), (path, 1), (path, 2)]
  docs, rejected = _read(path, id_field="id")
  assert rejected == [] and [d[0] for d in docs] == sorted(r["id"] for r in ROWS[:30])
  # Only the needed columns are read.
  raw = list(read.iter_file_records(path, "parquet", 10**6, ("text",), (), 2))
  assert [json.loads(r.payload) for r in raw] == [{"text": r["text"]} for r in ROWS[20:30]]
  assert [r.source for r in raw] == [f"{path}:{i}" for i in range(21, 31)]


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck),
          phases=_NO_SHRINK)
@given(keep=st.floats(0.05, 0.95))
def test_truncated_parquet_is_reported_not_raised(tmp_path_factory, keep):
  path = str(tmp_path_factory.mktemp("pq") / "cut.parquet")
  _parquet(path, ROWS, 10)
  blob = open(path, "rb").read()
  open(path, "wb").write(blob[: int(len(blob) * keep)])  # the footer is gone
  assert readers.work_items(path, "parquet") == [(path, -1)]
  docs, rejected = _read(path)
  assert docs == [] and rejected == [(f"{path}:after#0", records.UNREADABLE_FILE)]


def test_corrupt_page_costs_only_its_row_group(tmp_path):
  path = str(tmp_path / "crc.parquet")
  rows = [{"id": f"r{i}", "text": f"document number {i} " * 20} for i in range(300)]
  pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=100, compression="NONE",
                 use_dictionary=False, write_page_checksum=True)
  offset = pq.ParquetFile(path).metadata.row_group(1).column(1).data_page_offset
  blob = bytearray(open(path, "rb").read())
  blob[offset + 3000] ^= 0x01  # a bit of a text in row group 2
  open(path, "wb").write(bytes(blob))
  docs, rejected = _read(path, id_field="id")
  assert [d[0] for d in docs] == sorted(r["id"] for i, r in enumerate(rows)
                                        if not 100 <= i < 200)
  assert rejected == [(f"{path}:row_group#2:after#0", records.UNREADABLE_FILE)]


def test_compressed_parquet_is_refused_up_front(tmp_path):
  path = tmp_path / "x.parquet.gz"
  path.write_bytes(b"")
  with pytest.raises(read.InputError, match="cannot be compressed"):
    read.check_inputs([str(path)], "auto")


# --- Arrow IPC (datasets.save_to_disk's stream files) and the file format.

def _arrow_stream(path, rows, chunk=7):
  table = pa.Table.from_pylist(rows)
  with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
    writer.write_table(table, max_chunksize=chunk)


def test_arrow_dataset_directory_through_the_job(tmp_path):
  data = tmp_path / "dataset"
  data.mkdir()
  for n, part in enumerate((ROWS[:25], ROWS[25:])):
    _arrow_stream(str(data / f"data-0000{n}-of-00002.arrow"), part)
  (data / "dataset_info.json").write_text("{}")
  expected = [r for f in sorted(data.glob("*.arrow"))
              for r in pa.ipc.open_stream(pa.OSFile(str(f))).read_all().to_pylist()]
  scores, rejected = _run_job(tmp_path, str(data / "*.arrow"), "--id_field=id")
  assert rejected == [] and len(scores) == len(expected) == len(ROWS)
  assert sorted(s["id"] for s in scores) == sorted(r["id"] for r in expected)


def test_arrow_file_format_and_compressed_stream(tmp_path):
  table = pa.Table.from_pylist(ROWS)
  with pa.OSFile(str(tmp_path / "f.arrow"), "wb") as sink, \
       pa.ipc.new_file(sink, table.schema) as writer:
    writer.write_table(table, max_chunksize=9)
  _arrow_stream(str(tmp_path / "s.arrow"), ROWS)
  (tmp_path / "s.arrow.gz").write_bytes(gzip.compress((tmp_path / "s.arrow").read_bytes()))
  for name in ("f.arrow", "s.arrow.gz"):
    docs, rejected = _read(str(tmp_path / name), id_field="id")
    assert rejected == [] and [d[0] for d in docs] == sorted(r["id"] for r in ROWS)


def test_truncated_arrow_stream_keeps_the_batches_before_the_cut(tmp_path):
  path = tmp_path / "cut.arrow"
  _arrow_stream(str(path), ROWS, chunk=10)
  blob = path.read_bytes()
  path.write_bytes(blob[: int(len(blob) * 0.6)])
  whole = []
  try:
    for batch in pa.ipc.open_stream(pa.BufferReader(path.read_bytes())):
      whole.extend(batch.to_pylist())
  except (OSError, pa.ArrowInvalid):  # the reference stops at the cut, too
    pass
  docs, rejected = _read(str(path), id_field="id")
  assert 0 < len(whole) < len(ROWS)
  assert [d[0] for d in docs] == sorted(r["id"] for r in whole)
  assert rejected == [(f"{path}:after#{len(whole)}", records.UNREADABLE_FILE)]


# --- CSV and TSV.

def _csv(path, rows, delimiter=","):
  with open(path, "w", newline="", encoding="utf-8") as f:
    writer = csv.DictWriter(f, list(rows[0]), delimiter=delimiter)
    writer.writeheader()
    writer.writerows(rows)


@pytest.mark.parametrize("ext,delimiter", [("csv", ","), ("tsv", "\t")])
def test_csv_and_tsv_through_the_job_match_the_csv_module(tmp_path, ext, delimiter):
  rows = [dict(r, text=r["text"] + ', "quoted"\nsecond line') for r in ROWS]
  path = str(tmp_path / f"docs.{ext}")
  _csv(path, rows, delimiter)
  with open(path, newline="", encoding="utf-8") as f:
    expected = list(csv.DictReader(f, delimiter=delimiter))
  scores, rejected = _run_job(tmp_path, path, "--id_field=id", "--keep_fields=url,edu")
  assert rejected == [] and len(scores) == len(expected)
  assert sorted((s["id"], s["url"], s["edu"]) for s in scores) == sorted(
      (r["id"], r["url"], r["edu"]) for r in expected)


def test_csv_teacher_column_is_numeric(tmp_path):
  path = str(tmp_path / "t.csv")
  _csv(path, ROWS[:3])
  raw = list(read.iter_file_records(path, "csv", 10**6, ("text", "edu"), ("edu",)))
  docs = [records.parse_record(r, keep_fields=("edu",)) for r in raw]
  assert [d.fields for d in docs] == [{"edu": r["edu"]} for r in ROWS[:3]]


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck),
          phases=_NO_SHRINK)
@given(bad=st.integers(0, 9), fields=st.sampled_from([1, 2, 3, 5, 6]))
def test_csv_row_with_the_wrong_number_of_fields_is_rejected(tmp_path_factory, bad, fields):
  path = str(tmp_path_factory.mktemp("csv") / "bad.csv")
  rows = [{"id": f"r{i}", "text": f"row {i}", "edu": "1", "url": "u"} for i in range(10)]
  lines = ["id,text,edu,url"] + [f"r{i},row {i},1,u" for i in range(10)]
  lines[bad + 1] = ",".join(["x"] * fields)
  open(path, "w").write("\n".join(lines) + "\n")
  docs, rejected = _read(path, id_field="id")
  assert [d[0] for d in docs] == sorted(r["id"] for i, r in enumerate(rows) if i != bad)
  assert rejected == [(f"{path}:{bad + 2}", INVALID_ROW)]


def test_csv_unclosed_quote_is_reported_with_the_rows_before_it(tmp_path):
  path = tmp_path / "q.csv"
  path.write_text('id,text\na,first\nb,"never closed\nc,third\n')
  docs, rejected = _read(str(path), id_field="id")
  assert [d[0] for d in docs] == ["a"]
  assert rejected == [(f"{path}:after#1", records.UNREADABLE_FILE)]


# --- Common Crawl WET.

def _wet(path, rows):
  from warcio.warcwriter import WARCWriter
  with open(path, "wb") as f:
    writer = WARCWriter(f, gzip=True)
    writer.write_record(writer.create_warcinfo_record("x.warc.wet.gz", {"software": "t"}))
    for r in rows:
      body = r["text"].encode()
      writer.write_record(writer.create_warc_record(
          r["url"], "conversion", payload=io.BytesIO(body), length=len(body),
          warc_headers_dict={"WARC-Date": "2024-05-01T12:00:00Z",
                             "Content-Type": "text/plain"}))


def _warcio_records(blob):
  """The reference: warcio's conversion records (id, url, date, text)."""
  from warcio.archiveiterator import ArchiveIterator
  out = []
  for rec in ArchiveIterator(io.BytesIO(blob)):
    if rec.rec_type == "conversion":
      h = rec.rec_headers
      out.append((h.get_header("WARC-Record-ID"), h.get_header("WARC-Target-URI"),
                  h.get_header("WARC-Date"), rec.content_stream().read().decode()))
  return out


def test_wet_through_the_job_matches_warcio(tmp_path):
  path = str(tmp_path / "CC-MAIN-x.warc.wet.gz")
  _wet(path, ROWS)
  expected = _warcio_records(open(path, "rb").read())
  scores, rejected = _run_job(tmp_path, path, "--keep_fields=url,date")
  assert rejected == [] and len(scores) == len(expected) == len(ROWS)
  assert sorted((s["id"], s["url"], s["date"]) for s in scores) == sorted(
      e[:3] for e in expected)
  docs, _ = _read(path)
  assert sorted(d[1] for d in docs) == sorted(e[3] for e in expected)


@settings(max_examples=5, deadline=None, suppress_health_check=list(HealthCheck),
          phases=_NO_SHRINK)
@given(keep=st.floats(0.05, 0.97))
def test_truncated_wet_keeps_the_whole_records_before_the_cut(tmp_path_factory, keep):
  path = str(tmp_path_factory.mktemp("wet") / "cut.warc.wet.gz")
  _wet(path, ROWS)
  blob = open(path, "rb").read()
  cut = blob[: int(len(blob) * keep)]
  open(path, "wb").write(cut)
  intact = []  # the records whose whole member survived the cut
  d = __import__("zlib").decompressobj(wbits=31)
  stream, rest, between_members = b"", cut, True
  while rest:
    chunk = d.decompress(rest)
    if not d.eof:
      between_members = False
      break
    stream, rest, d = stream + chunk, d.unused_data, __import__("zlib").decompressobj(wbits=31)
  intact = _warcio_records(stream)
  docs, rejected = _read(path)
  if between_members:  # a cut between two gzip members is a shorter, valid WET file
    assert sorted(x[0] for x in docs) == sorted(e[0] for e in intact) and rejected == []
    return
  got = sorted(x[0] for x in docs)
  if len(docs) == len(intact) + 1:
    # The cut fell in the last member's gzip trailer: that record's bytes are all there
    # (its text is whole), only its CRC could not be checked.
    extra = [d for d in docs if d[0] not in {e[0] for e in intact}]
    assert len(extra) == 1 and extra[0][1] in {r["text"] for r in ROWS}
    got = sorted(d[0] for d in docs if d is not extra[0])
  assert got == sorted(e[0] for e in intact)
  assert len(rejected) == 1 and rejected[0][1] == records.UNREADABLE_FILE
  assert rejected[0][0] == f"{path}:after#{len(docs)}"


def test_a_wet_file_cut_between_two_members_is_read_whole(tmp_path):
  """Each WARC record is a gzip member: a file that ends between two members is a valid,
  shorter WET file (nothing to report), not a truncated one."""
  import zlib
  path = str(tmp_path / "short.warc.wet.gz")
  _wet(path, ROWS)
  blob = open(path, "rb").read()
  ends, rest = [], blob
  while rest:
    d = zlib.decompressobj(wbits=31)
    d.decompress(rest)
    ends.append(len(blob) - len(d.unused_data))
    rest = d.unused_data
  open(path, "wb").write(blob[:ends[3]])  # warcinfo and the first three records
  docs, rejected = _read(path)
  assert rejected == [] and sorted(x[1] for x in docs) == sorted(r["text"] for r in ROWS[:3])


# --- A .json file holding one JSON array.

def test_json_array_file_is_read_element_by_element(tmp_path):
  path = tmp_path / "docs.json"
  path.write_text(json.dumps(ROWS[:5], indent=2))
  docs, rejected = _read(str(path), id_field="id")
  assert rejected == [] and [d[0] for d in docs] == [r["id"] for r in ROWS[:5]]
  raw = list(read.iter_file_records(str(path), "jsonl", 10**6))
  assert [r.source for r in raw] == [f"{path}:[{i}]" for i in range(1, 6)]


def test_cut_json_array_keeps_the_elements_before_the_damage(tmp_path):
  path = tmp_path / "cut.json"
  text = json.dumps(ROWS[:5])
  path.write_text(text[: text.index('"doc-3"') + 3])
  docs, rejected = _read(str(path), id_field="id")
  assert [d[0] for d in docs] == [r["id"] for r in ROWS[:3]]
  assert rejected == [(f"{path}:after#3", records.UNREADABLE_FILE)]


def test_json_lines_in_a_json_file_are_still_read_as_lines(tmp_path):
  path = tmp_path / "lines.json"
  path.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:4]))
  docs, rejected = _read(str(path), id_field="id")
  assert rejected == [] and len(docs) == 4


def test_too_large_json_array_is_refused_with_a_clear_line(tmp_path, monkeypatch):
  path = tmp_path / "big.json"
  path.write_text(json.dumps(ROWS))
  monkeypatch.setattr(readers, "MAX_JSON_ARRAY_BYTES", 100)
  with pytest.raises(ValueError, match=r"holds one JSON array over .*convert it to JSON "
                                       r"Lines"):
    list(read.iter_file_records(str(path), "jsonl", 10**6))


def test_formats_by_extension():
  for name, fmt in [("a.parquet", "parquet"), ("d/data-00000-of-00002.arrow", "arrow"),
                    ("a.csv.gz", "csv"), ("a.tsv", "tsv"), ("x.warc.wet.gz", "wet"),
                    ("a.json", "jsonl")]:
    assert read.format_of(name, "auto") == fmt
  assert set(records.INPUT_FORMATS) >= {"parquet", "arrow", "csv", "tsv", "wet"}
