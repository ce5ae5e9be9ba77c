"""Writing outputs (transforms/write.py); the commit is tests/test_output_transaction.py's."""
import json
import os

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from transforms import write as write_lib
from transforms.records import Document, Rejected, score_record, score_row


def _listing(out):
  return sorted(os.path.relpath(os.path.join(d, f), out)
                for d, _, files in os.walk(out) for f in files)


# --- scores/ as JSON Lines or Parquet -----------------------------------------------------
_SCORE_NAMES = ("ask_llm_score", "ask_llm_error", "perplexity", "density")
_ROW_KEYS = ("id", "source", "selected", "rank")


def _scored_docs():
  """Selected (ranked) and other Documents covering every kind of score value."""
  ranked = [
      Document(id="a", text="t", source="in.jsonl:1",
               scores={"ask_llm_score": 0.75, "perplexity": 12.5, "density": 3}),
      Document(id="b", text="t", source="in.jsonl:2",
               scores={"ask_llm_score": 0.5, "perplexity": float("inf"),
                       "density": float("nan")}),
  ]
  rest = [
      Document(id="c", text="t", source="in.jsonl:3",
               scores={"ask_llm_error": "RuntimeError: boom", "perplexity": 40.0,
                       "mystery_score": 2.5}),
      Document(id="d", text="t", source="in.jsonl:4"),  # no scores at all
      Document(id="e", text="t", source="in.jsonl:5",
               scores={"ask_llm_score": float("-inf"), "density": 0.25}),
  ]
  return ranked, rest


def _write(out, docs, **kwargs):
  ranked, rest = docs
  with TestPipeline(runner="FnApiRunner") as p:
    {"ranked": p | "Ranked" >> beam.Create([(0, list(enumerate(ranked)))]),
     "not_selected": p | "Rest" >> beam.Create(rest),
     "rejected": p | "Rejected" >> beam.Create([Rejected("in.jsonl:9", "empty_text", "")])
     } | write_lib.WriteOutputs(str(out), **kwargs)


def _jsonl_rows(out):
  return [json.loads(line) for f in sorted((out / "scores").glob("part-*.jsonl"))
          for line in f.read_text().splitlines()]


def _as_parquet_row(row, names):
  """What a JSON Lines row must read back as from Parquet: every score column (null when
  absent) and the other scores as a dict."""
  expected = {k: row[k] for k in _ROW_KEYS}
  expected.update({n: row.get(n) for n in names})
  expected["other_scores"] = {k: v for k, v in row.items()
                              if k not in _ROW_KEYS and k not in names}
  return expected


def test_parquet_scores_hold_the_same_rows_as_json_lines(tmp_path):
  docs = _scored_docs()
  _write(tmp_path / "j", docs)
  _write(tmp_path / "q", docs, scores_format="parquet", score_names=_SCORE_NAMES)
  assert not list((tmp_path / "q" / "scores").glob("*.jsonl"))
  assert list((tmp_path / "q" / "scores").glob("part-*.parquet"))
  table = pq.read_table(str(tmp_path / "q" / "scores"))
  assert table.schema.names == write_lib.scores_schema(_SCORE_NAMES).names
  assert table.schema.field("ask_llm_error").type == pa.string()
  assert table.schema.field("density").type == pa.float64()
  assert table.schema.field("rank").type == pa.int64()
  got = sorted(table.to_pylist(), key=lambda r: r["id"])
  for row in got:
    row["other_scores"] = json.loads(row["other_scores"]) if row["other_scores"] else {}
  jsonl = sorted(_jsonl_rows(tmp_path / "j"), key=lambda r: r["id"])
  assert [r["id"] for r in jsonl] == ["a", "b", "c", "d", "e"]
  assert got == [_as_parquet_row(r, _SCORE_NAMES) for r in jsonl]
  # Spelt out, so a mistake shared by both writers cannot hide.
  by_id = {r["id"]: r for r in got}
  assert (by_id["a"]["selected"], by_id["a"]["rank"], by_id["a"]["density"]) == (True, 0, 3.0)
  assert (by_id["b"]["rank"], by_id["b"]["perplexity"], by_id["b"]["density"]) == (1, None, None)
  assert (by_id["c"]["selected"], by_id["c"]["rank"]) == (False, None)
  assert by_id["c"]["ask_llm_error"] == "RuntimeError: boom"
  assert by_id["c"]["other_scores"] == {"mystery_score": 2.5}
  assert by_id["e"]["ask_llm_score"] is None
  assert by_id["d"]["ask_llm_score"] is None and by_id["d"]["other_scores"] == {}
  # Readable as a dataset too (what a BigQuery / Spark reader sees).
  assert ds.dataset(str(tmp_path / "q" / "scores"), format="parquet").count_rows() == 5
  # The other outputs are unchanged by the scores format.
  assert len(list((tmp_path / "q" / "selected").glob("*.tfrecord"))) == 1
  assert len(list((tmp_path / "q" / "rejected").glob("part-*.jsonl"))) == 1


