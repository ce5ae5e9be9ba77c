"""The bundled quality head against the bundled Ask-LLM judge and perplexity, on the same
documents, folds and bootstrap draws.

On the FineWeb-Edu dev file (1,000 pages with Llama-3-70B educational scores 0-4):
  head (bundled)   out-of-fold predictions of scripts/fit_quality_head.py's own
                   procedure: the setting (token budget, l2) chosen by CV, and the nested
                   estimate (the setting chosen inside each outer training set), which is
                   the honest one; plus the in-job defaults (128 tokens, l2 0.1) for scale
  Ask-LLM          P(yes) of the bundled SmolLM2-135M-Instruct at the job's defaults (512
                   tokens, the paper's prompt in the chat template): no fitting
  perplexity       -perplexity under the bundled SmolLM2-135M (lower = better)
Each is scored by ROC AUC of edu >= 3 against <= 1 and against all < 3, and Spearman with
edu_score, with 95% stratified bootstrap intervals whose draws come from a hash of
(seed, round, id), the same for every method, so the paired differences have intervals.

The LLM scores are read from (and, where missing, added to) benchmarks/quality_head.py's
caches in --cache_dir (qh_askllm.npy, qh_ppl.npy): about 15 minutes each for all 1,000
documents on 2 CPU cores the first time. Embeddings are kept in --cache_dir/head_emb.

    .venv/bin/python benchmarks/quality_signals.py [--data PATH] [--cache_dir /tmp]
"""
import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [REPO, os.path.join(REPO, "scripts"), os.path.join(REPO, "benchmarks")]

import numpy as np

import fit_quality_head as fit
import quality_head as qhb


def llm_scores(args, ids, texts, rows):
  """(P(yes), mean NLL per token) for every document, from the caches, scoring what is
  missing with the job's default configurations."""
  from beam_pipelines import options
  from models import loading
  default_args, _ = options.parse_args(["--input=unused", "--output=unused"])
  llm_cfg = options.ask_llm_config(default_args)
  ppl_cfg = options.perplexity_config(default_args)
  name = loading.model_name(loading.DEFAULT, "scorer")
  n = len(ids)
  path = lambda f: os.path.join(args.cache_dir, f)
  a_key = qhb.cache_key(ids, texts, (llm_cfg, name))
  probs = qhb.load_cache(path("qh_askllm.npy"), a_key, (n, 2))
  todo = np.array([i for i in rows if np.isnan(probs[i, 0])], int)
  if len(todo):
    from models.ask_llm import load_scorer
    scorer = load_scorer(llm_cfg)
    probs, _ = qhb.fill_cache(
        "Ask-LLM", path("qh_askllm.npy"), a_key, llm_cfg, probs, todo,
        lambda t: qhb.estimated_batches(texts, llm_cfg.max_tokens, 100, 8192, 64, t),
        lambda idx: scorer.score([texts[i] for i in idx]))
  p_key = qhb.cache_key(ids, texts, (ppl_cfg, name, "perplexity v1"))
  nll = qhb.load_cache(path("qh_ppl.npy"), p_key, (n,))
  todo = np.array([i for i in rows if np.isnan(nll[i])], int)
  if len(todo):
    from models.perplexity import load_perplexity_scorer
    ppl = load_perplexity_scorer(ppl_cfg)
    nll, _ = qhb.fill_cache(
        "perplexity", path("qh_ppl.npy"), p_key, ppl_cfg, nll, todo,
        lambda t: qhb.estimated_batches(texts, ppl_cfg.max_tokens, 1, 8192, 64, t),
        lambda idx: ppl.score([texts[i] for i in idx]))
  return probs[:, 0], nll


def main():
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--data", default=fit.DEFAULT_DATA)
  ap.add_argument("--cache_dir", default="/tmp")
  ap.add_argument("--l2_grid", default=",".join(f"{v:g}" for v in fit.L2_GRID))
  ap.add_argument("--token_grid", default=",".join(map(str, fit.TOKEN_GRID)))
  ap.add_argument("--folds", type=int, default=5)
  ap.add_argument("--bootstrap", type=int, default=1000)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", default="/tmp/quality_signals.json")
  args = ap.parse_args()
  import transformers
  transformers.logging.set_verbosity_error()

  l2_grid = [float(v) for v in args.l2_grid.split(",")]
  budgets = [int(v) for v in args.token_grid.split(",")]
  ids, texts, edu = fit.load_documents(args.data)
  embeddings, _ = fit.embed_all(texts, sorted(set(budgets) | {128}), "default",
                                cache_dir=os.path.join(args.cache_dir, "head_emb"))
  folds = fit.stratified_folds(ids, edu, args.folds, args.seed)
  _, (tokens, l2) = fit.grid_search({t: embeddings[t] for t in budgets}, edu, folds, l2_grid)
  nested, chosen = fit.nested_predictions(ids, {t: embeddings[t] for t in budgets}, edu,
                                          folds, l2_grid, args.seed)
  p_yes, nll = llm_scores(args, ids, texts, np.arange(len(ids)))
  methods = {
      "head_bundled_nested_cv": nested,
      f"head_bundled_{tokens}tok_l2={l2:g}": fit.oof_predictions(embeddings[tokens], edu,
                                                                  folds, l2),
      "head_128tok_l2=0.1 (in-job defaults)": fit.oof_predictions(embeddings[128], edu,
                                                                  folds, 0.1),
      "ask_llm_p_yes": p_yes,
      "neg_perplexity": -nll,
  }
  results = {m: fit.evaluate(ids, s, edu, folds, args.bootstrap, args.seed)
             for m, s in methods.items()}
  strict = (edu >= 3) | (edu <= 1)
  pos = edu >= 3
  diffs = {}
  for other in ("ask_llm_p_yes", "neg_perplexity"):
    a, b = methods["head_bundled_nested_cv"], methods[other]
    diff = lambda idx, a=a, b=b: fit.auc(a[idx], pos[idx]) - fit.auc(b[idx], pos[idx])
    diffs[f"head_bundled_nested_cv - {other}"] = {
        "auc_3plus_vs_0to1": round(diff(np.flatnonzero(strict)), 4),
        "ci95": fit.bootstrap_interval(ids, diff, strict, pos.astype(int), args.bootstrap,
                                       args.seed)}
  out = {"documents": len(ids), "positives": int(pos.sum()),
         "negatives_0to1": int((edu <= 1).sum()), "below3": int((edu < 3).sum()),
         "chosen": {"tokens": tokens, "l2": l2}, "nested_chosen_per_fold": chosen,
         "results": results, "paired_differences": diffs}
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)
  print(f"\n{'method':40s} {'AUC >=3 vs <=1':>22s} {'AUC >=3 vs <3':>22s} {'Spearman':>22s}")
  for m, r in results.items():
    cell = lambda k: f"{r[k]:.3f} [{r[k + '_ci95'][0]:.3f}-{r[k + '_ci95'][1]:.3f}]"
    print(f"{m:40s} {cell('auc_3plus_vs_0to1'):>22s} {cell('auc_3plus_vs_below3'):>22s} "
          f"{cell('spearman_edu_score'):>22s}")
  for k, d in diffs.items():
    print(f"{k}: {d['auc_3plus_vs_0to1']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
