"""Spherical k-means on document embeddings, at corpus scale.

The embeddings are unit vectors, so the nearest centroid is the one with the largest
cosine similarity, and a centroid is the normalised mean of its documents.

- Initialisation: k-means++ on a fixed-size deterministic sample (the documents with
  the smallest hash of (seed, id)), on one worker: the corpus is never gathered.
- Lloyd iterations: every document is assigned to its nearest centroid (a side input)
  and the vectors are summed per cluster by a CombineFn. The sums are exact integers
  (fixed point), so they are the same in any merge order, on any number of workers,
  and so are the centroids: the clustering depends on --seed and the data only.
- A cluster that ends an iteration empty keeps its previous centroid.

The math (seeding, assignment, the sums, the update) is in transforms/algorithms/
kmeans.py, without Beam; this module is its Beam edge and the saved clusters.npz.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, Dict, Optional, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from transforms.algorithms.kmeans import (  # noqa: F401  (re-exported)
    SCALE, ClusterSums, _sample_key, assign, check_num_clusters, fixed_point, kmeans_plus_plus,
    update)
from transforms.cluster_count import clusters_for
from transforms.metrics import stage_clock
from transforms.npz_files import load_npz, npz_bytes
from transforms.records import CLUSTER, CLUSTER_DISTANCE

_BATCH = 1024
_LOG = logging.getLogger(__name__)


class ClusterSumsFn(beam.CombineFn):
  """ClusterSums of batches -> their total. A sum of integers: any order, any split."""

  def create_accumulator(self):
    return ClusterSums()

  def add_input(self, acc, sums):
    return acc.merge(sums)

  def merge_accumulators(self, accumulators):
    it = iter(accumulators)
    first = next(it)
    for other in it:
      first.merge(other)
    return first

  def extract_output(self, acc):
    return acc


class FitKMeans(beam.PTransform):
  """Documents with embeddings -> a singleton [k, d] float32 array of centroids.

  k-means++ on the `sample_size` documents with the smallest hash of (seed, id), then
  `iterations` Lloyd passes over all documents, unrolled in the graph.

  num_clusters: a number, or None for cluster_count.auto_num_clusters(documents, keep),
  from the `documents` and `keep` side inputs. A corpus with fewer documents than clusters gets
  one cluster per document (logged); duplicate vectors leave clusters empty.
  """

  def __init__(self, num_clusters: Optional[int], iterations: int, sample_size: int,
               seed: int, documents=None, keep=None):
    super().__init__()
    if num_clusters is not None and num_clusters < 1:
      raise ValueError(f"--num_clusters must be at least 1, got {num_clusters}")
    if num_clusters is not None and sample_size < num_clusters:
      raise ValueError(f"--kmeans_sample={sample_size} is smaller than --num_clusters="
                       f"{num_clusters}")
    if num_clusters is None and (documents is None or keep is None):
      raise ValueError("num_clusters=None (auto) needs the documents and keep side inputs")
    self._k, self._iterations, self._sample, self._seed = (
        num_clusters, iterations, sample_size, seed)
    self._documents, self._keep = documents, keep

  def expand(self, docs):
    k, seed = self._k, self._seed
    pairs = docs | "IdAndEmbedding" >> beam.Map(
        lambda d: (d.id, np.asarray(d.embedding, np.float32)))
    sample = pairs | "SampleForInit" >> beam.combiners.Top.Of(
        self._sample, key=_sample_key(seed))
    if k is None:
      init = beam.Map(_init_auto, seed, self._sample, self._documents, self._keep)
    else:
      init = beam.Map(_init, k, seed)
    centroids = sample | "KMeansPlusPlus" >> init
    batches = (pairs
               | "BatchForKMeans" >> beam.BatchElements(min_batch_size=64,
                                                        max_batch_size=_BATCH))
    for i in range(self._iterations):
      sums = (batches
              | f"AssignAndSum{i}" >> beam.Map(_batch_sums, beam.pvalue.AsSingleton(centroids))
              | f"SumClusters{i}" >> beam.CombineGlobally(ClusterSumsFn()))
      centroids = sums | f"UpdateCentroids{i}" >> beam.Map(
          update, beam.pvalue.AsSingleton(centroids))
    return centroids


def _init(rows, k: int, seed: int) -> np.ndarray:
  if not rows:  # Nothing to cluster (no valid or embedded documents): no centroids.
    return np.zeros((0, 0), np.float32)
  if len(rows) < k:
    _LOG.warning("%d documents are fewer than --num_clusters=%d: using %d clusters",
                 len(rows), k, len(rows))
    k = len(rows)
  return kmeans_plus_plus([r[0] for r in rows], np.stack([r[1] for r in rows]), k, seed)


def _init_auto(rows, seed: int, sample: int, documents: int, keep: int) -> np.ndarray:
  k = clusters_for(None, documents, keep, min(sample, max(len(rows), 1)))
  _LOG.info("--num_clusters=auto: %d clusters for %d documents (keeping %d)", k,
            documents, keep)
  return _init(rows, k, seed)


def _batch_sums(batch, centroids):
  x = np.stack([v for _, v in batch])
  labels, _ = assign(x, centroids)
  return ClusterSums().add(x, labels, len(centroids))


class AssignClusters(beam.PTransform):
  """Adds `cluster` (its index) and `cluster_distance` (1 - cosine similarity to its
  centroid) to every document's scores, with the centroids as a side input; drops the
  embeddings unless `keep_embeddings`."""

  def __init__(self, centroids, keep_embeddings: bool = True):
    super().__init__()
    self._centroids = centroids
    self._keep = keep_embeddings

  def expand(self, docs):
    return (docs
            | "BatchForClusters" >> beam.BatchElements(min_batch_size=64,
                                                       max_batch_size=_BATCH)
            | "NearestCentroid" >> beam.FlatMap(_assign_batch,
                                                beam.pvalue.AsSingleton(self._centroids),
                                                self._keep))


def _assign_batch(batch, centroids, keep_embeddings=True):
  stage_clock("clusters")
  labels, dist = assign(np.stack([d.embedding for d in batch]), centroids)
  for doc, label, d in zip(batch, labels, dist):
    if not keep_embeddings:
      doc = dataclasses.replace(doc, embedding=None)
    yield doc.with_scores(**{CLUSTER: int(label), CLUSTER_DISTANCE: float(d)})


def size_summary(sizes: Dict[Any, int], num_clusters: int) -> Dict[str, Any]:
  """metrics.json's view of the cluster sizes (every cluster, the empty ones too)."""
  counts = sorted([int(sizes.get(c, 0)) for c in range(num_clusters)])
  if not counts:
    return {"clusters": 0, "documents": 0}
  return {"clusters": num_clusters, "documents": int(sum(counts)), "min": counts[0],
          "median": float(np.median(counts)), "max": counts[-1],
          "empty": sum(1 for n in counts if n == 0)}


