"""The cluster samplers: the balanced cap and its quotas, SemDeDup, SSL prototypes, and
the job end to end on the FnApiRunner (a tiny embedding model, and the bundled one for
SemDeDup's planted near-copies), with the refusals and edge cases of the issue."""
import collections
import json
import os
import random

import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import given, settings, strategies as st

from beam_pipelines import select_data
from tests.test_run_safety import _main_error
from tests.test_select_data import read_jsonl, read_selected
from tests.tiny_models import _SENTENCES
from transforms import cluster_sampling as cs
from transforms import kmeans
from transforms.records import Document

WORDS = ("river mountain cell energy market vote poem engine orbit fever harvest bridge "
         "museum glacier protein ledger violin desert tide circuit").split()


# --- the cap and the quotas -----------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(sizes=st.lists(st.integers(0, 50), min_size=1, max_size=12), k=st.integers(0, 400),
       seed=st.integers(0, 10))
def test_quotas_add_up_to_k_and_follow_the_cap(sizes, k, seed):
  sizes = dict(enumerate(sizes))
  cap, quotas = cs.balanced_quotas(sizes, k, seed)
  total = sum(sizes.values())
  assert sum(quotas.values()) == min(k, total)
  m = int(np.floor(cap))
  for c, n in sizes.items():
    q = quotas.get(c, 0)
    assert q <= n
    # min(cap, size) up to the tie rule: base min(m, n), one more for some clusters > m.
    assert q in (min(m, n), m + 1) and (q == min(m, n) or n > m)
  if 0 < k < total:
    assert sum(min(cap, n) for n in sizes.values()) == pytest.approx(k)


def test_quotas_tie_rule_depends_on_the_seed_only():
  sizes = {c: 10 for c in range(7)}
  a = cs.balanced_quotas(sizes, 30, seed=1)
  b = cs.balanced_quotas(dict(reversed(list(sizes.items()))), 30, seed=1)
  assert a == b and a[0] == pytest.approx(30 / 7)
  assert sorted(a[1].values()) == [4, 4, 4, 4, 4, 5, 5]


@settings(max_examples=50, deadline=None)
@given(keys=st.lists(st.integers(0, 10_000), min_size=1, max_size=60, unique=True),
       quota=st.integers(0, 20), splits=st.lists(st.integers(1, 60), max_size=5))
def test_smallest_keys_fn_any_merge_order(keys, quota, splits):
  fn = cs.SmallestKeysFn()
  cuts = sorted({0, len(keys), *[min(s, len(keys)) for s in splits]})
  accs = []
  for a, b in zip(cuts, cuts[1:]):
    acc = fn.create_accumulator()
    for key in keys[a:b]:
      acc = fn.add_input(acc, (key, quota))
    accs.append(acc)
  want = sorted(keys)[min(quota, len(keys)) - 1] if quota else None
  assert fn.extract_output(fn.merge_accumulators(accs)) == want
  assert fn.extract_output(fn.merge_accumulators(accs[::-1])) == want


def _doc(i, cluster, dist=0.0, emb=None):
  return Document(id=f"d{i:03d}", text="t", source=f"f:{i}",
                  scores={"cluster": cluster, "cluster_distance": dist}, embedding=emb)


def test_cluster_quota_marks_exactly_the_quota_of_each_cluster():
  from transforms.sampling import random_key
  docs = [_doc(i, c) for i, c in enumerate([0] * 40 + [1] * 8 + [2] * 2)]
  key = random_key(5)
  cap, quotas = cs.balanced_quotas({0: 40, 1: 8, 2: 2}, 15, 5)
  want = set()
  for c in quotas:
    members = sorted((d for d in docs if d.scores["cluster"] == c), key=key)
    want |= {d.id for d in members[:quotas[c]]}
  with TestPipeline(runner="FnApiRunner") as p:
    import apache_beam as beam
    pcoll = p | beam.Create(docs)
    total = beam.pvalue.AsSingleton(pcoll | "N" >> beam.combiners.Count.Globally())
    out = pcoll | cs.ClusterQuota(key, cs.cluster_sizes(pcoll), total, None, 15, seed=5)
    marked = out["documents"] | beam.Filter(lambda d: d.in_quota) | beam.Map(lambda d: d.id)
    assert_that(marked, equal_to(sorted(want)))
    assert_that(out["plan"] | beam.Map(lambda p: (p.k, p.quotas)),
                equal_to([(15, quotas)]), label="plan")
  assert quotas[2] == 2 and sorted(quotas.values()) == [2, 6, 7]  # cap 6.5


# --- SemDeDup ---------------------------------------------------------------------------


