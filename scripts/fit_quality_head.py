"""Fits the bundled quality head: a ridge head on the bundled all-MiniLM-L6-v2 embeddings,
fitted to the Llama-3-70B educational scores (0-4) of FineWeb-Edu annotated documents.

Chooses the penalty and the embedding token budget by 5-fold cross-validation (criterion:
ROC AUC of edu_score >= 3 against <= 1 on the pooled out-of-fold predictions), estimates
the choice honestly by nested cross-validation (the setting chosen inside each outer
training set by an inner CV), fits the head on all documents with the chosen setting, and
writes it with its provenance (teacher, data set and its SHA-256, penalty, embedding model
and token budget, this command, the cross-validated fit) as one .npz. Given the same data
file and the same package versions on the same kind of machine the file is byte-identical
(folds and bootstrap draws come from hashes of (seed, id); the .npz has fixed timestamps).

The bundled head was written by (from the repository root, the package installed in
.venv; DATA: the FineWeb-Edu annotated dev file):
  .venv/bin/python scripts/fit_quality_head.py --data DATA/fineweb_edu_annotated_dev.jsonl
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time

import numpy as np

# Folds dealt by a hash of (seed, salt, id) per stratum: shared with the topic head's fit.
from transforms.algorithms.topic_fit import stratified_folds

L2_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
TOKEN_GRID = (128, 256, 512)
TEACHER = "Llama-3-70B-Instruct educational score 0-4 (FineWeb-Edu annotations)"
DATASET = "FineWeb-Edu annotated pages, dev file (ODC-By 1.0)"


def load_documents(path, label="edu_score", cast=float, kind="a numeric"):
  """(ids, texts, labels) of a JSONL file with id, text and `label` per line (labels as
  `cast` makes them, in a numpy array); scripts/fit_topic_head.py reads topic_id."""
  ids, texts, labels = [], [], []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if not line.strip():
        continue
      d = json.loads(line)
      try:
        ids.append(str(d["id"]))
        texts.append(str(d["text"]))
        labels.append(cast(d[label]))
      except (KeyError, TypeError, ValueError) as e:
        raise SystemExit(f"{path}:{n}: needs id, text and {kind} {label} ({e})")
  if len(set(ids)) != len(ids):
    raise SystemExit(f"{path}: ids are not unique")
  return ids, texts, np.array(labels, np.int64 if cast is int else np.float64)


def auc(scores, labels):
  from transforms.quality_head import auc as _auc
  return _auc(scores, labels)


def fit(x, y, l2, embedding_model="cv"):
  from transforms.quality_head import RidgeStats, solve
  return solve(RidgeStats().add(x, y), l2, embedding_model, TEACHER)


def oof_predictions(x, y, folds, l2):
  pred = np.zeros(len(y))
  for k in np.unique(folds):
    test = folds == k
    pred[test] = fit(x[~test], y[~test], l2).predict(x[test])
  return pred


def selection_auc(pred, edu):
  """The criterion: ROC AUC of edu >= 3 against edu <= 1 (2s left out)."""
  m = (edu >= 3) | (edu <= 1)
  return auc(pred[m], edu[m] >= 3)


def grid_search(embeddings, edu, folds, l2_grid):
  """{(tokens, l2): pooled out-of-fold AUC}; the best setting (ties: fewer tokens, then
  more penalty, i.e. the cheaper and smoother head)."""
  table = {}
  for tokens, x in embeddings.items():
    for l2 in l2_grid:
      a = selection_auc(oof_predictions(x, edu, folds, l2), edu)
      table[(tokens, l2)] = -np.inf if np.isnan(a) else a
  best = max(table, key=lambda key: (table[key], -key[0], key[1]))
  return table, best


def nested_predictions(ids, embeddings, edu, folds, l2_grid, seed, inner_k=4):
  """Out-of-fold predictions where each outer fold's setting is chosen by an inner CV on
  its training documents only: the honest estimate of "choose by CV, then fit"."""
  pred, chosen = np.zeros(len(edu)), []
  for k in np.unique(folds):
    train = np.flatnonzero(folds != k)
    inner = stratified_folds([ids[i] for i in train], edu[train], inner_k, seed,
                             salt=f"inner{k}")
    _, best = grid_search({t: x[train] for t, x in embeddings.items()}, edu[train], inner,
                          l2_grid)
    chosen.append({"tokens": best[0], "l2": best[1]})
    x = embeddings[best[0]]
    pred[folds == k] = fit(x[train], edu[train], best[1]).predict(x[folds == k])
  return pred, chosen


def bootstrap_interval(ids, stat, mask, labels, n, seed):
  """95% stratified bootstrap percentile interval of stat(index array) over the documents
  in mask (resampled within each label); draws from a hash of (seed, id, round)."""
  idx = np.flatnonzero(mask)
  groups = [idx[labels[idx] == v] for v in np.unique(labels[idx])]
  values = []
  for r in range(n):
    draw = []
    for g in groups:
      # A uniform draw per (round, position) from a hash: deterministic, no RNG state.
      u = np.array([int.from_bytes(hashlib.blake2b(f"{seed}:{r}:{ids[i]}".encode(),
                                                   digest_size=8).digest(), "big")
                    for i in g], np.float64) / 2.0**64
      draw.append(g[np.minimum((u * len(g)).astype(int), len(g) - 1)])
    values.append(stat(np.concatenate(draw)))
  lo, hi = np.nanpercentile(values, [2.5, 97.5])
  return [round(float(lo), 4), round(float(hi), 4)]


def evaluate(ids, pred, edu, folds, bootstrap, seed):
  """AUC (>= 3 vs <= 1 and vs < 3) and Spearman with edu_score, with intervals."""
  from scipy.stats import spearmanr
  strict = (edu >= 3) | (edu <= 1)
  pos = edu >= 3
  everyone = np.ones(len(edu), bool)
  out = {
      "auc_3plus_vs_0to1": round(selection_auc(pred, edu), 4),
      "auc_3plus_vs_0to1_ci95": bootstrap_interval(
          ids, lambda b: auc(pred[b], pos[b]), strict, pos.astype(int), bootstrap, seed),
      "auc_3plus_vs_below3": round(auc(pred, pos), 4),
      "auc_3plus_vs_below3_ci95": bootstrap_interval(
          ids, lambda b: auc(pred[b], pos[b]), everyone, pos.astype(int), bootstrap, seed),
      "spearman_edu_score": round(float(spearmanr(pred, edu).statistic), 4),
      "spearman_edu_score_ci95": bootstrap_interval(
          ids, lambda b: spearmanr(pred[b], edu[b]).statistic, everyone,
          np.zeros(len(edu), int), bootstrap, seed),
      "per_fold_auc_3plus_vs_0to1": [round(selection_auc(pred[folds == k], edu[folds == k]), 4)
                                     for k in np.unique(folds)],
  }
  return out


def embed_all(texts, budgets, embedding_model, batch_size=32, cache_dir=None):
  """{tokens: [N, d] float32} for each token budget, one model load. With cache_dir, each
  budget's array is kept there under a hash of the texts, model and budget."""
  from models.embeddings import EmbeddingConfig, Embedder, load_embedder
  from transforms.score_cache import round_embedding
  base = load_embedder(EmbeddingConfig(model=embedding_model, max_tokens=max(budgets),
                                       device="cpu"))
  order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
  digest = hashlib.sha256("\x00".join([base.name, *texts]).encode()).hexdigest()[:16]
  out = {}
  for tokens in budgets:
    cached = cache_dir and os.path.join(cache_dir, f"embeddings_{digest}_{tokens}.npy")
    if cached and os.path.exists(cached):
      out[tokens] = np.load(cached)
      print(f"embeddings at {tokens} tokens from {cached}", flush=True)
      continue
    embedder = Embedder(base.model, base.tokenizer,
                        EmbeddingConfig(model=embedding_model, max_tokens=tokens, device="cpu"),
                        base.device, base.name)
    start = time.perf_counter()
    x = np.zeros((len(texts), embedder.dim), np.float32)
    for b in range(0, len(order), batch_size):
      idx = order[b:b + batch_size]
      # Rounded as the job rounds them (the score cache keeps float16 embeddings).
      x[idx] = round_embedding(embedder.embed([texts[i] for i in idx]))
    print(f"embedded {len(texts)} documents at {tokens} tokens in "
          f"{time.perf_counter() - start:.0f} s", flush=True)
    out[tokens] = x
    if cached:
      os.makedirs(cache_dir, exist_ok=True)
      np.save(cached, x)
  return out


