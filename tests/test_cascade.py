"""--judge_fraction: the Ask-LLM judge on the cheap signal's top F plus an audit, run as
the real job on tiny models and read back from scores/ and metrics.json."""
import json
import os

import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from beam_pipelines import select_data
from beam_pipelines.graph import signal_names
from beam_pipelines.samplers import ask_llm_key
from tests.test_select_data import read_jsonl
from transforms import signals
from transforms.algorithms.cascade_recall import cascade_masks
from transforms.records import Document

N = 30
WORDS = ("alpha beta gamma delta river stone cloud light tree wind water trade "
         "history science").split()

# A cheap signal that costs nothing: the text's length (a registered simple signal).
LENGTH = signals.Signal(
    "cascade_test_length", per_document=lambda doc: {"cascade_test_length": float(len(doc.text))},
    writes=(signals.Column("cascade_test_length", signals.FLOAT, "length (a test signal)",
                           higher_is_better=True),))


@pytest.fixture
def length_signal():
  signals.register(LENGTH)
  yield LENGTH
  signals.unregister(LENGTH.name)


def _texts(n=N):
  rng = np.random.default_rng(7)
  return {f"d{i:03d}": " ".join(rng.choice(WORDS, int(rng.integers(4, 40))))
          for i in range(n)}


def _write(folder, texts, order=None, files=1):
  os.makedirs(folder, exist_ok=True)
  ids = list(order or texts)
  for f in range(files):
    with open(os.path.join(folder, f"part{f}.jsonl"), "w") as out:
      for i in ids[f::files]:
        out.write(json.dumps({"id": i, "text": texts[i]}) + "\n")


def _run(out, input_glob, *extra):
  return select_data.run(
      [f"--input={input_glob}", f"--output={out}", "--id_field=id", "--device=cpu",
       "--report=false", *extra], test_pipeline=TestPipeline(runner="FnApiRunner"))


def _judged(out):
  scores = read_jsonl(os.path.join(out, "scores", "*.jsonl"))
  return scores, sorted(s["id"] for s in scores if s.get("ask_llm_score") is not None)


def _expected(texts, fraction, audit, seed=0):
  ids = sorted(texts)
  cut, audited = cascade_masks([float(len(texts[i])) for i in ids], ids, fraction, audit, seed)
  return ([i for i, c in zip(ids, cut) if c], [i for i, a in zip(ids, audited) if a])


def test_judge_scores_the_cut_and_the_audit_and_reruns_judge_only_new(
    tmp_path, tiny_causal_lm_dir, length_signal):
  texts = _texts()
  _write(tmp_path / "in", texts)
  model = (f"--scorer_model={tiny_causal_lm_dir}", "--max_tokens=128",
           f"--cascade_signal={LENGTH.name}", "--audit_fraction=0.3", "--keep_fraction=0.2",
           f"--cache={tmp_path}/cache")
  out = str(tmp_path / "a")
  m = _run(out, f"{tmp_path}/in/*.jsonl", "--judge_fraction=0.4", *model)
  scores, judged = _judged(out)
  cut, audited = _expected(texts, 0.4, 0.3)
  assert len(cut) == 12 and audited  # the hash chose some of the 18 below the cut
  assert judged == sorted(cut + audited)
  marks = {s["id"]: s["cascade_judged"] for s in scores}
  assert marks == {i: (1 if i in cut else 2 if i in audited else 0) for i in texts}
  assert all(s["cascade_score"] == len(texts[s["id"]]) for s in scores)
  # Judged documents rank first, by the judge.
  chosen = sorted((s for s in scores if s["selected"]), key=lambda s: s["rank"])
  assert len(chosen) == 6 and all(s["cascade_judged"] in (1, 2) for s in chosen)
  best = sorted((s for s in scores if s["id"] in judged),
                key=lambda s: (-s["ask_llm_score"], s["id"]))[:6]
  assert [s["id"] for s in chosen] == [s["id"] for s in best]
  # metrics.json: what was judged, and the estimate.
  c = m["cascade"]
  assert (c["pool"], c["audited"], c["judged"]) == (12, len(audited), len(judged))
  assert c["not_judged"] == c["judge_documents_saved"] == N - len(judged)
  assert m["counts"]["scored"] == m["counts"]["inferred"]["ask_llm"] == len(judged)
  assert c["counters"] == {"cascade:pool": 12, "cascade:audited": len(audited),
                           "cascade:not_judged": N - len(judged)}
  r = c["recall"]
  assert r["k"] == 6 and r["audited"] == len(audited)
  assert 0 <= r["low"] <= r["recall"] <= r["high"] <= 1
  assert json.load(open(os.path.join(out, "cascade.json")))["judged"] == len(judged)

  # A rerun with a bigger F, the input in another order and in two files: the same hash
  # picks the audit, and only the documents not judged before reach the judge.
  _write(tmp_path / "in2", texts, order=sorted(texts, reverse=True), files=2)
  out2 = str(tmp_path / "b")
  m2 = _run(out2, f"{tmp_path}/in2/*.jsonl", "--judge_fraction=0.6", *model)
  _, judged2 = _judged(out2)
  cut2, audited2 = _expected(texts, 0.6, 0.3)
  assert judged2 == sorted(cut2 + audited2)
  assert set(audited2) == set(audited) - set(cut2)  # the audit is a function of the ids
  assert m2["counts"]["from_cache"]["ask_llm"] == len(set(judged) & set(judged2))
  assert m2["counts"]["inferred"]["ask_llm"] == len(set(judged2) - set(judged)) > 0


