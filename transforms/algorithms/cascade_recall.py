"""The cascade's arithmetic, pure numpy/scipy: which documents the judge scores (the cheap
signal's top F, and an audit of the rest chosen by a hash of seed and id), and the
recall of the cascade estimated from the audit, with a 95% interval.

Recall is the share of the full judge's selection (its top K over every document) that
the judged documents hold: the cascade ranks the judged documents first, by the judge,
so exactly these documents of the full judge's selection are also in the cascade's.

The estimate: the judged pool P (the top F) is known exactly; a document below the cut
was audited with probability a, so each audited document stands for w = (documents
below the cut) / (audited) of them. The full judge's threshold t solves
count_P(>= t) + w * count_audit(>= t) = K, and the recall at t is
(count_P(>= t) + count_audit(>= t)) / (count_P(>= t) + w * count_audit(>= t)).

The interval inverts Clopper-Pearson: at the true threshold t*, the documents below the
cut scoring >= t* number M = K - count_P(>= t*), and the audit holds x of them, a draw of
n_audit out of n_below documents. Every candidate threshold whose M lies inside the
95% Clopper-Pearson interval of x out of n_audit is kept; the recall interval spans
(count_P + x) / K over the kept ones. The true threshold is kept with probability at
least 95%, so the interval covers the true recall at least that often (the hypergeometric
draw is less variable than the binomial the interval assumes).
"""
from __future__ import annotations

import dataclasses
import decimal
import hashlib
from typing import Dict, Optional, Sequence

import numpy as np

CONFIDENCE = 0.95
# The columns of scores/ that mark the cascade (transforms/cascade.py writes them).
CASCADE_GROUP = "cascade_judged"
CASCADE_SCORE = "cascade_score"
NOT_JUDGED, IN_CUT, AUDITED = 0, 1, 2  # values of CASCADE_GROUP


def keep_k(n: int, fraction: float) -> int:
  """floor(n x fraction), at least 1 when n > 0 (as transforms/select.resolve_k)."""
  if n <= 0:
    return 0
  return min(n, max(1, int(decimal.Decimal(repr(float(fraction))) * n)))


def audit_draw(seed: int, doc_id: str) -> float:
  """A uniform number in [0, 1) from (seed, id): a document below the cut is audited when
  it is under --audit_fraction (salted apart from the teacher fraction's hash)."""
  digest = hashlib.blake2b(f"cascade-audit\x00{seed}\x00{doc_id}".encode(),
                           digest_size=8).digest()
  return int.from_bytes(digest, "big") / 2.0 ** 64


def in_audit(seed: int, doc_id: str, fraction: float) -> bool:
  return fraction > 0 and audit_draw(seed, doc_id) < fraction


@dataclasses.dataclass(frozen=True)
class RecallEstimate:
  """What the audit says about the cascade. recall/low/high: None without an audit."""
  k: int                    # the full judge's selection size
  pool: int                 # documents judged because the cheap signal ranked them in F
  below: int                # documents below the cut
  audited: int              # of which judged as well
  threshold: Optional[float]  # the estimated judge score of the full selection's last
  pool_hits: int            # pool documents at or above it
  audit_hits: int           # audited documents at or above it
  missed: Optional[float]   # estimated documents of the full selection below the cut
  recall: Optional[float]
  low: Optional[float]
  high: Optional[float]

  def to_dict(self) -> Dict:
    out = dataclasses.asdict(self)
    for key in ("threshold", "missed", "recall", "low", "high"):
      if out[key] is not None:
        out[key] = round(float(out[key]), 6)
    out["confidence"] = CONFIDENCE
    return out


def _clopper_pearson(x: np.ndarray, n: int, confidence: float):
  from scipy.stats import beta
  alpha = 1.0 - confidence
  x = np.asarray(x, dtype=float)
  with np.errstate(invalid="ignore"):
    lo = np.where(x > 0, beta.ppf(alpha / 2, x, n - x + 1), 0.0)
    hi = np.where(x < n, beta.ppf(1 - alpha / 2, x + 1, n - x), 1.0)
  return np.nan_to_num(lo, nan=0.0), np.nan_to_num(hi, nan=1.0)


