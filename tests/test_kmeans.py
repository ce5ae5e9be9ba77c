"""k-means in Beam: exact sums in any merge order, blobs recovered, the same centroids on
1 and 2 workers, and defined behaviour on degenerate input."""
import os
import tempfile

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
import apache_beam as beam
from hypothesis import given, settings, strategies as st

from transforms import kmeans
from transforms.records import Document


def _unit(x):
  x = np.asarray(x, np.float32)
  return x / np.linalg.norm(x, axis=1, keepdims=True)


def _blobs(n_per=60, k=5, d=16, spread=0.05, seed=0):
  rng = np.random.default_rng(seed)
  centers = _unit(rng.normal(size=(k, d)))
  x = np.concatenate([_unit(c + spread * rng.normal(size=(n_per, d))) for c in centers])
  truth = np.repeat(np.arange(k), n_per)
  return x, truth


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 40), min_size=1, max_size=6), st.integers(0, 10**6))
def test_cluster_sums_are_exact_in_any_merge_order(sizes, seed):
  rng = np.random.default_rng(seed)
  k, d = 4, 8
  parts = []
  for n in sizes:
    x = _unit(rng.normal(size=(n, d)))
    parts.append(kmeans.ClusterSums().add(x, rng.integers(0, k, n), k))
  fn = kmeans.ClusterSumsFn()
  forward = fn.merge_accumulators([fn.create_accumulator(), *parts])
  copies = [kmeans.ClusterSums(p.sums.copy(), p.counts.copy()) for p in parts]
  order = rng.permutation(len(copies))
  backward = fn.merge_accumulators([copies[i] for i in order])
  assert np.array_equal(forward.sums, backward.sums)
  assert np.array_equal(forward.counts, backward.counts)
  assert forward.counts.sum() == sum(sizes)


def _docs(x):
  return [Document(id=f"d{i:04d}", text="", source="t", embedding=v) for i, v in enumerate(x)]


def _fit(x, k, iterations=5, sample=None, options=None):
  """The fitted centroids, written by the pipeline and read back."""
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "centroids.npy")
    with TestPipeline(runner="FnApiRunner", options=options) as p:
      centroids = (p | beam.Create(_docs(x), reshuffle=False)
                   | kmeans.FitKMeans(k, iterations, sample or len(x), seed=3))
      centroids | beam.Map(lambda c: np.save(path, c))
    return np.load(path)


def test_well_separated_blobs_are_recovered():
  x, truth = _blobs()
  centroids = _fit(x, 5)
  labels, dist = kmeans.assign(x, centroids)
  # Every blob is one cluster and every cluster one blob.
  pairs = {(t, l) for t, l in zip(truth, labels)}
  assert len(pairs) == 5 and len({l for _, l in pairs}) == 5
  assert dist.max() < 0.1


def test_same_centroids_on_one_and_two_workers():
  x, _ = _blobs(n_per=80, k=6, spread=0.3, seed=1)
  one = _fit(x, 6, sample=120)
  two = _fit(x, 6, sample=120, options=PipelineOptions(
      direct_num_workers=2, direct_running_mode="multi_threading"))
  assert np.array_equal(one, two)


def test_init_does_not_depend_on_sample_order():
  x, _ = _blobs(n_per=20, k=3, seed=2)
  ids = [f"d{i}" for i in range(len(x))]
  a = kmeans.kmeans_plus_plus(ids, x, 3, seed=7)
  perm = np.random.default_rng(0).permutation(len(x))
  b = kmeans.kmeans_plus_plus([ids[i] for i in perm], x[perm], 3, seed=7)
  assert np.array_equal(a, b)


def test_identical_documents_give_one_cluster_and_empty_ones():
  x = _unit(np.ones((20, 8)))
  centroids = _fit(x, 3)
  labels, dist = kmeans.assign(x, centroids)
  assert set(labels) == {0} and np.allclose(dist, 0, atol=1e-6)


def test_bad_cluster_counts_are_refused():
  with pytest.raises(ValueError, match="at least 1"):
    kmeans.FitKMeans(0, 3, 10, seed=0)
  with pytest.raises(ValueError, match="smaller than --num_clusters"):
    kmeans.FitKMeans(5, 3, 4, seed=0)
  with pytest.raises(ValueError, match="fewer than --num_clusters"):
    kmeans.kmeans_plus_plus(["a", "b"], _unit(np.eye(2)), 3, seed=0)


def test_an_empty_cluster_keeps_its_centroid():
  prev = _unit(np.eye(3))
  sums = kmeans.ClusterSums().add(_unit(np.array([[1.0, 0.1, 0], [1.0, -0.1, 0]])),
                                  np.array([0, 0]), 3)
  new = kmeans.update(sums, prev)
  assert np.allclose(new[0], [1, 0, 0], atol=1e-6)
  assert np.array_equal(new[1:], prev[1:])


def test_assign_clusters_adds_cluster_and_distance():
  x, truth = _blobs(n_per=10, k=3, seed=4)
  centroids = _unit(np.stack([x[truth == c].mean(0) for c in range(3)]))
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "out.txt")
    with TestPipeline(runner="FnApiRunner") as p:
      cents = p | "C" >> beam.Create([centroids])
      (p | "D" >> beam.Create(_docs(x))
       | kmeans.AssignClusters(cents)
       | beam.Map(lambda d: f"{d.id} {d.scores['cluster']} {d.scores['cluster_distance']!r}")
       | beam.io.WriteToText(path, shard_name_template=""))
    rows = [line.split() for line in open(path)]
  got = {r[0]: (int(r[1]), float(r[2])) for r in rows}
  assert len(got) == len(x)
  for i in range(len(x)):
    label, dist = got[f"d{i:04d}"]
    assert label == truth[i]
    assert dist == pytest.approx(1 - float(x[i] @ centroids[label]), abs=1e-6)


def test_saved_clusters_round_trip_and_refuse_another_model(tmp_path):
  c = _unit(np.eye(4)[:3])
  params = {"embedding_model": "m", "seed": 3, "iterations": 5}
  kmeans.save_clusters(c, params, str(tmp_path / "a.npz"))
  kmeans.save_clusters(c, params, str(tmp_path / "b.npz"))
  assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
  got, p = kmeans.load_clusters(str(tmp_path / "a.npz"), "m")
  assert np.array_equal(got, c) and p == params
  with pytest.raises(ValueError, match="same --embedding_model"):
    kmeans.load_clusters(str(tmp_path / "a.npz"), "other")