def test_quality_head_cascade_with_a_quality_pool(tmp_path, tiny_causal_lm_dir, tiny_bert_dir):
  from models import loading
  from transforms import quality_head as qh
  texts = _texts(24)
  _write(tmp_path / "in", texts)
  rng = np.random.default_rng(3)
  head = qh.QualityHead(weights=rng.normal(size=32), bias=0.0, l2=1.0, n_train=1,
                        embedding_model=loading.model_name(tiny_bert_dir, "embedding"),
                        teacher="test")
  qh.save_head(head, str(tmp_path / "head.npz"))
  out = str(tmp_path / "a")
  m = _run(out, f"{tmp_path}/in/*.jsonl", "--sampler=ask_llm_density",
           f"--scorer_model={tiny_causal_lm_dir}", "--max_tokens=128",
           f"--embedding_model={tiny_bert_dir}", f"--quality_head={tmp_path}/head.npz",
           "--keep_fraction=0.125", "--quality_pool_factor=2", "--judge_fraction=0.5",
           "--audit_fraction=0.5", "--sketch_rows=32", "--sketch_buckets=256")
  scores, judged = _judged(out)
  ids = sorted(texts)
  q = {s["id"]: s["quality_score"] for s in scores}
  cut, audited = cascade_masks([q[i] for i in ids], ids, 0.5, 0.5, 0)
  assert judged == sorted(i for i, c, a in zip(ids, cut, audited) if c or a)
  assert m["counts"]["quality_pool"] == 6 and m["counts"]["selected"] == 3
  pool = [s for s in scores if s["selected"]]
  assert all(s["cascade_judged"] in (1, 2) for s in pool)
  assert m["cascade"]["recall_of"] == "quality pool" and m["cascade"]["recall"]["k"] == 6
  assert m["cascade"]["signal"] == "quality_head"
  assert "density" in scores[0]


@pytest.mark.parametrize("extra,message", [
    (["--judge_fraction=0.1", "--keep_fraction=0.2"], "cannot hold the selection"),
    (["--judge_fraction=0.3", "--keep_fraction=0.2", "--sampler=ask_llm_density",
      "--quality_pool_factor=2"], "cannot hold the quality pool"),
    (["--judge_fraction=0.5", "--sampler=random"], "with --sampler=ask_llm"),
    (["--judge_fraction=0.5", "--keep_count=3"], "needs --keep_fraction"),
    (["--judge_fraction=0.5", "--cascade_signal=embeddings"], "not a cheap signal"),
    (["--audit_fraction=0.1"], "apply with --judge_fraction"),
])
def test_refusals(tmp_path, extra, message):
  _write(tmp_path / "in", _texts(4))
  with pytest.raises(select_data.UsageError, match=message):
    _run(str(tmp_path / "out"), f"{tmp_path}/in/*.jsonl", *extra)
  assert not os.path.exists(tmp_path / "out")