def save_clusters(centroids: np.ndarray, params: Dict[str, Any], path: str) -> None:
  """centroids [k, d] float32 and the parameters that made them (seed, iterations,
  sample, embedding model identity) as JSON, in one .npz."""
  data = npz_bytes({"centroids": np.asarray(centroids, np.float32),
                    "params": np.array(json.dumps(params, sort_keys=True))})
  with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    f.write(data)


def centroids_problem(centroids: np.ndarray) -> Optional[str]:
  """What is wrong with saved centroids (a [k, d] matrix of finite floats, k >= 1), or
  None."""
  if (centroids.ndim != 2 or 0 in centroids.shape
      or not np.issubdtype(centroids.dtype, np.floating)):
    return f"its centroids are {centroids.dtype} {list(centroids.shape)}, not [k, d] floats"
  if not np.all(np.isfinite(centroids)):
    return "its centroids are not finite"
  return None


def load_clusters(path: str, embedding_model: Optional[str] = None
                  ) -> Tuple[np.ndarray, Dict[str, Any]]:
  """(centroids, params) of a saved clusters.npz; refuses centroids computed on another
  embedding model, whose vectors they cannot be compared with."""
  with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
    data = load_npz(f.read(), path, "clusters.npz", ("centroids", "params"))
    centroids = data["centroids"]
    params = json.loads(str(data["params"]))
  problem = centroids_problem(centroids) or (
      None if isinstance(params, dict) else "its params are not a JSON object")
  if problem:
    raise ValueError(f"{path} is not a valid clusters.npz: {problem}")
  centroids = centroids.astype(np.float32)
  fitted_on = params.get("embedding_model")
  if embedding_model is not None and fitted_on != embedding_model:
    raise ValueError(f"{path} holds centroids of {fitted_on!r} embeddings, but this run "
                     f"embeds with {embedding_model!r}: pass the same --embedding_model, "
                     "or cluster again")
  return centroids, params