def file_sha256(path):
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for chunk in iter(lambda: f.read(1 << 20), b""):
      h.update(chunk)
  return h.hexdigest()


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--data", required=True,
                  help="JSONL with id, text, edu_score (the FineWeb-Edu annotated dev file)")
  ap.add_argument("--output", default=None,
                  help="where to write the head (default: the bundled head's place in "
                       "the package)")
  ap.add_argument("--l2_grid", default=",".join(f"{v:g}" for v in L2_GRID))
  ap.add_argument("--token_grid", default=",".join(map(str, TOKEN_GRID)))
  ap.add_argument("--folds", type=int, default=5)
  ap.add_argument("--bootstrap", type=int, default=1000)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--embeddings_cache", default=None,
                  help="keep the embeddings in this directory (reruns skip embedding)")
  ap.add_argument("--embedding_model", default="default",
                  help="the bundled all-MiniLM-L6-v2 unless a local directory is given")
  args = ap.parse_args(argv)
  from models import loading
  from transforms import quality_head as qh

  output = args.output or loading.bundled_quality_head_path()
  l2_grid = [float(v) for v in args.l2_grid.split(",")]
  budgets = [int(v) for v in args.token_grid.split(",")]
  ids, texts, edu = load_documents(args.data)
  print(f"{len(ids)} documents: {int((edu >= 3).sum())} with edu_score >= 3, "
        f"{int((edu <= 1).sum())} <= 1", flush=True)
  embeddings = embed_all(texts, budgets, args.embedding_model,
                         cache_dir=args.embeddings_cache)
  model_name = loading.model_name(args.embedding_model, "embedding")

  folds = stratified_folds(ids, edu, args.folds, args.seed)
  table, (tokens, l2) = grid_search(embeddings, edu, folds, l2_grid)
  print("out-of-fold AUC (edu >= 3 vs <= 1) by token budget and l2:")
  for t in budgets:
    print(f"  {t:4d} tokens: " + "  ".join(f"{l:g}: {table[(t, l)]:.4f}" for l in l2_grid))
  nested, chosen = nested_predictions(ids, embeddings, edu, folds, l2_grid, args.seed)
  chosen_pred = oof_predictions(embeddings[tokens], edu, folds, l2)
  fit_numbers = {
      "folds": args.folds, "bootstrap": args.bootstrap,
      "criterion": "pooled out-of-fold ROC AUC, edu_score >= 3 against <= 1",
      "grid": [{"tokens": t, "l2": l, "auc": round(a, 4)} for (t, l), a in sorted(table.items())],
      "chosen": {"tokens": tokens, "l2": l2,
                 **evaluate(ids, chosen_pred, edu, folds, args.bootstrap, args.seed)},
      "nested": {"chosen_per_fold": chosen,
                 **evaluate(ids, nested, edu, folds, args.bootstrap, args.seed)},
  }
  for name in ("chosen", "nested"):
    r = fit_numbers[name]
    print(f"{name}: AUC {r['auc_3plus_vs_0to1']} {r['auc_3plus_vs_0to1_ci95']} (>= 3 vs <= 1), "
          f"{r['auc_3plus_vs_below3']} {r['auc_3plus_vs_below3_ci95']} (vs < 3), Spearman "
          f"{r['spearman_edu_score']} {r['spearman_edu_score_ci95']}", flush=True)

  import torch
  import transformers
  head = qh.solve(qh.RidgeStats().add(embeddings[tokens], edu), l2, model_name, TEACHER)
  provenance = {
      "teacher": TEACHER,
      "dataset": {"name": DATASET, "file": os.path.basename(args.data),
                  "sha256": file_sha256(args.data), "documents": len(ids),
                  "edu_score_counts": {str(int(s)): int((edu == s).sum())
                                       for s in np.unique(edu)}},
      "target": "edu_score (0-4) as a number; higher is better",
      "embedding_max_tokens": tokens,
      "fitted_by": "scripts/fit_quality_head.py --data " + os.path.basename(args.data)
                   + "".join(f" --{k} {getattr(args, k)}" for k in
                             ("l2_grid", "token_grid", "folds", "bootstrap", "seed")),
      "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                   "numpy": np.__version__},
      "cross_validation": fit_numbers,
  }
  head = qh.QualityHead(weights=head.weights, bias=head.bias, l2=l2, n_train=head.n_train,
                        embedding_model=model_name, teacher=TEACHER,
                        embedding_max_tokens=tokens, provenance=provenance)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  qh.save_head(head, output)
  print(f"wrote {output}: {tokens} tokens, l2 {l2:g}, {len(ids)} documents", flush=True)


if __name__ == "__main__":
  main()