def _unit(x):
  x = np.asarray(x, np.float32)
  return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_dedup_group_keeps_the_first_of_each_near_copy_group():
  rng = np.random.default_rng(0)
  base = _unit(rng.normal(size=(30, 64)))
  copies = _unit(base[:5] + 0.01 * rng.normal(size=(5, 64)))  # cos about 0.997
  x = np.concatenate([base, copies, copies[:1] + 0])
  dup = cs.dedup_group(x, eps=0.05, block=8)  # blocks smaller than the group
  assert dup[:30] == [None] * 30
  assert dup[30:35] == [0, 1, 2, 3, 4]
  assert dup[35] == 0  # an exact copy of a duplicate points at the kept original
  # Quadratic reference: the same answer.
  ref = []
  kept = []
  for i in range(len(x)):
    sims = [float(x[i] @ x[j]) for j in kept]
    j = int(np.argmax(sims)) if sims else None
    if sims and sims[j] > 0.95:
      ref.append(kept[j])
    else:
      ref.append(None)
      kept.append(i)
  assert dup == ref


def test_semdedup_splits_large_clusters_by_hyperplanes_and_finds_copies_across_bundles():
  import apache_beam as beam
  rng = np.random.default_rng(1)
  base = _unit(rng.normal(size=(60, 32)))
  copies = _unit(base[:10] + 0.002 * rng.normal(size=(10, 32)))
  docs = [_doc(i, 0, emb=v) for i, v in enumerate(np.concatenate([base, copies]))]
  with TestPipeline(runner="FnApiRunner") as p:
    pcoll = p | beam.Create(docs)
    out = pcoll | cs.SemDeDup(eps=0.05, max_group=20, seed=3, sizes=cs.cluster_sizes(pcoll))
    dups = out | beam.Filter(lambda d: d.scores["duplicate_of"] is not None) | beam.Map(
        lambda d: (d.id, d.scores["duplicate_of"]))
    # 70 documents over max_group 20: 3 planes + 1 -> up to 16 parts; a copy about 0.6
    # degrees from its original is split from it by a plane with chance 0.6/180 each.
    assert_that(dups, equal_to([(f"d{60 + i:03d}", f"d{i:03d}") for i in range(10)]))
  assert cs.subgroup_bits(70, 20) == 3 and cs.subgroup_bits(20, 20) == 0


# --- the job end to end -----------------------------------------------------------------


def _topics_corpus(path, n_per=(40, 12, 6, 2), seed=0):
  """Documents from a few word pools (topics), sizes falling off, with ids t{topic}_{i}."""
  rng = random.Random(seed)
  pools = [WORDS[i * 5:(i + 1) * 5] for i in range(4)]
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "docs.jsonl"), "w") as f:
    for t, n in enumerate(n_per):
      for i in range(n):
        text = " ".join(rng.choice(pools[t]) for _ in range(15))
        f.write(json.dumps({"id": f"t{t}_{i:03d}", "text": text}) + "\n")


def _run(tmp_path, model, name, *extra, workers=None):
  out = str(tmp_path / name)
  argv = [f"--input={tmp_path}/in/*.jsonl", f"--output={out}", "--id_field=id",
          f"--embedding_model={model}", "--device=cpu", "--seed=7", "--report=false", *extra]
  if not any(e.startswith("--keep_") for e in extra):
    argv.append("--keep_fraction=0.25")
  if workers:
    argv += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_threading"]
  return out, select_data.run(argv, test_pipeline=TestPipeline(runner="FnApiRunner"))


CLUSTER_FEATURES = {"id": tf.io.FixedLenFeature([], tf.string),
                    "rank": tf.io.FixedLenFeature([], tf.int64),
                    "cluster": tf.io.FixedLenFeature([], tf.int64),
                    "cluster_distance": tf.io.FixedLenFeature([], tf.float32)}


