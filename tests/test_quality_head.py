"""The quality head: sums give the same fit as a direct solve, merge order does not
matter, the teacher set is exactly the records with a teacher, and the job end to end."""
import json
import os

import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from hypothesis import given, settings, strategies as st

from beam_pipelines import select_data
from tests.test_select_data import read_jsonl
from transforms import quality, quality_head as qh


def _direct_ridge(x, y, l2):
  """Ridge with an unpenalised intercept, solved directly on centred data."""
  xc, yc = x - x.mean(0), y - y.mean()
  w = np.linalg.solve(xc.T @ xc + l2 * len(y) * np.eye(x.shape[1]), xc.T @ yc)
  return w, y.mean() - x.mean(0) @ w


def test_sums_give_the_direct_least_squares_fit():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(500, 8))
  y = x @ rng.normal(size=8) + 0.3 + 0.01 * rng.normal(size=500)
  head = qh.solve(qh.RidgeStats().add(x, y), 0.0, "m", "t")
  coef, *_ = np.linalg.lstsq(np.c_[x, np.ones(500)], y, rcond=None)
  assert np.allclose(head.weights, coef[:8], atol=1e-8) and head.bias == pytest.approx(coef[8])
  w, b = _direct_ridge(x, y, 0.1)
  ridge = qh.solve(qh.RidgeStats().add(x, y), 0.1, "m", "t")
  assert np.allclose(ridge.weights, w) and ridge.bias == pytest.approx(b)
  assert np.allclose(ridge.predict(x[:3]), x[:3] @ w + b)


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 20), min_size=1, max_size=8), seed=st.integers(0, 1000))
def test_merge_order_does_not_matter(sizes, seed):
  rng = np.random.default_rng(seed)
  parts = [(rng.normal(size=(n, 4)), rng.normal(size=n)) for n in sizes]
  fn = qh.RidgeStatsCombineFn()
  accs = [fn.add_input(fn.create_accumulator(), p) for p in parts]
  forward = fn.merge_accumulators(accs)
  accs = [fn.add_input(fn.create_accumulator(), p) for p in parts[::-1]]
  backward = fn.merge_accumulators(accs[::-1][::-1])
  whole = qh.RidgeStats().add(np.concatenate([p[0] for p in parts]),
                              np.concatenate([p[1] for p in parts]))
  for s in (forward, backward):
    assert s.n == whole.n and np.allclose(s.xtx, whole.xtx) and np.allclose(s.xty, whole.xty)


def test_saved_head_round_trips_and_refuses_other_embedding_model(tmp_path):
  head = qh.QualityHead(np.arange(4.0), 0.5, 1e-3, 10, "model-a", "edu")
  path = str(tmp_path / "h.npz")
  qh.save_head(head, path)
  back = qh.load_head(path, "model-a")
  assert np.array_equal(back.weights, head.weights) and back.bias == 0.5
  with pytest.raises(ValueError, match="fitted on embeddings of 'model-a'"):
    qh.load_head(path, "model-b")


def test_teacher_fraction_is_deterministic():
  ids = [f"doc{i}" for i in range(2000)]
  a = [i for i in ids if quality.in_teacher_fraction(3, i, 0.1)]
  assert a == [i for i in ids if quality.in_teacher_fraction(3, i, 0.1)]
  assert 150 < len(a) < 250
  assert a != [i for i in ids if quality.in_teacher_fraction(4, i, 0.1)]


def _write(path, n=40):
  rng = np.random.default_rng(1)
  words = "alpha beta gamma delta river stone cloud light tree wind".split()
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "d.jsonl"), "w") as f:
    for i in range(n):
      row = {"id": f"d{i:03d}", "text": " ".join(rng.choice(words, 10))}
      if i % 3:  # two thirds carry a teacher score
        row["edu"] = float(i % 5)
      f.write(json.dumps(row) + "\n")


def _run(tmp_path, name, *extra):
  out = str(tmp_path / name)
  metrics = select_data.run(
      [f"--input={tmp_path}/in/*.jsonl", f"--output={out}", "--id_field=id", "--device=cpu",
       "--keep_count=8", "--sketch_rows=32", "--sketch_buckets=256",
       "--report=false", *extra],  # the report has its own tests
      test_pipeline=TestPipeline(runner="FnApiRunner"))
  return out, metrics


