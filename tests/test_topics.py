"""Topics and --balance_by (issue 31): the topic head (its file, its reproduction by
scripts/fit_topic_head.py, its predictions), the group of a document (a dotted field,
"(missing)"), the cap over topics or a field's values in real job runs on a tiny
embedding model with a tiny topic head, the topic columns in scores/ (JSON Lines and
Parquet) and in selected/, the per-group report section, and the refusals."""
import collections
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline
from hypothesis import given, settings, strategies as st

from beam_pipelines import grouping_options, select_data
from models import topic_head as th
from tests.test_run_safety import _main_error
from tests.test_select_data import read_jsonl, read_selected
from transforms import topics
from transforms.algorithms.cluster_sampling import balanced_quotas
from transforms.records import Document

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("river mountain cell energy market vote poem engine orbit fever harvest bridge "
         "museum glacier protein ledger violin desert tide circuit").split()


# --- the head -------------------------------------------------------------------------


def _head(dim, classes=(1, 2, 3, 4), seed=0, scale=3.0):
  rng = np.random.default_rng(seed)
  return th.TopicHead(weights=rng.standard_normal((dim, len(classes))) * scale,
                      bias=np.zeros(len(classes)), classes=np.array(classes),
                      embedding_model="tiny", l2=0.01)


def test_head_predicts_the_argmax_topic_and_its_probability():
  head = _head(8)
  x = np.random.default_rng(1).standard_normal((20, 8))
  topic, conf = head.predict(x)
  z = x @ head.weights
  p = np.exp(z - z.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  assert list(topic) == list(head.classes[p.argmax(1)])
  np.testing.assert_allclose(conf, p.max(1))
  assert np.all((conf > 1 / 4 - 1e-12) & (conf <= 1))
  with pytest.raises(ValueError, match="8-dimensional embeddings"):
    head.predict(np.zeros((1, 5)))


def test_head_file_round_trip_and_refusals(tmp_path):
  head = _head(6)
  data = th.head_bytes(head)
  assert data == th.head_bytes(head)  # the same bytes every time
  back = th.head_from_bytes(data, "h.npz")
  np.testing.assert_array_equal(back.weights, head.weights)
  assert list(back.classes) == [1, 2, 3, 4] and back.embedding_model == "tiny"
  with pytest.raises(ValueError, match="not an .npz"):
    th.head_from_bytes(b"hello", "x.npz")


def test_bundled_head_and_its_provenance():
  head = th.load_topic_head("bundled")
  assert head.dim == 384 and head.embedding_max_tokens == 128
  assert list(head.classes) == list(range(1, 24))
  prov = head.provenance
  assert prov["dataset"]["documents"] == 3000 and len(prov["dataset"]["sha256"]) == 64
  assert prov["fitted_by"].startswith("scripts/fit_topic_head.py --data ")
  nested = prov["cross_validation"]["nested"]
  assert 0.5 < nested["accuracy"] < 1 and len(nested["outer_folds"]) == 5
  assert th.topic_name(19) == "Science & Tech." and th.topic_name(99) is None
  assert len(th.TOPIC_NAMES) == 24


def _labelled_file(path, n_per=12, seed=0):
  rng = random.Random(seed)
  with open(path, "w") as f:
    for t in range(3):
      for i in range(n_per):
        text = " ".join(rng.choice(WORDS[t * 5:(t + 1) * 5]) for _ in range(12))
        f.write(json.dumps({"id": f"d{t}_{i}", "text": text, "topic_id": t + 1}) + "\n")


def test_fit_script_writes_the_same_bytes_twice(tmp_path, tiny_bert_dir):
  data = tmp_path / "labelled.jsonl"
  _labelled_file(data)
  outs = []
  for name in ("a.npz", "b.npz"):
    out = tmp_path / name
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "fit_topic_head.py"),
                    "--data", str(data), "--output", str(out), "--embedding_model",
                    tiny_bert_dir, "--l2_grid", "0.01,0.1", "--folds", "3"],
                   check=True, cwd=ROOT, capture_output=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    outs.append(out.read_bytes())
  assert outs[0] == outs[1]
  head = th.head_from_bytes(outs[0], "a.npz")
  assert list(head.classes) == [1, 2, 3] and head.dim == 32
  assert head.provenance["dataset"]["documents"] == 36
  assert head.l2 in (0.01, 0.1)


# --- groups ---------------------------------------------------------------------------


def test_value_at_a_dotted_path_and_group_labels():
  record = {"meta": {"source": "web", "n": 3}, "lang": "en", "a.b": "flat"}
  assert topics.value_at(record, ("meta", "source")) == "web"
  assert topics.value_at(record, ("a", "b")) == "flat"
  assert topics.value_at(record, ("meta", "missing")) is None
  assert topics.value_at(record, ("lang", "x")) is None
  assert [topics.group_label(v) for v in ("en", 3, 2.5, True, None, "", ["x"], {"k": 1})] == [
      "en", "3", "2.5", "true", "(missing)", "(missing)", "x", '{"k": 1}']


