"""Hostile records through the whole job: over-long ids, invisible texts, repeated keys,
CR-only line endings and non-finite numbers end as documents or counted rejections, and
every JSON Lines output (scores/, rejected/, selected/*.jsonl.gz) is strict JSON."""
import glob
import gzip
import json
import os

from apache_beam.testing.test_pipeline import TestPipeline

from beam_pipelines import select_data


def _strict(line: str):
  """json.loads that refuses NaN and Infinity, as strict parsers (and JSON itself) do."""
  def refuse(name):
    raise ValueError(f"not strict JSON: {name}")
  return json.loads(line, parse_constant=refuse)


def _lines(pattern, opener=open):
  out = []
  for path in sorted(glob.glob(pattern)):
    with opener(path, "rt", encoding="utf-8") as f:
      out += [_strict(line) for line in f]
  return out


def test_hostile_records_end_counted_and_outputs_are_strict_json(tmp_path):
  src = tmp_path / "in"
  src.mkdir()
  lines = [
      b'{"id": 1, "text": "numeric id one"}',
      b'{"id": "1", "text": "string id one"}',         # the same id text: both kept
      b'{"id": "' + b"x" * 17 + b'", "text": "id over the limit"}',
      b'{"id": "' + b"y" * 16 + b'", "text": "id at the limit"}',
      '{"id": "z", "text": "\u200b\ufeff\u2060\u200e"}'.encode(),
      b'{"id": "d", "text": "a", "text": "b"}',
      b'{"id": "e", "text": "not finite", "edu": NaN, "tags": [Infinity, 1]}',
      b'{"id": "f", "text": "too big", "edu": 1e999}',
      b"{not json",
  ]
  (src / "docs.jsonl").write_bytes(b"\n".join(lines) + b"\n")
  (src / "mac.txt").write_bytes(b"first line\rsecond line\rthird line\r")
  out = tmp_path / "out"
  metrics = select_data.run(
      [f"--input={src}/*", f"--output={out}", "--id_field=id", "--max_id_bytes=16",
       "--keep_fields=edu,tags", "--sampler=random", "--keep_count=100", "--cache=none",
       "--output_format=tfrecord,jsonl"],
      test_pipeline=TestPipeline(runner="FnApiRunner"))
  counts = metrics["counts"]
  assert counts["rejected_by_reason"] == {"invalid_id": 1, "empty_text": 1,
                                          "duplicate_key": 1, "invalid_json": 1}
  assert counts["valid"] == 8 and counts["selected"] == 8  # 5 JSON records, 3 CR lines

  scores = _lines(f"{out}/scores/*.jsonl")
  rejected = _lines(f"{out}/rejected/*.jsonl")
  selected = _lines(f"{out}/selected_jsonl/*.jsonl.gz", gzip.open)
  assert len(scores) == len(selected) == 8 and len(rejected) == 4
  by_source = {row["source"].rsplit("/", 1)[1]: row for row in scores}
  assert by_source["docs.jsonl:1"]["id"] == by_source["docs.jsonl:2"]["id"] == "1"
  assert by_source["docs.jsonl:4"]["id"] == "y" * 16
  # Non-finite input numbers are kept as their text, never as a bare NaN.
  assert (by_source["docs.jsonl:7"]["edu"], by_source["docs.jsonl:7"]["tags"]) == (
      "NaN", ["Infinity", 1])
  assert by_source["docs.jsonl:8"]["edu"] == "1e999"
  assert {"mac.txt:1", "mac.txt:2", "mac.txt:3"} <= set(by_source)
  texts = {row["text"] for row in selected}
  assert {"first line", "second line", "third line"} <= texts
  assert {row["reason"]: row["source"].rsplit(":", 1)[1] for row in rejected} == {
      "invalid_id": "3", "empty_text": "5", "duplicate_key": "6", "invalid_json": "9"}
  details = {row["reason"]: row.get("detail", "") for row in rejected}
  assert "17 bytes > --max_id_bytes=16" in details["invalid_id"]
  assert "no visible character" in details["empty_text"]
  assert "'text'" in details["duplicate_key"]
  assert os.path.exists(out / "report.html")
