"""The topic head's fit without Beam: multinomial logistic regression (softmax) by L-BFGS
from zero weights, its L2 chosen by cross-validation, and nested cross-validation of that
choice. Folds come from hashes of (seed, salt, id), so the same data give the same head.
Used by scripts/fit_topic_head.py (the bundled head) and benchmarks/topic_bench.py.
"""
from __future__ import annotations

import hashlib

import numpy as np

L2_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


def _hash_order(ids, seed, salt):
  return sorted(range(len(ids)), key=lambda i: hashlib.blake2b(
      f"{seed}:{salt}:{ids[i]}".encode(), digest_size=8).digest())


def stratified_folds(ids, strata, k, seed, salt="outer"):
  """Fold per document: each stratum ordered by a hash of (seed, salt, id) and dealt
  round-robin, continuing where the last stratum stopped (as the quality head's fit)."""
  folds = np.empty(len(ids), int)
  offset = 0
  for s in np.unique(strata):
    members = [i for i in _hash_order(ids, seed, salt) if strata[i] == s]
    for j, i in enumerate(members):
      folds[i] = (j + offset) % k
    offset += len(members)
  return folds


def probabilities(w, b, x):
  z = np.asarray(x, np.float64) @ w + b
  z -= z.max(axis=1, keepdims=True)
  p = np.exp(z)
  return p / p.sum(axis=1, keepdims=True)


def fit_softmax(x, y, classes, l2, max_iter=500):
  """(W [d, C], b [C]) minimising mean cross-entropy + l2/2 ||W||^2 (bias not
  penalised), by L-BFGS from zero."""
  from scipy.optimize import minimize
  x = np.asarray(x, np.float64)
  n, d = x.shape
  c = len(classes)
  onehot = (y[:, None] == classes[None, :]).astype(np.float64)

  def loss(theta):
    w, b = theta[:d * c].reshape(d, c), theta[d * c:]
    z = x @ w + b
    z -= z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    p = np.exp(logp)
    value = -(onehot * logp).sum() / n + 0.5 * l2 * (w * w).sum()
    g = (p - onehot) / n
    return value, np.concatenate([(x.T @ g + l2 * w).ravel(), g.sum(axis=0)])

  res = minimize(loss, np.zeros(d * c + c), jac=True, method="L-BFGS-B",
                 options={"maxiter": max_iter, "gtol": 1e-7})
  return res.x[:d * c].reshape(d, c), res.x[d * c:]


def predict(w, b, classes, x):
  return classes[np.argmax(np.asarray(x, np.float64) @ w + b, axis=1)]


def cv_accuracy(x, y, classes, folds, l2):
  pred = np.zeros(len(y), np.int64)
  for k in np.unique(folds):
    test = folds == k
    w, b = fit_softmax(x[~test], y[~test], classes, l2)
    pred[test] = predict(w, b, classes, x[test])
  return float((pred == y).mean())


def choose_l2(x, y, classes, folds, grid):
  """({l2: pooled out-of-fold accuracy}, the best l2; ties: the larger penalty)."""
  table = {l2: cv_accuracy(x, y, classes, folds, l2) for l2 in grid}
  return table, max(table, key=lambda l2: (table[l2], l2))


def nested_accuracy(ids, x, y, classes, folds, grid, seed, inner_k=4):
  """Outer-fold accuracies where each fold's penalty is chosen by an inner CV on its
  training documents only."""
  out = []
  for k in np.unique(folds):
    train, test = folds != k, folds == k
    tr = np.flatnonzero(train)
    inner = stratified_folds([ids[i] for i in tr], y[tr], inner_k, seed, salt=f"inner{k}")
    _, l2 = choose_l2(x[tr], y[tr], classes, inner, grid)
    w, b = fit_softmax(x[tr], y[tr], classes, l2)
    acc = float((predict(w, b, classes, x[test]) == y[test]).mean())
    out.append({"fold": int(k), "l2": l2, "accuracy": round(acc, 4),
                "documents": int(test.sum())})
  return out