def test_json_lines_scores_are_score_row_byte_for_byte(tmp_path):
  docs = _scored_docs()
  _write(tmp_path / "j", docs, scores_format="jsonl", score_names=_SCORE_NAMES)
  lines = sorted(line for f in (tmp_path / "j" / "scores").glob("part-*.jsonl")
                 for line in f.read_text().splitlines())
  ranked, rest = docs
  assert lines == sorted([score_row(d, True, r) for r, d in enumerate(ranked)]
                         + [score_row(d, False, None) for d in rest])
  assert not list((tmp_path / "j" / "scores").glob("*.parquet"))


def test_parquet_scores_without_score_names_keep_every_score(tmp_path):
  _write(tmp_path / "q", _scored_docs(), scores_format="parquet")
  rows = {r["id"]: r for r in pq.read_table(str(tmp_path / "q" / "scores")).to_pylist()}
  assert set(rows["a"]) == {"id", "source", "selected", "rank", "other_scores"}
  assert json.loads(rows["c"]["other_scores"]) == {
      "ask_llm_error": "RuntimeError: boom", "perplexity": 40.0, "mystery_score": 2.5}
  assert rows["d"]["other_scores"] is None


def test_scores_schema_columns_and_types():
  schema = write_lib.scores_schema(["p_yes", "ask_llm_error", "density"])
  assert schema.names == ["id", "source", "p_yes", "ask_llm_error", "density", "selected",
                          "rank", "other_scores"]
  assert [str(t) for t in schema.types] == ["string", "string", "double", "string", "double",
                                            "bool", "int64", "string"]
  nullable = {f.name for f in schema if f.nullable}
  assert nullable == {"p_yes", "ask_llm_error", "density", "rank", "other_scores"}
  assert write_lib.scores_schema([]).names == ["id", "source", "selected", "rank",
                                               "other_scores"]


@pytest.mark.parametrize("names", [["rank"], ["other_scores"], ["p_yes", "p_yes"]])
def test_scores_schema_rejects_clashing_names(names):
  with pytest.raises(ValueError, match="score names"):
    write_lib.scores_schema(names)


def test_parquet_row_maps_a_record_onto_the_schema():
  names = write_lib.scores_schema(["ask_llm_score", "ask_llm_error", "density"]).names
  doc = Document(id="x", text="t", source="s:1",
                 scores={"ask_llm_score": float("nan"), "extra": 1.5, "density": 2,
                         "other_scores": "mine"})
  row = write_lib.parquet_row(score_record(doc, True, 7), names)
  assert set(row) == set(names)
  assert {k: v for k, v in row.items() if k != "other_scores"} == {
      "id": "x", "source": "s:1", "selected": True, "rank": 7, "ask_llm_score": None,
      "ask_llm_error": None, "density": 2.0}
  assert isinstance(row["density"], float)
  # A score named like a column of the schema is still a score, kept in other_scores.
  assert json.loads(row["other_scores"]) == {"extra": 1.5, "other_scores": "mine"}


def test_parquet_row_keeps_values_that_do_not_fit_their_column():
  names = write_lib.scores_schema(["density", "ask_llm_error", "big"]).names
  record = {"id": "x", "source": "s", "selected": False, "rank": None, "density": "high",
            "ask_llm_error": {"code": 3}, "big": 10**400, "flag": True}
  row = write_lib.parquet_row(record, names)
  assert (row["density"], row["ask_llm_error"], row["big"]) == (None, None, None)
  assert json.loads(row["other_scores"]) == {"flag": True, "density": "high",
                                             "ask_llm_error": {"code": 3}, "big": 10**400}
  # A bool is not a number here: JSON Lines writes `true`, so it must not become 1.0.
  row = write_lib.parquet_row(dict(record, density=True), names)
  assert row["density"] is None and json.loads(row["other_scores"])["density"] is True
  # A non-finite number that is not a Python float (score_record nulls those) is null too.
  row = write_lib.parquet_row(dict(record, density=np.float32("inf")), names)
  assert row["density"] is None and "density" not in json.loads(row["other_scores"])
  # Every row is writable under the schema (no exception from pyarrow).
  pa.Table.from_pylist([row], schema=write_lib.scores_schema(["density", "ask_llm_error",
                                                              "big"]))


def test_parquet_row_spells_out_lone_surrogates():
  names = write_lib.scores_schema(["ask_llm_error"]).names
  record = {"id": "x", "source": "s", "selected": False, "rank": None,
            "ask_llm_error": "bad \ud800", "note": "also \udfff"}
  row = write_lib.parquet_row(record, names)
  table = pa.Table.from_pylist([row], schema=write_lib.scores_schema(["ask_llm_error"]))
  assert table.column("ask_llm_error")[0].as_py() == "bad \\ud800"
  assert json.loads(table.column("other_scores")[0].as_py()) == {"note": "also \udfff"}


@pytest.mark.parametrize("fmt", ["csv", "JSONL", "", None])
def test_an_unknown_scores_format_is_refused_when_built(fmt):
  with pytest.raises(ValueError, match="scores_format"):
    write_lib.WriteOutputs("/tmp/unused", scores_format=fmt)