def test_balanced_takes_min_cap_size_from_each_cluster(tmp_path, tiny_bert_dir):
  _topics_corpus(str(tmp_path / "in"))
  out, metrics = _run(tmp_path, tiny_bert_dir, "a", "--sampler=balanced", "--num_clusters=4",
                      "--kmeans_iterations=3")
  out2, _ = _run(tmp_path, tiny_bert_dir, "b", "--sampler=balanced", "--num_clusters=4",
                 "--kmeans_iterations=3", workers=2)
  scores = read_jsonl(os.path.join(out, "scores", "*.jsonl"))
  sizes = collections.Counter(s["cluster"] for s in scores)
  chosen = collections.Counter(s["cluster"] for s in scores if s["selected"])
  clusters = metrics["clusters"]
  cap = clusters["balanced"]["cap"]
  assert sum(chosen.values()) == 15 == metrics["counts"]["selected"]
  m = int(np.floor(cap))
  for c, n in sizes.items():
    assert chosen[c] in (min(m, n), m + 1) and chosen[c] <= n
  assert clusters["clusters"] == 4 and clusters["max"] == max(sizes.values())
  assert clusters["min"] == min(sizes.values()) if len(sizes) == 4 else clusters["empty"]
  # The training output carries the cluster; the same selection with 2 workers.
  selected = read_selected(out, CLUSTER_FEATURES)
  assert {e["id"]: e["cluster"] for e in selected} == {
      s["id"]: s["cluster"] for s in scores if s["selected"]}
  assert [e["id"] for e in selected] == [e["id"] for e in read_selected(out2, CLUSTER_FEATURES)]
  # clusters.npz assigns new data: the same clusters with --clusters_from.
  out3, m3 = _run(tmp_path, tiny_bert_dir, "c", "--sampler=balanced",
                  f"--clusters_from={out}/clusters.npz")
  again = {s["id"]: s["cluster"] for s in read_jsonl(os.path.join(out3, "scores", "*.jsonl"))}
  assert again == {s["id"]: s["cluster"] for s in scores}
  assert m3["clusters"]["path"] == f"{out}/clusters.npz"
  assert not os.path.exists(os.path.join(out3, "clusters.npz"))
  centroids, params = kmeans.load_clusters(f"{out}/clusters.npz")
  assert centroids.shape[0] == 4 and params["iterations"] == 3 and params["seed"] == 7


def test_prototypes_keeps_the_farthest_from_their_centroid(tmp_path, tiny_bert_dir):
  _topics_corpus(str(tmp_path / "in"))
  out, _ = _run(tmp_path, tiny_bert_dir, "p", "--sampler=prototypes", "--num_clusters=3",
                "--report=true")
  scores = read_jsonl(os.path.join(out, "scores", "*.jsonl"))
  # The report shows each cluster's selected share (counted in the pipeline).
  stats = json.load(open(os.path.join(out, "report.json")))
  want = collections.Counter(s["cluster"] for s in scores)
  assert {c["cluster"]: c["documents"] for c in stats["clusters"]} == dict(want)
  assert sum(c["selected"] for c in stats["clusters"]) == 15
  assert "Selected share per cluster" in open(os.path.join(out, "report.html")).read()
  by_distance = sorted(scores, key=lambda s: (-s["cluster_distance"], s["id"]))
  assert {s["id"] for s in scores if s["selected"]} == {s["id"] for s in by_distance[:15]}
  ranked = read_selected(out, CLUSTER_FEATURES)
  assert [e["id"] for e in ranked] == [s["id"] for s in by_distance[:15]]


def test_ask_llm_balanced_fills_quotas_with_the_best(tmp_path, tiny_bert_dir, tiny_causal_lm_dir):
  _topics_corpus(str(tmp_path / "in"), n_per=(12, 6, 2, 0))
  out, metrics = _run(tmp_path, tiny_bert_dir, "q", "--sampler=ask_llm_balanced",
                      "--num_clusters=3", f"--scorer_model={tiny_causal_lm_dir}",
                      "--keep_count=6")
  scores = read_jsonl(os.path.join(out, "scores", "*.jsonl"))
  chosen = collections.Counter(s["cluster"] for s in scores if s["selected"])
  _, quotas = cs.balanced_quotas(collections.Counter(s["cluster"] for s in scores), 6, 7)
  assert dict(chosen) == {c: q for c, q in quotas.items() if q}
  for c, q in quotas.items():
    members = sorted((s for s in scores if s["cluster"] == c),
                     key=lambda s: (-s["ask_llm_score"], s["id"]))
    assert {s["id"] for s in members[:q]} == {s["id"] for s in members if s["selected"]}
  assert metrics["clusters"]["balanced"]["k"] == 6


def test_fewer_documents_than_clusters_and_identical_documents(tmp_path, tiny_bert_dir):
  os.makedirs(tmp_path / "in")
  with open(tmp_path / "in" / "docs.jsonl", "w") as f:
    for i in range(8):  # all identical: one distinct embedding
      f.write(json.dumps({"id": f"same{i}", "text": "one page copied again"}) + "\n")
  # --dedup=none: the copies must reach the clusters and SemDeDup (--dedup has its tests).
  out, metrics = _run(tmp_path, tiny_bert_dir, "s", "--sampler=balanced", "--num_clusters=20",
                      "--dedup=none")
  clusters = metrics["clusters"]
  assert clusters["clusters"] == 8 and clusters["empty"] == 7 and clusters["max"] == 8
  assert metrics["counts"]["selected"] == 2
  out, metrics = _run(tmp_path, tiny_bert_dir, "d", "--sampler=semdedup", "--dedup=none")
  scores = read_jsonl(os.path.join(out, "scores", "*.jsonl"))
  assert sorted(str(s["duplicate_of"]) for s in scores) == ["None"] + ["same0"] * 7
  assert [s["id"] for s in scores if s["selected"]][0] == "same0"
  assert metrics["counts"]["semdedup:duplicates"] == 7