def test_field_group_keeps_only_the_kept_fields_in_extra():
  doc = Document("1", "t", "s", extra={"meta": {"source": "web"}, "url": "u"})
  got = topics.field_group_fn(("meta", "source"), ["url"])(doc)
  assert got.fields[topics.GROUP_FIELD] == "web" and got.extra == {"url": "u"}
  got = topics.field_group_fn(("lang",), [])(Document("2", "t", "s"))
  assert got.fields[topics.GROUP_FIELD] == "(missing)" and got.extra == {}


@settings(max_examples=100, deadline=None)
@given(sizes=st.dictionaries(st.text(min_size=1, max_size=4), st.integers(0, 30),
                             min_size=1, max_size=8),
       k=st.integers(0, 200), seed=st.integers(0, 5))
def test_quotas_over_text_groups_add_up_and_keep_the_cap(sizes, k, seed):
  cap, quotas = balanced_quotas(sizes, k, seed, lambda g: f"group\x00{g}")
  assert sum(quotas.values()) == min(k, sum(sizes.values()))
  m = int(np.floor(cap))
  for g, q in quotas.items():
    assert q <= sizes[g] and q in (min(m, sizes[g]), m + 1)


def test_balance_by_parsing():
  assert grouping_options.parse_balance_by("field:meta.source") == ("field", "meta.source")
  assert grouping_options.parse_balance_by("topic") == ("topic", None)
  for bad in ("field:", "field:a..b", "domain"):
    with pytest.raises(ValueError):
      grouping_options.parse_balance_by(bad)


# --- the job ------------------------------------------------------------------------


def _corpus(path, n_per=(40, 12, 6, 2), seed=0):
  """Four word pools with falling sizes; a nested meta.source on most records."""
  rng = random.Random(seed)
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "docs.jsonl"), "w") as f:
    for t, n in enumerate(n_per):
      for i in range(n):
        text = " ".join(rng.choice(WORDS[t * 5:(t + 1) * 5]) for _ in range(15))
        rec = {"id": f"t{t}_{i:03d}", "text": text}
        if i % 5:
          rec["meta"] = {"source": ["forum", "news", "blog"][(i + t) % 3]}
        f.write(json.dumps(rec) + "\n")


def _run(tmp_path, model, name, *extra):
  out = str(tmp_path / name)
  argv = [f"--input={tmp_path}/in/*.jsonl", f"--output={out}", "--id_field=id",
          f"--embedding_model={model}", "--device=cpu", "--seed=7", "--num_clusters=4",
          "--kmeans_iterations=3", "--keep_fraction=0.25", *extra]
  return out, select_data.run(argv, test_pipeline=TestPipeline(runner="FnApiRunner"))


def _check_cap(scores, key, k, seed=7):
  sizes = collections.Counter(key(s) for s in scores)
  chosen = collections.Counter(key(s) for s in scores if s["selected"])
  _, quotas = balanced_quotas(sizes, k, seed, lambda g: f"group\x00{g}")
  assert {g: chosen.get(g, 0) for g in sizes} == quotas


TOPIC_FEATURES = {"id": tf.io.FixedLenFeature([], tf.string),
                  "topic": tf.io.FixedLenFeature([], tf.int64),
                  "topic_confidence": tf.io.FixedLenFeature([], tf.float32)}


def test_balance_by_topic_caps_each_topic(tmp_path, tiny_bert_dir):
  _corpus(str(tmp_path / "in"))
  head_path = tmp_path / "topic_head.npz"
  head_path.write_bytes(th.head_bytes(_head(32, seed=3, scale=30.0)))
  common = ("--sampler=balanced", f"--topic_head={head_path}")
  out, metrics = _run(tmp_path, tiny_bert_dir, "t", *common, "--balance_by=topic")
  scores = read_jsonl(os.path.join(out, "scores", "*.jsonl"))
  assert len({s["topic"] for s in scores}) >= 2
  assert all(s["topic_name"] == th.topic_name(s["topic"]) for s in scores)
  assert all(0.25 <= s["topic_confidence"] <= 1 for s in scores)
  _check_cap(scores, lambda s: s["topic"], 15)
  assert metrics["clusters"]["balanced"]["balance_by"] == "topic"
  # `balanced` over topics fills each topic's quota with its most confident pages.
  for t in {s["topic"] for s in scores}:
    members = sorted((s for s in scores if s["topic"] == t),
                     key=lambda s: -s["topic_confidence"])
    q = sum(s["selected"] for s in members)
    assert {s["id"] for s in members[:q]} == {s["id"] for s in members if s["selected"]}
  # The selected records carry the topic; the cap over clusters selects differently.
  selected = read_selected(out, TOPIC_FEATURES)
  assert {e["id"]: e["topic"] for e in selected} == {
      s["id"]: s["topic"] for s in scores if s["selected"]}
  out2, _ = _run(tmp_path, tiny_bert_dir, "c", *common, "--scores_format=parquet")
  import pyarrow as pa
  import pyarrow.parquet as pq
  table = pq.read_table(os.path.join(out2, "scores"))
  assert table.schema.field("topic").type == pa.int64()
  assert table.schema.field("topic_name").type == pa.string()
  rows = table.to_pylist()
  assert {r["id"]: r["topic"] for r in rows} == {s["id"]: s["topic"] for s in scores}
  assert ({r["id"] for r in rows if r["selected"]}
          != {s["id"] for s in scores if s["selected"]})
  # The report's per-topic section and groups.json.
  groups = json.load(open(os.path.join(out, "groups.json")))
  assert groups["balance_by"] == "topic" and groups["selected"] == 15
  assert sum(g["documents"] for g in groups["groups"]) == 60
  assert "Selected share and scores per group" in open(os.path.join(out, "report.html")).read()


