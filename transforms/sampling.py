"""Sort keys of Documents for the samplers (SelectTopK, ascending = drawn first), from the
deterministic Efraimidis-Spirakis keys of transforms/algorithms/sampling.py (their names
are re-exported here).
"""
from __future__ import annotations

import math

from transforms.algorithms.sampling import (  # noqa: F401  (re-exported)
    ips_weight, sampling_key, select_top_k_keys, uniform_from_id)
from transforms.records import Document


def density_sampling_key(seed: int):
  """Sort key for SelectTopK (ascending = drawn first): the Efraimidis-Spirakis key
  log(u)/w with w = 1/density, largest first."""

  def key(doc: Document):
    weight = doc.scores.get("sampling_weight")
    if weight is None or not weight > 0:
      # No density (the embedding model failed on it): drawn after every other document.
      return ((1, 0.0), doc.id, doc.source)
    return ((0, -sampling_key(seed, doc.id, weight)), doc.id, doc.source)
  return key


def random_key(seed: int):
  """Uniform sampling: the same key with every weight 1."""

  def key(doc: Document):
    return (-math.log(uniform_from_id(seed, doc.id)), doc.id, doc.source)
  return key


def quota_key(within_key):
  """The final selection key of a cluster-balanced sampler: the documents within their
  cluster's quota first (transforms/cluster_sampling.ClusterQuota marks exactly k), each
  group in the within-cluster order."""

  def key(doc: Document):
    return (0 if doc.in_quota else 1, within_key(doc))
  return key