def test_cluster_option_refusals(tmp_path, tiny_bert_dir, capsys):
  os.makedirs(tmp_path / "in")
  (tmp_path / "in" / "d.jsonl").write_text('{"text": "a"}\n')
  base = [f"--input={tmp_path}/in/*.jsonl", f"--output={tmp_path}/o"]
  assert "--num_clusters: must be auto or a positive integer" in _main_error(
      base + ["--sampler=balanced", "--num_clusters=0"], capsys)
  assert "use --keep_fraction or --keep_count" in _main_error(
      base + ["--sampler=balanced", "--keep_tokens=100", "--tokenizer=x"], capsys)
  assert "--clusters_from is used by the samplers balanced" in _main_error(
      base + ["--sampler=density", f"--clusters_from={tmp_path}/c.npz"], capsys)
  assert "does not exist" in _main_error(
      base + ["--sampler=balanced", f"--clusters_from={tmp_path}/c.npz"], capsys)
  kmeans.save_clusters(np.eye(2, 4, dtype=np.float32), {"embedding_model": "other"},
                       str(tmp_path / "c.npz"))
  err = _main_error(base + ["--sampler=prototypes", f"--clusters_from={tmp_path}/c.npz",
                            f"--embedding_model={tiny_bert_dir}"], capsys)
  assert "'other' embeddings" in err and "cluster again" in err
  assert "raise --kmeans_sample" in _main_error(
      base + ["--sampler=balanced", "--num_clusters=50", "--kmeans_sample=10"], capsys)


def test_semdedup_removes_planted_near_copies_with_the_bundled_model(tmp_path):
  """The bundled MiniLM: 30 distinct documents, and 3 near-copies (a word dropped) of
  each of 4 of them; keep 25%: no near-copy is selected, and each is marked as the
  duplicate of its original."""
  sentences = [s for s in _SENTENCES.splitlines() if s.strip()]
  originals = [" ".join(sentences[i:i + 2]) for i in range(0, 60, 2)][:30]
  os.makedirs(tmp_path / "in")
  with open(tmp_path / "in" / "docs.jsonl", "w") as f:
    for i, text in enumerate(originals):
      f.write(json.dumps({"id": f"o{i:02d}", "text": text}) + "\n")
    for i in range(4):
      words = originals[i].split()
      for j in range(3):
        near = " ".join(w for n, w in enumerate(words) if n != 3 + 4 * j)
        f.write(json.dumps({"id": f"o{i:02d}#copy{j}", "text": near}) + "\n")
  out, metrics = _run(tmp_path, "default", "bundled", "--sampler=semdedup",
                      "--num_clusters=4")
  scores = read_jsonl(os.path.join(out, "scores", "*.jsonl"))
  copies = {s["id"]: s["duplicate_of"] for s in scores if "#copy" in s["id"]}
  assert copies == {i: i.split("#")[0] for i in copies}
  assert not [s for s in scores if s["duplicate_of"] and "#copy" not in s["id"]]
  assert metrics["counts"]["selected"] == 10
  assert not [s for s in scores if s["selected"] and "#copy" in s["id"]]


def test_finalize_in_the_pipeline_reports_the_clusters(tmp_path, tiny_bert_dir):
  """A launch nobody waits for (a Flex Template) writes metrics.json in the pipeline: it
  carries the cluster sizes and the cap too."""
  _topics_corpus(str(tmp_path / "in"))
  out = str(tmp_path / "t")
  got = select_data.run([f"--input={tmp_path}/in/*.jsonl", f"--output={out}", "--id_field=id",
                         f"--embedding_model={tiny_bert_dir}", "--device=cpu",
                         "--sampler=balanced", "--num_clusters=4", "--keep_count=12",
                         "--report=false", "--scores_format=parquet",
                         f"--template_location={tmp_path}/template.json"],
                        test_pipeline=TestPipeline(runner="FnApiRunner"))
  assert got is None
  metrics = json.load(open(os.path.join(out, "metrics.json")))
  assert metrics["clusters"]["clusters"] == 4 and metrics["clusters"]["balanced"]["k"] == 12
  assert metrics["clusters"]["documents"] == 60 == metrics["counts"]["valid"]
  assert os.path.exists(os.path.join(out, "clusters.npz"))
  # Parquet scores/ (the default for gs:// outputs, so for template launches; this
  # combination once failed while the graph was built): `cluster` is an int64 column.
  import pyarrow as pa
  import pyarrow.parquet as pq
  table = pq.read_table(os.path.join(out, "scores"))
  assert table.schema.field("cluster").type == pa.int64()
  assert sorted(set(table.column("cluster").to_pylist())) == [0, 1, 2, 3]
