"""--dedup in whole runs (FnApiRunner, the tiny Ask-LLM judge): copies never reach the
model or the cache, are never selected, and are in scores/ with copy_of; --keep_fraction
counts the kept documents; --dedup=none runs as before."""
import glob
import json
import os

import pyarrow.parquet as pq
import pytest

from tests.test_score_cache import run_job, scores_of, write_corpus

COPIES = {"d00003": 5, "d00011": 2, "d00020": 1}  # planted copies per original


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("dedup") / "corpus.jsonl")
  write_corpus(path, 30)
  rows = [json.loads(l) for l in open(path)]
  texts = {r["id"]: r["text"] for r in rows}
  with open(path, "a") as f:
    for original, n in COPIES.items():
      for k in range(n):  # other whitespace, new ids, after the originals
        text = ("\n " * k) + texts[original].replace(" ", "\u3000" if k % 2 else "  ", 2)
        f.write(json.dumps({"id": f"copy{k}-of-{original}", "text": text}) + "\n")
  return path


def _cache_rows(cache):
  return sum(pq.read_metadata(f).num_rows
             for f in glob.glob(os.path.join(cache, "ask_llm", "**", "*.parquet"),
                                recursive=True))


def test_copies_never_reach_the_model_or_the_cache_and_are_never_selected(
    corpus, tiny_causal_lm_dir, tmp_path):
  out, cache = str(tmp_path / "out"), str(tmp_path / "cache")
  m = run_job(corpus, out, tiny_causal_lm_dir, "--sampler=ask_llm", "--keep_fraction=0.5",
              f"--cache={cache}")
  n_copies = sum(COPIES.values())
  counts = m["counts"]
  assert counts["valid"] == 30 + n_copies and counts["duplicates"] == {"exact": n_copies}
  assert counts["inferred"] == {"ask_llm": 30} and counts["selected"] == 15  # 0.5 of kept
  assert _cache_rows(cache) == 30
  scores = scores_of(out)
  assert len(scores) == 30 + n_copies
  for original, n in COPIES.items():
    group = [original] + [f"copy{k}-of-{original}" for k in range(n)]
    keepers = [i for i in group if scores[i].get("copy_of") is None]
    assert len(keepers) == 1
    assert scores[keepers[0]]["ask_llm_score"] is not None
    for i in set(group) - set(keepers):
      row = scores[i]
      assert row["copy_of"] == keepers[0] and row["copy_kind"] == "exact"
      assert row.get("ask_llm_score") is None and not row["selected"] and row["rank"] is None
  assert m["dedup"]["largest_groups"][0]["copies"] == 5
  assert os.path.exists(os.path.join(out, "dedup.json"))


def test_dedup_none_scores_and_may_select_every_copy(corpus, tiny_causal_lm_dir, tmp_path):
  out = str(tmp_path / "none")
  m = run_job(corpus, out, tiny_causal_lm_dir, "--sampler=ask_llm", "--keep_fraction=0.5",
              "--dedup=none", "--cache=none")
  n = 30 + sum(COPIES.values())
  assert m["counts"]["inferred"] == {"ask_llm": n} and "duplicates" not in m["counts"]
  assert m["counts"]["selected"] == round(0.5 * n) and "dedup" not in m
  assert not any("copy_of" in r for r in scores_of(out).values())
  assert not os.path.exists(os.path.join(out, "dedup.json"))


def test_minhash_job_writes_the_funnel_and_parquet_scores(corpus, tmp_path):
  out = str(tmp_path / "mh")
  from beam_pipelines import select_data
  from apache_beam.testing.test_pipeline import TestPipeline
  m = select_data.run([f"--input={corpus}", f"--output={out}", "--id_field=id",
                       "--sampler=random", "--keep_fraction=0.5", "--dedup=minhash",
                       "--scores_format=parquet"],
                      test_pipeline=TestPipeline(runner="FnApiRunner"))
  n_copies = sum(COPIES.values())
  assert sum(m["counts"]["duplicates"].values()) >= n_copies
  table = pq.read_table(os.path.join(out, "scores")).to_pandas()
  copies = table[table["copy_of"].notna()]
  assert len(copies) == sum(m["counts"]["duplicates"].values())
  assert not copies["selected"].any() and set(copies["copy_kind"]) <= {"exact", "minhash"}
  assert set(copies["copy_of"]) <= set(table[table["copy_of"].isna()]["id"])
  assert m["counts"]["selected"] == round(0.5 * m["dedup"]["kept"])
  html = open(os.path.join(out, "report.html")).read()
  assert "id='dedup'" in html and "Largest groups" in html
