"""Deterministic Efraimidis-Spirakis sampling: hashing, keys, and inclusion probabilities."""
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from transforms import sampling


@given(st.integers(-2**70, 2**70), st.text(max_size=40))
@settings(max_examples=200, deadline=None)
def test_uniform_is_stable_and_strictly_inside_unit_interval(seed, doc_id):
  u = sampling.uniform_from_id(seed, doc_id)
  assert 0.0 < u < 1.0
  assert u == sampling.uniform_from_id(seed, doc_id)


def test_uniform_is_pinned():
  # Changing the hash changes every sample ever drawn: this must fail loudly if it does.
  assert sampling.uniform_from_id(0, "doc-1") == 0.22237755072359267
  assert sampling.uniform_from_id(1, "doc-1") != sampling.uniform_from_id(0, "doc-1")
  assert sampling.uniform_from_id(1, "ab") != sampling.uniform_from_id(1, "ba")
  # The separator keeps (seed, id) pairs apart: "1" + "2x" vs "12" + "x".
  assert sampling.uniform_from_id(1, "2x") != sampling.uniform_from_id(12, "x")


def test_uniform_looks_uniform():
  u = np.array([sampling.uniform_from_id(7, f"d{i}") for i in range(20000)])
  hist, _ = np.histogram(u, bins=10, range=(0, 1))
  assert np.all(np.abs(hist - 2000) < 5 * math.sqrt(2000))


def test_sampling_key_and_weight_guards():
  u = sampling.uniform_from_id(3, "x")
  assert sampling.sampling_key(3, "x", 2.0) == pytest.approx(math.log(u) / 2.0)
  assert sampling.sampling_key(3, "x", 2.0) < 0
  for bad in (0.0, -1.0, float("nan")):
    with pytest.raises(ValueError):
      sampling.sampling_key(3, "x", bad)
  assert sampling.ips_weight(4.0) == 0.25
  assert sampling.ips_weight(0.0) == 1e12
  np.testing.assert_allclose(sampling.ips_weight(np.array([1.0, 2.0, 0.0])), [1.0, 0.5, 1e12])
  with pytest.raises(ValueError):
    sampling.ips_weight(-1.0)
  with pytest.raises(ValueError):
    sampling.ips_weight(float("nan"))


def test_select_top_k_breaks_ties_by_id():
  keys = {"b": -1.0, "a": -1.0, "c": -0.5, "d": -3.0}
  assert sampling.select_top_k_keys(keys, 3) == ["c", "a", "b"]
  assert sampling.select_top_k_keys(keys, 0) == []
  assert sampling.select_top_k_keys(keys, 10) == ["c", "a", "b", "d"]


def _exact_inclusion(weights, k):
  """Successive sampling without replacement, probability proportional to weight:
  sum over all ordered draws of the product of the conditional probabilities."""
  total = sum(weights)
  incl = np.zeros(len(weights))
  first = np.array(weights, float) / total
  for order in itertools.permutations(range(len(weights)), k):
    p, left = 1.0, total
    for i in order:
      p *= weights[i] / left
      left -= weights[i]
    incl[list(order)] += p
  return incl, first


def test_inclusion_frequencies_match_successive_sampling():
  weights = [float(w) for w in range(1, 9)]
  k, trials = 3, 20000
  incl, first = _exact_inclusion(weights, k)
  assert incl.sum() == pytest.approx(k)
  ids = [f"item-{i}" for i in range(len(weights))]
  hits, firsts = np.zeros(len(ids)), np.zeros(len(ids))
  for seed in range(trials):
    keys = {i: sampling.sampling_key(seed, i, w) for i, w in zip(ids, weights)}
    top = sampling.select_top_k_keys(keys, k)
    hits[[ids.index(i) for i in top]] += 1
    firsts[ids.index(top[0])] += 1
  # 5 standard errors: deterministic (fixed seeds) and far from flaky.
  for freq, exact in ((hits / trials, incl), (firsts / trials, first)):
    se = np.sqrt(exact * (1 - exact) / trials)
    assert np.all(np.abs(freq - exact) < 5 * se + 1e-3), (freq, exact)
  # And it is not simply uniform: the heaviest item is drawn ~3x as often as the lightest.
  assert hits[-1] / hits[0] > 3