def test_balance_by_a_nested_field_with_a_missing_group(tmp_path, tiny_bert_dir):
  _corpus(str(tmp_path / "in"))
  out, metrics = _run(tmp_path, tiny_bert_dir, "f", "--sampler=balanced_far",
                      "--balance_by=field:meta.source")
  scores = read_jsonl(os.path.join(out, "scores", "*.jsonl"))
  source = {}
  for line in open(tmp_path / "in" / "docs.jsonl"):
    rec = json.loads(line)
    source[rec["id"]] = rec.get("meta", {}).get("source", "(missing)")
  _check_cap(scores, lambda s: source[s["id"]], 15)
  assert metrics["clusters"]["balanced"]["groups"] == 4
  assert metrics["clusters"]["balanced"]["missing_field"] == sum(
      v == "(missing)" for v in source.values()) == 14
  assert "meta" not in scores[0]  # the field is not copied to the outputs
  groups = json.load(open(os.path.join(out, "groups.json")))
  by_name = {g["group"]: g for g in groups["groups"]}
  assert by_name["(missing)"]["documents"] == sum(v == "(missing)" for v in source.values())
  assert set(by_name) == {"forum", "news", "blog", "(missing)"}
  assert "cluster_distance" in by_name["forum"]["scores"]
  # Inside each group, the quota goes to the documents farthest from their centroid.
  for g in by_name:
    members = sorted((s for s in scores if source[s["id"]] == g),
                     key=lambda s: (-s["cluster_distance"], s["id"]))
    q = sum(s["selected"] for s in members)
    assert {s["id"] for s in members[:q]} == {s["id"] for s in members if s["selected"]}
  page = open(os.path.join(out, "report.html")).read()
  assert "Selected share and scores per group" in page and "(missing)" in page


def test_balance_by_refusals(tmp_path, tiny_bert_dir, capsys):
  os.makedirs(tmp_path / "in")
  (tmp_path / "in" / "d.jsonl").write_text('{"text": "a"}\n')
  base = [f"--input={tmp_path}/in/*.jsonl", f"--output={tmp_path}/o"]
  assert "applies to the balanced samplers" in _main_error(
      base + ["--sampler=random", "--balance_by=topic"], capsys)
  assert "give a field name after field:" in _main_error(
      base + ["--sampler=balanced", "--balance_by=field:"], capsys)
  err = _main_error(base + ["--sampler=balanced", "--balance_by=topic",
                            f"--embedding_model={tiny_bert_dir}"], capsys)
  assert "--topic_head=PATH" in err
  assert "does not exist" in _main_error(
      base + ["--sampler=balanced", f"--topic_head={tmp_path}/none.npz"], capsys)
  (tmp_path / "bad.npz").write_bytes(b"not a head")
  assert "is not a topic head" in _main_error(
      base + ["--sampler=balanced", f"--topic_head={tmp_path}/bad.npz"], capsys)


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(st.tuples(st.booleans(), st.floats(0, 1), st.floats(-5, 5)),
                     min_size=1, max_size=60),
       cuts=st.lists(st.integers(0, 60), max_size=4))
def test_group_stats_combiner_is_the_same_in_any_merge_order(rows, cuts):
  from transforms import group_stats
  fn = group_stats.GroupStatsFn(["q"])
  elements = [(sel, h, [v]) for sel, h, v in rows]

  def acc_of(part):
    acc = fn.create_accumulator()
    for e in part:
      acc = fn.add_input(acc, e)
    return acc
  bounds = sorted({0, len(elements), *[min(c, len(elements)) for c in cuts]})
  parts = [elements[a:b] for a, b in zip(bounds, bounds[1:])]
  whole = fn.extract_output(acc_of(elements))
  merged = fn.extract_output(fn.merge_accumulators([acc_of(p) for p in reversed(parts)]))
  assert whole == merged
  assert whole["documents"] == len(rows) and whole["selected"] == sum(r[0] for r in rows)
  assert whole["scores"]["q"]["median"] == round(float(np.median([r[2] for r in rows])), 6)