def test_signal_order_puts_the_judge_after_the_cheap_signal():
  from beam_pipelines.options import JobConfig, parse_args
  args, _ = parse_args(["--input=x.jsonl", "--output=o", "--sampler=ask_llm_balanced",
                        "--keep_fraction=0.1", "--judge_fraction=0.3"])
  job = JobConfig.from_args(args)
  names = signal_names(job)
  wanted = ["embeddings", "quality_head", "ask_llm", "clusters", "cascade"]
  assert [n for n in names if n in wanted] == wanted  # (others may sit in between)
  assert job.runs_embeddings and job.quality_head == "bundled"


def test_not_judged_documents_rank_after_judged_and_before_failed():
  def doc(i, **scores):
    return Document(id=i, text="t", source="s", scores=scores)
  docs = [doc("a", ask_llm_score=0.1, cascade_judged=1),
          doc("b", cascade_judged=0, cascade_score=9.0),
          doc("c", cascade_judged=0, cascade_score=1.0),
          doc("d", ask_llm_score=0.9, cascade_judged=2),
          doc("e", cascade_judged=1),  # the judge failed on it
          doc("f", cascade_judged=0, cascade_score=float("nan"))]
  assert [d.id for d in sorted(docs, key=ask_llm_key)] == ["d", "a", "b", "c", "f", "e"]
  # Without the cascade, the key is what it always was.
  assert ask_llm_key(doc("x", ask_llm_score=0.5)) == ((0, -0.5), "x", "s")


def test_report_section_says_what_was_judged_and_the_recall():
  from beam_pipelines import report_cascade
  from transforms.algorithms.cascade_recall import estimate_recall
  est = estimate_recall([0.9, 0.8, 0.7, 0.2], [0.85, 0.1], 16, 3).to_dict()
  cascade = {"signal": "quality_head", "score_column": "quality_score", "judge_fraction": 0.2,
             "audit_fraction": 0.1, "documents": 20, "pool": 4, "audited": 2, "judged": 6,
             "not_judged": 14, "judge_documents_saved": 14, "recall_of": "selection",
             "recall": est, "judge_seconds_saved": 12.5}
  html = report_cascade.section({"cascade": cascade})
  assert "Cascade" in html and "14 (70.0%)" in html and "2 of 16" in html
  assert f"{100 * est['recall']:.1f}%" in html and "12.5 s" in html
  assert report_cascade.section({}) == ""
  no_audit = dict(cascade, recall=estimate_recall([0.9], [], 16, 1).to_dict())
  assert "not estimated" in report_cascade.section({"cascade": no_audit})


def test_balanced_quotas_fill_with_judged_documents_first(
    tmp_path, tiny_causal_lm_dir, tiny_bert_dir, length_signal):
  texts = _texts(24)
  _write(tmp_path / "in", texts)
  out = str(tmp_path / "a")
  m = _run(out, f"{tmp_path}/in/*.jsonl", "--sampler=ask_llm_balanced", "--num_clusters=3",
           f"--scorer_model={tiny_causal_lm_dir}", "--max_tokens=128",
           f"--embedding_model={tiny_bert_dir}", f"--cascade_signal={LENGTH.name}",
           "--keep_fraction=0.25", "--judge_fraction=0.5", "--audit_fraction=0.2")
  scores, judged = _judged(out)
  cut, audited = _expected(texts, 0.5, 0.2)
  assert judged == sorted(cut + audited) and m["counts"]["selected"] == 6
  # Each cluster's quota takes its judged documents (by the judge) before the others.
  by_cluster = {}
  for s in scores:
    by_cluster.setdefault(s["cluster"], []).append(s)
  def key(row):
    return ask_llm_key(Document(id=row["id"], text="", source=row["source"], scores={
        k: row.get(k) for k in ("ask_llm_score", "cascade_judged", "cascade_score")}))
  assert len(by_cluster) > 1
  for members in by_cluster.values():
    chosen = [key(s) for s in members if s["selected"]]
    others = [key(s) for s in members if not s["selected"]]
    if chosen and others:
      assert max(chosen) < min(others)
