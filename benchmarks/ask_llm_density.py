"""How the samplers trade quality against coverage on labelled web documents.

On the FineWeb-Edu dev file (1,000 documents with a 70B model's educational score), select
20% with: random, ask_llm (top-k by the bundled scorer's P(yes)), density (inverse
propensity), and ask_llm_density (top pool_factor x k by Ask-LLM, then density-sampled),
using the job's own functions (sketch, sampling keys, defaults). Report, for the selected
documents: mean edu_score, share with edu_score >= 3, and diversity (mean pairwise cosine
distance of their embeddings, and mean density: lower = less redundant).

    .venv/bin/python -m benchmarks.ask_llm_density --data PATH [--keep 0.2]

Ask-LLM scores and embeddings are cached under /tmp (computing them takes ~15 minutes
on 2 CPU cores); the data file is only read.
"""
import argparse
import json
import os
import sys

import numpy as np

from beam_pipelines import options
from benchmarks.harness import add_data_argument
from transforms.sketch_counts import sketch_from_embeddings
from transforms.density import _params_from_sample, density_and_weight
from transforms.sketch_hashing import SketchOptions
from transforms.sampling import sampling_key


def _cached(path, compute):
  if os.path.exists(path):
    return np.load(path)
  value = compute()
  np.save(path, value)
  return value


def ask_llm_scores(texts):
  from models.ask_llm import load_scorer
  args, _ = options.parse_args(["--input=x", "--output=y", "--device=cpu"])
  scorer = load_scorer(options.ask_llm_config(args))
  out = []
  for i in range(0, len(texts), 16):
    out.append(scorer.score(texts[i:i + 16])[:, 0])
    print(f"  ask-llm {i + 16}/{len(texts)}", file=sys.stderr)
  return np.concatenate(out)


def embeddings(texts):
  from models.embeddings import EmbeddingConfig, load_embedder
  emb = load_embedder(EmbeddingConfig(device="cpu"))
  return np.concatenate([emb.embed(texts[i:i + 64]) for i in range(0, len(texts), 64)])


def top_k(score, ids, k):
  order = sorted(range(len(ids)), key=lambda i: (-score[i], ids[i]))
  return order[:k]


def draw(weights, ids, candidates, k, seed):
  keys = sorted(candidates, key=lambda i: (-sampling_key(seed, ids[i], weights[i]), ids[i]))
  return keys[:k]


def describe(sel, edu, emb, dens):
  x = emb[sel]
  sims = x @ x.T
  n = len(sel)
  mean_dist = float((1 - sims)[np.triu_indices(n, 1)].mean())
  return {"mean_edu": round(float(edu[sel].mean()), 3),
          "share_edu_ge_3": round(float((edu[sel] >= 3).mean()), 3),
          "mean_cosine_distance": round(mean_dist, 4),
          "mean_density": round(float(dens[sel].mean()), 2)}


def build_parser():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_data_argument(ap, "--data")
  ap.add_argument("--keep", type=float, default=0.2)
  ap.add_argument("--seeds", type=int, default=5, help="draws averaged per sampler")
  ap.add_argument("--cache", default="/tmp/ald")
  ap.add_argument("--out", default="/tmp/ask_llm_density.json")
  return ap


def main():
  a = build_parser().parse_args()
  rows = [json.loads(l) for l in open(a.data)]
  texts = [r["text"] for r in rows]
  ids = [str(r["id"]) for r in rows]
  edu = np.array([r["edu_score"] for r in rows], float)
  score = _cached(a.cache + "_askllm.npy", lambda: ask_llm_scores(texts))
  emb = _cached(a.cache + "_emb.npy", lambda: embeddings(texts)).astype(np.float32)
  opts = SketchOptions()
  params = _params_from_sample(list(emb[:opts.auto_sample]), opts)
  sketch = sketch_from_embeddings([emb], params)
  dens, w = density_and_weight(emb, sketch)  # as the job computes them
  n = len(ids)
  k = int(n * a.keep)
  everyone = list(range(n))
  results = {"documents": n, "k": k, "sketch": params.to_dict(),
             "all": describe(everyone, edu, emb, dens)}
  results["ask_llm"] = describe(top_k(score, ids, k), edu, emb, dens)
  for name, pick in [
      ("random", lambda s: draw(np.ones(n), ids, everyone, k, s)),
      ("density", lambda s: draw(w, ids, everyone, k, s)),
      ("ask_llm_density_x1.5", lambda s: draw(w, ids, top_k(score, ids, int(1.5 * k)), k, s)),
      ("ask_llm_density_x2", lambda s: draw(w, ids, top_k(score, ids, 2 * k), k, s)),
      ("ask_llm_density_x3", lambda s: draw(w, ids, top_k(score, ids, 3 * k), k, s))]:
    runs = [describe(pick(seed), edu, emb, dens) for seed in range(a.seeds)]
    results[name] = {m: round(float(np.mean([r[m] for r in runs])), 4) for m in runs[0]}
  print(f"{'sampler':<22} {'mean edu':>8} {'edu>=3':>7} {'cos dist':>8} {'density':>8}")
  for name, r in results.items():
    if isinstance(r, dict) and "mean_edu" in r:
      print(f"{name:<22} {r['mean_edu']:8.3f} {r['share_edu_ge_3']:7.3f} "
            f"{r['mean_cosine_distance']:8.4f} {r['mean_density']:8.2f}")
  json.dump(results, open(a.out, "w"), indent=2)


if __name__ == "__main__":
  main()
