"""The cascade's recall estimate (transforms/algorithms/cascade_recall.py): exact where the
audit sees everything, and calibrated on simulated corpora (its 95% interval covers the
true recall at least ~95% of the time over audit draws)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from transforms.algorithms.cascade_recall import (audit_draw, cascade_masks, estimate_recall,
                                                  in_audit, keep_k, true_recall)
from transforms.select import resolve_k


def _corpus(rng, n, rho):
  judge = rng.normal(size=n)
  cheap = rho * judge + np.sqrt(1 - rho ** 2) * rng.normal(size=n)
  return judge, cheap


def test_keep_k_is_the_selections_k():
  for n in (1, 7, 100, 1001):
    for f in (0.01, 0.1, 0.29, 0.5, 1.0):
      assert keep_k(n, f) == resolve_k(n, f, None)


def test_a_full_audit_gives_the_exact_recall():
  rng = np.random.default_rng(0)
  judge, cheap = _corpus(rng, 400, 0.7)
  ids = [f"d{i}" for i in range(400)]
  cut, _ = cascade_masks(cheap, ids, 0.3, 0.0, 0)
  est = estimate_recall(judge[cut], judge[~cut], int((~cut).sum()), 40)
  # Everything below the cut audited: the audit's documents are judged, recall is 1.
  assert est.recall == 1.0 and est.missed == est.audit_hits == 40 - est.pool_hits
  assert est.pool_hits == round(true_recall(judge, cut, 40) * 40)


def test_no_audit_no_estimate_and_nothing_below_the_cut_is_recall_one():
  assert estimate_recall([0.5, 0.2], [], 10, 1).recall is None
  assert estimate_recall([0.5, 0.2], [], 0, 1).recall == 1.0


def test_the_audit_is_a_hash_of_seed_and_id():
  ids = [f"doc{i}" for i in range(4000)]
  chosen = [i for i in ids if in_audit(3, i, 0.05)]
  assert chosen == [i for i in reversed(ids) if in_audit(3, i, 0.05)][::-1]
  assert 150 < len(chosen) < 250
  assert chosen != [i for i in ids if in_audit(4, i, 0.05)]
  assert not any(in_audit(3, i, 0.0) for i in ids)
  assert 0 <= min(audit_draw(1, i) for i in ids) and max(audit_draw(1, i) for i in ids) < 1


@settings(max_examples=8, deadline=None)
@given(rho=st.floats(0.4, 0.95), judge_fraction=st.sampled_from([0.2, 0.3, 0.5]),
       keep=st.sampled_from([0.05, 0.1, 0.2]), audit=st.sampled_from([0.03, 0.1]),
       seed=st.integers(0, 10_000))
def test_interval_covers_the_true_recall(rho, judge_fraction, keep, audit, seed):
  """Calibration: over 60 audits of one simulated corpus, the interval covers the true
  recall (of the cut plus that audit) at least 85% of the time (nominal 95%; 85% leaves
  room for the 60 draws' noise), and the point estimate is close to unbiased."""
  if keep > judge_fraction:
    keep = judge_fraction
  rng = np.random.default_rng(seed)
  n = 4000
  judge, cheap = _corpus(rng, n, rho)
  k = keep_k(n, keep)
  cut = np.zeros(n, bool)
  cut[np.argsort(-cheap)[:keep_k(n, judge_fraction)]] = True
  covered, errors = 0, []
  for _ in range(60):
    audited = ~cut & (rng.random(n) < audit)
    truth = true_recall(judge, cut | audited, k)
    est = estimate_recall(judge[cut], judge[audited], int((~cut).sum()), k)
    if est.recall is None:
      continue
    covered += est.low - 1e-9 <= truth <= est.high + 1e-9
    errors.append(est.recall - truth)
  assert covered >= 0.85 * len(errors)
  assert abs(np.mean(errors)) < 0.05


def test_interval_shrinks_with_a_bigger_audit():
  rng = np.random.default_rng(5)
  judge, cheap = _corpus(rng, 20_000, 0.7)
  cut = np.zeros(len(judge), bool)
  cut[np.argsort(-cheap)[:6000]] = True
  widths = []
  for audit in (0.02, 0.2):
    audited = ~cut & (rng.random(len(judge)) < audit)
    est = estimate_recall(judge[cut], judge[audited], int((~cut).sum()), 2000)
    widths.append(est.high - est.low)
  assert widths[1] < widths[0] / 2


def test_failed_judgements_are_left_out():
  est = estimate_recall([0.9, float("nan"), 0.8], [0.1, float("nan")], 10, 2)
  assert est.pool == 3 and est.audited == 2 and est.pool_hits == 2 and est.recall == 1.0


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_cascade_masks_take_the_top_f_then_audit_the_rest(fraction):
  ids = [f"d{i:02d}" for i in range(50)]
  cheap = [float(i % 7) for i in range(50)]  # many ties: broken by id
  cut, audited = cascade_masks(cheap, ids, fraction, 0.5, 2)
  order = sorted(range(50), key=lambda i: (-cheap[i], ids[i]))
  assert sorted(np.flatnonzero(cut)) == sorted(order[:keep_k(50, fraction)])
  assert not (cut & audited).any()
  assert list(audited) == [not c and in_audit(2, i, 0.5) for c, i in zip(cut, ids)]
