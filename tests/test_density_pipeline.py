"""Density and random sampling end to end on the FnApiRunner, with a tiny embedding
model built in the test: determinism across runs and worker counts, the sketch artifact,
--sketch_from, and ask_llm_density."""
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

from beam_pipelines import select_data
from tests.test_select_data import read_jsonl, read_selected
from transforms import sketch_io

WORDS = ("river mountain cell energy market vote poem engine orbit fever harvest bridge "
         "museum glacier protein ledger violin desert tide circuit").split()


def _corpus(path, n=60, dupes=20):
  """n varied documents plus `dupes` copies of one document (a dense cluster)."""
  rng = np.random.default_rng(0)
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "docs.jsonl"), "w") as f:
    for i in range(n):
      words = rng.choice(WORDS, size=12)
      f.write(json.dumps({"id": f"u{i:03d}", "text": " ".join(words)}) + "\n")
    for i in range(dupes):
      f.write(json.dumps({"id": f"dup{i:03d}", "text": "the same page again " * 5}) + "\n")


def _run(tmp_path, bert, name, *extra, test_pipeline=None):
  out = str(tmp_path / name)
  argv = [f"--input={tmp_path}/in/*.jsonl", f"--output={out}", "--id_field=id",
          f"--embedding_model={bert}", "--device=cpu", "--keep_fraction=0.25",
          "--sketch_rows=64", "--sketch_buckets=512", "--seed=7",
          # The corpus plants 20 copies for density to down-weight: --dedup would remove them.
          "--dedup=none",
          "--report=false", *extra]  # the report has its own tests
  metrics = select_data.run(argv, test_pipeline=test_pipeline or TestPipeline(runner="FnApiRunner"))
  return out, metrics


DENSITY_FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "text": tf.io.FixedLenFeature([], tf.string),
    "rank": tf.io.FixedLenFeature([], tf.int64),
    "density": tf.io.FixedLenFeature([], tf.float32),
    "sampling_weight": tf.io.FixedLenFeature([], tf.float32),
}
RANDOM_FEATURES = {k: DENSITY_FEATURES[k] for k in ("id", "text", "rank")}


def _selected_ids(out, features=DENSITY_FEATURES):
  return [e["id"] for e in read_selected(out, features)]


def test_density_sampling_is_deterministic_and_downweights_duplicates(tmp_path, tiny_bert_dir):
  _corpus(str(tmp_path / "in"))
  out1, m1 = _run(tmp_path, tiny_bert_dir, "a", "--sampler=density")
  out2, _ = _run(tmp_path, tiny_bert_dir, "b", "--sampler=density")
  out3, _ = _run(tmp_path, tiny_bert_dir, "c", "--sampler=density",
                 "--direct_num_workers=2", "--direct_running_mode=multi_threading")
  ids = _selected_ids(out1)
  assert len(ids) == 20 == m1["counts"]["selected"]
  assert ids == _selected_ids(out2) == _selected_ids(out3)
  scores = {s["id"]: s for s in read_jsonl(os.path.join(out1, "scores", "*.jsonl"))}
  assert len(scores) == 80
  # The 20 identical copies share every bucket: raw count >= 20, and debiased (minus the
  # n/B spurious collisions, times B/(B-1)) >= (20 - 80/512) * 512/511.
  dup = [s for i, s in scores.items() if i.startswith("dup")]
  assert all(s["density"] >= (20 - 80 / 512) * 512 / 511 - 1e-4 for s in dup)
  assert all(s["density"] >= 1 for s in scores.values())
  assert all(s["sampling_weight"] == pytest.approx(1 / s["density"]) for s in scores.values())
  # Fewer copies are drawn than their 25% share of the corpus would give at random.
  assert sum(i.startswith("dup") for i in ids) < 5
  # The sketch artifact: counts sum to N per row, and it scores new data the same way.
  sketch = sketch_io.load_sketch(os.path.join(out1, "sketch.npz"))
  assert sketch.n == 80 and (sketch.counts.sum(axis=1) == 80).all()
  assert sketch.params.rows == 64 and sketch.params.buckets == 512
  assert sketch.params.groups == 8  # auto: ceil(sqrt(64)) shared projection groups
  assert m1["models"]["embedding"] == tiny_bert_dir and m1["counts"]["embedded"] == 80
  assert m1["sketch"] == {**sketch.params.to_dict(), "documents": 80,
                          "path": os.path.join(out1, "sketch.npz")}
  assert m1["sketch"]["bucket_width"] > 0  # auto, from the sampled embeddings

  out4, _ = _run(tmp_path, tiny_bert_dir, "d", "--sampler=density",
                 f"--sketch_from={out1}/sketch.npz")
  again = {s["id"]: s["density"] for s in read_jsonl(os.path.join(out4, "scores", "*.jsonl"))}
  assert again == pytest.approx({i: s["density"] for i, s in scores.items()})
  assert not os.path.exists(os.path.join(out4, "sketch.npz"))

  # Independent rows: another hash family, the same behaviour on the duplicates.
  out5, m5 = _run(tmp_path, tiny_bert_dir, "e", "--sampler=density", "--sketch_groups=0")
  assert sketch_io.load_sketch(os.path.join(out5, "sketch.npz")).params.groups == 0
  assert m5["counts"]["selected"] == 20 and sum(i.startswith("dup") for i in _selected_ids(out5)) < 5