def estimate_recall(pool_scores: Sequence[float], audit_scores: Sequence[float],
                    below: int, k: int, confidence: float = CONFIDENCE) -> RecallEstimate:
  """The recall of the cascade and its interval (see the module's docstring).

  Args:
    pool_scores: the judge's scores of the documents in the cut (NaN: failed, dropped).
    audit_scores: the judge's scores of the audited documents below the cut.
    below: the number of documents below the cut (audited or not).
    k: the size of the full judge's selection (or its quality pool).
  """
  pool = np.asarray(pool_scores, dtype=float)
  audit = np.asarray(audit_scores, dtype=float)
  n_pool, n_audit = len(pool), len(audit)
  pool, audit = pool[np.isfinite(pool)], audit[np.isfinite(audit)]
  empty = RecallEstimate(k, n_pool, below, n_audit, None, 0, 0, None, None, None, None)
  if k <= 0:
    return empty
  if below == 0:  # everything was judged
    return dataclasses.replace(empty, recall=1.0, low=1.0, high=1.0, missed=0.0)
  if len(audit) == 0:
    return empty
  w = below / len(audit)
  values = np.concatenate([pool, audit])
  order = np.argsort(-values, kind="stable")
  values, is_audit = values[order], np.concatenate(
      [np.zeros(len(pool), bool), np.ones(len(audit), bool)])[order]
  # Candidate thresholds: each distinct value (counts of >= it), and "above all".
  last = np.r_[values[1:] != values[:-1], True]  # the last of each run of ties
  p = np.cumsum(~is_audit)[last]
  x = np.cumsum(is_audit)[last]
  t = values[last]
  mass = p + w * x
  crossing = int(np.searchsorted(mass, k, side="left"))
  if crossing >= len(mass):  # the judged documents and the audit's weight fall short of k
    crossing = len(mass) - 1
  pt, xt = int(p[crossing]), int(x[crossing])
  point = min(1.0, (pt + xt) / max(pt + w * xt, 1e-300))
  p_all, x_all = np.r_[0, p], np.r_[0, x]
  lo, hi = _clopper_pearson(x_all, len(audit), confidence)
  missed_needed = k - p_all
  kept = (missed_needed >= below * lo - 1e-9) & (missed_needed <= below * hi + 1e-9)
  recalls = np.minimum(1.0, (p_all + x_all) / k)
  if kept.any():
    low, high = min(point, float(recalls[kept].min())), max(point, float(recalls[kept].max()))
  else:
    low = high = point
  return RecallEstimate(k, n_pool, below, n_audit, float(t[crossing]), pt, xt,
                        float(w * xt), point, low, high)


def true_recall(judge_scores: Sequence[float], judged: Sequence[bool], k: int,
                ids: Optional[Sequence[str]] = None) -> float:
  """The share of the full judge's top k (score descending, then id) that was judged."""
  scores = np.asarray(judge_scores, dtype=float)
  judged = np.asarray(judged, dtype=bool)
  ids = np.asarray(ids if ids is not None else np.arange(len(scores)).astype(str))
  order = np.lexsort((ids, -scores))[:k]
  return float(judged[order].sum()) / max(k, 1)


def cascade_masks(cheap_scores: Sequence[float], ids: Sequence[str], judge_fraction: float,
                  audit_fraction: float, seed: int):
  """(in the cut, audited) boolean masks, as the pipeline chooses them: the top
  floor(N x F) by the cheap score (ties by id), then the hash-chosen audit of the rest."""
  cheap = np.asarray(cheap_scores, dtype=float)
  ids = np.asarray(ids)
  n_cut = keep_k(len(cheap), judge_fraction)
  order = np.lexsort((ids, -np.nan_to_num(cheap, nan=-np.inf)))
  cut = np.zeros(len(cheap), bool)
  cut[order[:n_cut]] = True
  audit = np.array([not c and in_audit(seed, str(i), audit_fraction)
                    for c, i in zip(cut, ids)], dtype=bool)
  return cut, audit
