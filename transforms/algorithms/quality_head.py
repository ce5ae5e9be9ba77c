"""The quality head's math: ridge regression from document embeddings to a teacher score,
fitted from sums alone (X^T X, X^T y, sum y, sum y^2 and n: merged in any order, solved
once), its prediction, and how well it reproduces the teacher on held-back documents.
Without Beam: the CombineFn and the saved head are in transforms/quality_head.py.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np


@dataclasses.dataclass
class RidgeStats:
  """Sufficient statistics of a least-squares fit (float64 so sums stay exact enough)."""
  xtx: Optional[np.ndarray] = None   # [d, d]
  xty: Optional[np.ndarray] = None   # [d]
  x_sum: Optional[np.ndarray] = None  # [d]
  y_sum: float = 0.0
  yy_sum: float = 0.0
  n: int = 0

  def add(self, x: np.ndarray, y: np.ndarray) -> "RidgeStats":
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64).reshape(-1)
    if x.ndim == 1:
      x = x[None, :]
    if x.shape[0] != y.shape[0]:
      raise ValueError(f"{x.shape[0]} embeddings but {y.shape[0]} teacher scores")
    if self.xtx is None:
      d = x.shape[1]
      self.xtx, self.xty, self.x_sum = np.zeros((d, d)), np.zeros(d), np.zeros(d)
    self.xtx += x.T @ x
    self.xty += x.T @ y
    self.x_sum += x.sum(0)
    self.y_sum += float(y.sum())
    self.yy_sum += float(y @ y)
    self.n += x.shape[0]
    return self

  def merge(self, other: "RidgeStats") -> "RidgeStats":
    if other.n == 0:
      return self
    if self.xtx is None:
      self.xtx, self.xty, self.x_sum = other.xtx.copy(), other.xty.copy(), other.x_sum.copy()
    else:
      self.xtx += other.xtx
      self.xty += other.xty
      self.x_sum += other.x_sum
    self.y_sum += other.y_sum
    self.yy_sum += other.yy_sum
    self.n += other.n
    return self


@dataclasses.dataclass(frozen=True)
class QualityHead:
  """score(x) = x . w + b, fitted to a teacher score."""
  weights: np.ndarray
  bias: float
  l2: float
  n_train: int
  embedding_model: str
  teacher: str
  # The token budget the embeddings were computed at, when the head records one (the
  # bundled head does; a head fitted in a job uses that job's --embedding_max_tokens).
  embedding_max_tokens: Optional[int] = None
  provenance: Optional[dict] = None

  def predict(self, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim == 1:
      x = x[None, :]
    if x.shape[1] != self.weights.shape[0]:
      raise ValueError(f"embeddings have {x.shape[1]} dimensions, the head {self.weights.shape[0]}")
    return x.astype(np.float64) @ self.weights + self.bias


def solve(stats: RidgeStats, l2: float, embedding_model: str, teacher: str,
          embedding_max_tokens: Optional[int] = None) -> QualityHead:
  """Ridge regression with an unpenalised intercept, from the sums alone.

  Centring in closed form: Sxx = X^T X - n m m^T, Sxy = X^T y - n m ybar; then
  (Sxx + l2 n I) w = Sxy and b = ybar - m.w. The penalty scales with n so the same l2
  means the same thing for 100 or 10^8 teacher documents.
  """
  if stats.n < 2:
    raise ValueError(f"the teacher set has {stats.n} documents; at least 2 are needed "
                     "(check --teacher_field / --teacher_fraction)")
  n = stats.n
  mean_x = stats.x_sum / n
  mean_y = stats.y_sum / n
  sxx = stats.xtx - n * np.outer(mean_x, mean_x)
  sxy = stats.xty - n * mean_x * mean_y
  d = sxx.shape[0]
  w = np.linalg.solve(sxx + l2 * n * np.eye(d), sxy)
  return QualityHead(weights=w, bias=float(mean_y - mean_x @ w), l2=l2, n_train=n,
                     embedding_model=embedding_model, teacher=teacher,
                     embedding_max_tokens=embedding_max_tokens)


def auc(scores, labels) -> float:
  """ROC AUC by ranks (ties get half credit). NaN when a class is empty."""
  from scipy.stats import rankdata
  s = np.asarray(scores, np.float64)
  l = np.asarray(labels, bool)
  pos, neg = int(l.sum()), int((~l).sum())
  if pos == 0 or neg == 0:
    return float("nan")
  r = rankdata(s)
  return float((r[l].sum() - pos * (pos + 1) / 2) / (pos * neg))


def fit_report(pairs) -> dict:
  """How well the head reproduces the teacher on held-back teacher documents.

  AUC: teacher above its median (positives) against the rest; Spearman of the scores.
  """
  from scipy.stats import spearmanr
  pairs = list(pairs)
  if len(pairs) < 3:
    return {"held_back": len(pairs), "auc": None, "spearman": None,
            "warning": _small_fit_warning(len(pairs))}
  y = np.array([p[0] for p in pairs], np.float64)
  pred = np.array([p[1] for p in pairs], np.float64)
  labels = y > np.median(y)
  a = auc(pred, labels)
  rho = spearmanr(y, pred).statistic if np.ptp(y) > 0 and np.ptp(pred) > 0 else float("nan")
  report = {"held_back": len(pairs),
            "auc": None if np.isnan(a) else round(a, 4),
            "auc_95": auc_interval(a, int(labels.sum()), int((~labels).sum())),
            "spearman": None if np.isnan(rho) else round(float(rho), 4),
            "auc_definition": "teacher score above the held-back median vs the rest"}
  if len(pairs) < MIN_HELD_BACK:
    report["warning"] = _small_fit_warning(len(pairs))
  return report


def auc_interval(a: float, positives: int, negatives: int):
  """A 95% interval of an AUC (Hanley & McNeil 1982 standard error), clipped to [0, 1];
  None when the AUC is undefined."""
  if np.isnan(a) or positives < 1 or negatives < 1:
    return None
  q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
  var = (a * (1 - a) + (positives - 1) * (q1 - a * a)
         + (negatives - 1) * (q2 - a * a)) / (positives * negatives)
  half = 1.96 * math.sqrt(max(var, 0.0))
  return [round(max(0.0, a - half), 4), round(min(1.0, a + half), 4)]


# Below this many held-back documents an AUC says little (1.0 on 4 documents is luck):
# the report says so instead of looking like a good fit.
MIN_HELD_BACK = 100


def _small_fit_warning(n: int) -> str:
  return (f"only {n} held-back teacher documents (fewer than {MIN_HELD_BACK}): the AUC "
          "and Spearman above are not reliable; give the head more teacher documents "
          "(a larger --teacher_fraction, or more records with --teacher_field)")