@pytest.mark.parametrize("extra,message", [
    (["--sketch_groups=3"], "groups^2 >= rows"),
    (["--hashes_per_row=17"], "hashes_per_row=17"),
    (["--hashes_per_row=1", "--sketch_groups=8"], "hashes_per_row=1"),
])
def test_bad_sketch_options_fail_before_the_run(tmp_path, tiny_bert_dir, extra, message):
  _corpus(str(tmp_path / "in"), n=4, dupes=1)
  with pytest.raises(select_data.UsageError, match=message.replace("^", r"\^")):
    _run(tmp_path, tiny_bert_dir, "bad", "--sampler=density", *extra)
  assert not os.path.exists(tmp_path / "bad")


def test_random_and_ask_llm_density(tmp_path, tiny_bert_dir, tiny_causal_lm_dir):
  _corpus(str(tmp_path / "in"), n=30, dupes=10)
  out, m = _run(tmp_path, tiny_bert_dir, "r", "--sampler=random")
  ids = _selected_ids(out, RANDOM_FEATURES)
  assert len(ids) == 10 and ids == _selected_ids(
      _run(tmp_path, tiny_bert_dir, "r2", "--sampler=random")[0], RANDOM_FEATURES)
  assert "embedding" not in m["models"]  # random needs no model

  out, m = _run(tmp_path, tiny_bert_dir, "q", "--sampler=ask_llm_density",
                f"--scorer_model={tiny_causal_lm_dir}", "--max_tokens=128")
  scores = read_jsonl(os.path.join(out, "scores", "*.jsonl"))
  assert m["counts"]["selected"] == 10 and m["counts"]["quality_pool"] == 20
  # Selected documents come from the Ask-LLM pool: the top 20 by score.
  pool = {s["id"] for s in sorted(scores, key=lambda s: (-s["ask_llm_score"], s["id"]))[:20]}
  chosen = [s for s in scores if s["selected"]]
  assert len(chosen) == 10 and {s["id"] for s in chosen} <= pool
  assert sorted(s["rank"] for s in chosen) == list(range(10))
  assert all("density" in s and "ask_llm_score" in s for s in scores)
  feats = read_selected(out, {**DENSITY_FEATURES,
                              "ask_llm_score": tf.io.FixedLenFeature([], tf.float32)})
  assert [e["rank"] for e in feats] == list(range(10))
  by_id = {s["id"]: s for s in chosen}
  assert all(by_id[e["id"]]["rank"] == e["rank"] for e in feats)


def _many_docs(d, n):
  rng = np.random.default_rng(3)
  words = ("river mountain cell energy market vote poem engine orbit fever harvest bridge "
           "museum glacier protein ledger violin desert tide circuit").split()
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, "docs.jsonl"), "w") as f:
    for i in range(n):
      f.write(json.dumps({"id": f"u{i:05d}", "text": " ".join(rng.choice(words, 10))}) + "\n")


def test_density_is_deterministic_above_the_width_sample(tmp_path, tiny_bert_dir):
  """2,000 documents: more than the 500 the auto width is computed from, so a random
  sample would change the width and the ranks between runs and worker counts."""
  _many_docs(str(tmp_path / "in"), 2000)
  runs = []
  for name, extra in (("a", []), ("b", []),
                      ("c", ["--direct_num_workers=2",
                             "--direct_running_mode=multi_threading"])):
    out = str(tmp_path / name)
    metrics = select_data.run(
        [f"--input={tmp_path}/in/*.jsonl", f"--output={out}", "--id_field=id",
         "--sampler=density", f"--embedding_model={tiny_bert_dir}", "--device=cpu",
         "--keep_fraction=0.1", "--sketch_rows=64", "--sketch_buckets=512", "--seed=5",
         "--embedding_max_tokens=16", *extra],
        test_pipeline=TestPipeline(runner="FnApiRunner", options=PipelineOptions(extra)))
    ranks = {s["id"]: s["rank"] for s in read_jsonl(os.path.join(out, "scores", "*.jsonl"))
             if s["selected"]}
    runs.append((metrics["sketch"]["bucket_width"], ranks))
  assert len(runs[0][1]) == 200
  assert runs[0] == runs[1] == runs[2]