def test_head_from_teacher_field_end_to_end(tmp_path, tiny_bert_dir):
  _write(str(tmp_path / "in"))
  # fp32: the refit below embeds in fp32 (auto may pick bf16 for the embedder).
  out, m = _run(tmp_path, "a", "--sampler=quality_head", "--teacher_field=edu",
                f"--embedding_model={tiny_bert_dir}", "--head_l2=0.01", "--precision=fp32")
  scores = read_jsonl(os.path.join(out, "scores", "*.jsonl"))
  assert len(scores) == 40 and all("quality_score" in s for s in scores)
  chosen = sorted((s for s in scores if s["selected"]), key=lambda s: s["rank"])
  assert [s["id"] for s in chosen] == [s["id"] for s in sorted(
      scores, key=lambda s: (-s["quality_score"], s["id"]))[:8]]
  teacher_ids = [f"d{i:03d}" for i in range(40) if i % 3]
  held = [i for i in teacher_ids if quality.is_held_back(0, i)]
  assert m["counts"]["teacher"] == len(teacher_ids)
  assert m["counts"]["teacher_held_back"] == len(held)
  assert m["quality_head"]["fit_on_held_back"]["held_back"] == len(held)
  # A handful of held-back documents gives a meaningless AUC: the report says so.
  assert len(held) < qh.MIN_HELD_BACK
  assert "not reliable" in m["quality_head"]["fit_on_held_back"]["warning"]
  assert "ask_llm" not in m["models"] and "scorer" not in m["models"]

  # The fit used exactly the teacher records that are not held back: refit directly.
  from models.embeddings import EmbeddingConfig, load_embedder
  emb = load_embedder(EmbeddingConfig(model=tiny_bert_dir, device="cpu"))
  rows = {json.loads(l)["id"]: json.loads(l) for l in open(tmp_path / "in" / "d.jsonl")}
  train = [i for i in teacher_ids if i not in held]
  # The job uses float16 embeddings (as the score cache keeps them).
  from transforms.score_cache import round_embedding
  x = round_embedding(emb.embed([rows[i]["text"] for i in train])).astype(np.float64)
  w, b = _direct_ridge(x, np.array([rows[i]["edu"] for i in train]), 0.01)
  head = qh.load_head(os.path.join(out, "quality_head.npz"), tiny_bert_dir)
  assert head.n_train == len(train)
  assert np.allclose(head.weights, w, atol=1e-6) and head.bias == pytest.approx(b, abs=1e-6)

  # A saved head is applied as it is, and gives the same scores.
  out2, m2 = _run(tmp_path, "b", "--sampler=quality_head_density",
                  f"--quality_head={out}/quality_head.npz", f"--embedding_model={tiny_bert_dir}",
                  "--precision=fp32")
  again = {s["id"]: s for s in read_jsonl(os.path.join(out2, "scores", "*.jsonl"))}
  assert {i: s["quality_score"] for i, s in again.items()} == pytest.approx(
      {s["id"]: s["quality_score"] for s in scores})
  assert all("density" in s for s in again.values()) and m2["counts"]["selected"] == 8
  assert m2["counts"]["quality_pool"] == 16


def test_head_from_ask_llm_on_teacher_fraction(tmp_path, tiny_bert_dir, tiny_causal_lm_dir):
  _write(str(tmp_path / "in"))
  args = ("--sampler=quality_head", "--teacher_fraction=0.5", f"--embedding_model={tiny_bert_dir}",
          f"--scorer_model={tiny_causal_lm_dir}", "--max_tokens=128", "--seed=5")
  out, m = _run(tmp_path, "a", *args)
  scores = read_jsonl(os.path.join(out, "scores", "*.jsonl"))
  taught = sorted(s["id"] for s in scores if "ask_llm_score" in s)
  # Ask-LLM ran on the teacher fraction only, chosen by the hash of seed and id.
  assert taught == sorted(s["id"] for s in scores if quality.in_teacher_fraction(5, s["id"], 0.5))
  assert m["counts"]["scored"] == len(taught) == m["counts"]["teacher"]
  out2, _ = _run(tmp_path, "b", *args)
  assert taught == sorted(s["id"] for s in read_jsonl(os.path.join(out2, "scores", "*.jsonl"))
                          if "ask_llm_score" in s)


@pytest.mark.parametrize("extra,message", [
    (["--sampler=quality_head", "--quality_head=bundled", "--teacher_field=x"], "exactly one"),
    (["--sampler=quality_head", "--teacher_field=x", "--teacher_fraction=0.1"], "exactly one"),
    (["--sampler=ask_llm", "--teacher_field=x"], "only apply to"),
])
def test_teacher_option_errors(tmp_path, extra, message):
  _write(str(tmp_path / "in"), n=3)
  with pytest.raises(select_data.UsageError, match=message):
    _run(tmp_path, "x", *extra)


def test_fit_report_warns_only_on_small_held_back_sets():
  rng = np.random.default_rng(0)
  y = rng.normal(size=200)
  pairs = list(zip(y, y + rng.normal(scale=0.5, size=200)))
  assert "warning" in qh.fit_report(pairs[:4]) and "warning" in qh.fit_report(pairs[:2])
  big = qh.fit_report(pairs)
  assert "warning" not in big and big["held_back"] == 200 and big["auc"] > 0.7


def test_fit_report_sample_is_chosen_by_hash_not_at_random(tmp_path, monkeypatch):
  """Above REPORT_SAMPLE held-back pairs the report uses a subset: the same one in every
  run, whatever the input order."""
  import apache_beam as beam
  from transforms.records import Document
  monkeypatch.setattr(quality, "REPORT_SAMPLE", 5)
  docs = [Document(id=f"d{i:03d}", text="t", source=f"s:{i}", fields={"edu": float(i % 5)},
                   scores={"quality_score": float((i * 7) % 11)}) for i in range(300)]
  reports = []
  for name, order in (("a", docs), ("b", docs[::-1]), ("c", docs[1::2] + docs[::2])):
    path = str(tmp_path / f"{name}.json")
    with TestPipeline(runner="FnApiRunner") as p:
      _ = (p | beam.Create(order)
           | quality.ReportHeadFit(quality.teacher_value_fn("edu"), 0, path))
    reports.append(json.load(open(path)))
  assert reports[0]["held_back"] == 5 and reports[0] == reports[1] == reports[2]
