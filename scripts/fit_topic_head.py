"""Fits the bundled topic head: a multinomial logistic head on the bundled all-MiniLM-L6-v2
embeddings (the first 128 tokens, the job's default budget), fitted to the WebOrganizer
topic labels (`topic_id`) of the WebOrganizer dev pages.

Chooses the L2 penalty by 5-fold cross-validation (criterion: pooled out-of-fold
accuracy), estimates the choice honestly by nested cross-validation (the penalty chosen
inside each outer training set by an inner 4-fold CV on that training set only, accuracy
reported on the outer fold), fits the head on all documents with the chosen penalty and
writes it with its provenance (data set and its SHA-256, penalty, embedding model and
budget, this command, the cross-validated accuracy) as one .npz. The solver is L-BFGS
(scipy) from zero weights, with folds from hashes of (seed, id): the same data file and
package versions on the same kind of machine give the same bytes.

The bundled head was written by (from the repository root, the package installed in
.venv; DATA: the WebOrganizer topics dev file):
  .venv/bin/python scripts/fit_topic_head.py --data DATA/weborganizer_topics_dev.jsonl
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from fit_quality_head import embed_all, file_sha256, load_documents  # noqa: E402
from transforms.algorithms.topic_fit import (  # noqa: E402
    L2_GRID, choose_l2, fit_softmax, nested_accuracy, stratified_folds)

TOKENS = 128
DATASET = "WebOrganizer topic-labelled web pages, dev file (DCLM-style crawl)"
LABELS = "WebOrganizer TopicClassifier topic_id (Wettig et al. 2025)"


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--data", required=True,
                  help="JSONL with id, text, topic_id (the WebOrganizer topics dev file)")
  ap.add_argument("--output", default=None,
                  help="where to write the head (default: the bundled head's place)")
  ap.add_argument("--l2_grid", default=",".join(f"{v:g}" for v in L2_GRID))
  ap.add_argument("--folds", type=int, default=5)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--embedding_model", default="default")
  ap.add_argument("--embedding_max_tokens", type=int, default=TOKENS)
  ap.add_argument("--embeddings_cache", default=None,
                  help="keep the embeddings in this directory (reruns skip embedding)")
  args = ap.parse_args(argv)
  from models import loading
  from models import topic_head as th

  output = args.output or th.bundled_path()
  grid = [float(v) for v in args.l2_grid.split(",")]
  ids, texts, y = load_documents(args.data, "topic_id", int, "an integer")
  classes = np.unique(y)
  x = embed_all(texts, [args.embedding_max_tokens], args.embedding_model,
                cache_dir=args.embeddings_cache)[args.embedding_max_tokens]
  folds = stratified_folds(ids, y, args.folds, args.seed)
  print(f"{len(ids)} documents, {len(classes)} topics; nested CV:", flush=True)
  nested = nested_accuracy(ids, x, y, classes, folds, grid, args.seed)
  for f in nested:
    print(f"  outer fold {f['fold']}: l2 {f['l2']:g}, accuracy {f['accuracy']:.4f}",
          flush=True)
  nested_acc = sum(f["accuracy"] * f["documents"] for f in nested) / len(y)
  table, l2 = choose_l2(x, y, classes, folds, grid)
  print("out-of-fold accuracy by l2: "
        + "  ".join(f"{v:g}: {a:.4f}" for v, a in table.items()), flush=True)
  print(f"nested CV accuracy {nested_acc:.4f}; chosen l2 {l2:g}", flush=True)
  w, b = fit_softmax(x, y, classes, l2)

  import torch
  import transformers
  model_name = loading.model_name(args.embedding_model, "embedding")
  provenance = {
      "labels": LABELS,
      "dataset": {"name": DATASET, "file": os.path.basename(args.data),
                  "sha256": file_sha256(args.data), "documents": len(ids),
                  "topic_counts": {str(int(t)): int((y == t).sum()) for t in classes}},
      "model": "multinomial logistic regression (softmax), L-BFGS, L2 on the weights",
      "fitted_by": "scripts/fit_topic_head.py --data " + os.path.basename(args.data)
                   + "".join(f" --{k} {getattr(args, k)}" for k in
                             ("l2_grid", "folds", "seed", "embedding_max_tokens")),
      "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                   "numpy": np.__version__, "scipy": __import__("scipy").__version__},
      "cross_validation": {
          "folds": args.folds, "criterion": "pooled out-of-fold accuracy",
          "grid": [{"l2": v, "accuracy": round(a, 4)} for v, a in table.items()],
          "chosen_l2": l2,
          "nested": {"accuracy": round(nested_acc, 4), "inner_folds": 4,
                     "outer_folds": nested}},
  }
  head = th.TopicHead(weights=w, bias=b, classes=classes, embedding_model=model_name,
                      embedding_max_tokens=args.embedding_max_tokens, l2=l2,
                      provenance=provenance)
  os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
  with open(output, "wb") as f:
    f.write(th.head_bytes(head))
  print(f"wrote {output}: l2 {l2:g}, {len(ids)} documents, nested CV accuracy "
        f"{nested_acc:.4f}", flush=True)


if __name__ == "__main__":
  main()
