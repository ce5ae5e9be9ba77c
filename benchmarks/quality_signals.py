"""The bundled quality head against the bundled Ask-LLM judge and perplexity, on the same
documents, folds and bootstrap draws.

On the FineWeb-Edu dev file (1,000 pages with Llama-3-70B educational scores 0-4):
  head (bundled)   out-of-fold predictions of scripts/fit_quality_head.py's own
                   procedure over all documents: the setting (token budget, l2) chosen
                   by CV, and the nested estimate (the setting chosen inside each outer
                   training set), which is the honest one; plus the in-job defaults (128
                   tokens, l2 0.1) for scale
  Ask-LLM          P(yes) of the bundled SmolLM2-135M-Instruct at the job's defaults (512
                   tokens, the paper's prompt in the chat template): no fitting. Read from
                   benchmarks/scorer_quality.py's per-document scores (--judge_scores,
                   its .npz): the documents that run scored (all edu >= 3, a fixed-seed
                   sample of edu <= 1) are the comparison set
  perplexity       -perplexity under the bundled SmolLM2-135M (lower = better), on the
                   same documents (cached in --cache_dir/qh_ppl.npy, shared with
                   benchmarks/quality_head_bench.py)
The head is scored on all documents (ROC AUC of edu >= 3 against <= 1 and against all
< 3, Spearman with edu_score); all three on the comparison set (AUC of edu >= 3 against
<= 1), with 95% stratified bootstrap intervals whose draws come from a hash of
(seed, round, id), the same for every method, so the paired differences have intervals.

    .venv/bin/python -m benchmarks.scorer_quality --data PATH --out /tmp/sq512.json  # first
    .venv/bin/python -m benchmarks.quality_signals --data PATH --judge_scores /tmp/sq512.npz
"""
import argparse
import json
import os

import numpy as np

from benchmarks import quality_head_bench as qhb
from benchmarks.harness import add_data_argument, auc
from scripts import fit_quality_head as fit


def perplexity_nll(args, ids, texts, rows):
  """Mean NLL per token of the given rows (NaN elsewhere), from the cache, scoring what
  is missing with the job's default configuration."""
  from beam_pipelines import options
  from models import loading
  default_args, _ = options.parse_args(["--input=unused", "--output=unused"])
  ppl_cfg = options.perplexity_config(default_args)
  name = loading.model_name(loading.DEFAULT, "scorer")
  path = os.path.join(args.cache_dir, "qh_ppl.npy")
  p_key = qhb.cache_key(ids, texts, (ppl_cfg, name, "perplexity v1"))
  nll = qhb.load_cache(path, p_key, (len(ids),))
  todo = np.array([i for i in rows if np.isnan(nll[i])], int)
  if len(todo):
    from models.perplexity import load_perplexity_scorer
    ppl = load_perplexity_scorer(ppl_cfg)
    nll, _ = qhb.fill_cache(
        "perplexity", path, p_key, ppl_cfg, nll, todo,
        lambda t: qhb.estimated_batches(texts, ppl_cfg.max_tokens, 1, 8192, 64, t),
        lambda idx: ppl.score([texts[i] for i in idx]))
  return nll


def build_parser():
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  add_data_argument(ap, "--data")
  ap.add_argument("--cache_dir", default="/tmp")
  ap.add_argument("--judge_scores", default="/tmp/scorer_quality.npz",
                  help="per-document scores written by benchmarks/scorer_quality.py")
  ap.add_argument("--judge_variant", default="paper__chat__p_yes",
                  help="the job's default for the bundled judge")
  ap.add_argument("--l2_grid", default=",".join(f"{v:g}" for v in fit.L2_GRID))
  ap.add_argument("--token_grid", default=",".join(map(str, fit.TOKEN_GRID)))
  ap.add_argument("--folds", type=int, default=5)
  ap.add_argument("--bootstrap", type=int, default=1000)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", default="/tmp/quality_signals.json")
  return ap


def main():
  args = build_parser().parse_args()
  import transformers
  transformers.logging.set_verbosity_error()

  l2_grid = [float(v) for v in args.l2_grid.split(",")]
  budgets = [int(v) for v in args.token_grid.split(",")]
  ids, texts, edu = fit.load_documents(args.data)
  embeddings = fit.embed_all(texts, sorted(set(budgets) | {128}), "default",
                             cache_dir=os.path.join(args.cache_dir, "head_emb"))
  folds = fit.stratified_folds(ids, edu, args.folds, args.seed)
  _, (tokens, l2) = fit.grid_search({t: embeddings[t] for t in budgets}, edu, folds, l2_grid)
  nested, chosen = fit.nested_predictions(ids, {t: embeddings[t] for t in budgets}, edu,
                                          folds, l2_grid, args.seed)
  judge = np.load(args.judge_scores)
  where = {i: n for n, i in enumerate(ids)}
  rows = np.array([where[str(i)] for i in judge["ids"]])
  p_yes = np.full(len(ids), np.nan)
  p_yes[rows] = judge[args.judge_variant]
  nll = perplexity_nll(args, ids, texts, rows)
  heads = {
      "head_bundled_nested_cv": nested,
      f"head_bundled_{tokens}tok_l2={l2:g}": fit.oof_predictions(embeddings[tokens], edu,
                                                                  folds, l2),
      "head_128tok_l2=0.1 (in-job defaults)": fit.oof_predictions(embeddings[128], edu,
                                                                  folds, 0.1),
  }
  methods = {**heads, "ask_llm_p_yes": p_yes, "neg_perplexity": -nll}
  all_docs = {m: fit.evaluate(ids, s, edu, folds, args.bootstrap, args.seed)
              for m, s in heads.items()}
  subset = np.zeros(len(ids), bool)
  subset[rows] = True
  pos = edu >= 3
  on_subset = {}
  for m, s in methods.items():
    a = lambda idx, s=s: auc(s[idx], pos[idx])
    on_subset[m] = {"auc_3plus_vs_0to1": round(a(rows), 4),
                    "ci95": fit.bootstrap_interval(ids, a, subset, pos.astype(int),
                                                   args.bootstrap, args.seed),
                    "per_fold": [round(a(rows[folds[rows] == k]), 4)
                                 for k in range(args.folds)]}
  diffs = {}
  for other in ("ask_llm_p_yes", "neg_perplexity"):
    a, b = methods["head_bundled_nested_cv"], methods[other]
    diff = lambda idx, a=a, b=b: auc(a[idx], pos[idx]) - auc(b[idx], pos[idx])
    diffs[f"head_bundled_nested_cv - {other}"] = {
        "auc_3plus_vs_0to1": round(diff(rows), 4),
        "ci95": fit.bootstrap_interval(ids, diff, subset, pos.astype(int), args.bootstrap,
                                       args.seed)}
  out = {"documents": len(ids), "positives": int(pos.sum()),
         "negatives_0to1": int((edu <= 1).sum()), "below3": int((edu < 3).sum()),
         "chosen": {"tokens": tokens, "l2": l2}, "nested_chosen_per_fold": chosen,
         "heads_on_all_documents": all_docs,
         "comparison_set": {"documents": int(subset.sum()),
                            "positives": int((subset & pos).sum()),
                            "judge_scores": os.path.basename(args.judge_scores),
                            "judge_variant": args.judge_variant},
         "on_comparison_set": on_subset, "paired_differences": diffs}
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)
  print(f"\nheads on all {len(ids)} documents (out-of-fold):")
  print(f"{'method':40s} {'AUC >=3 vs <=1':>22s} {'AUC >=3 vs <3':>22s} {'Spearman':>22s}")
  for m, r in all_docs.items():
    cell = lambda k: f"{r[k]:.3f} [{r[k + '_ci95'][0]:.3f}-{r[k + '_ci95'][1]:.3f}]"
    print(f"{m:40s} {cell('auc_3plus_vs_0to1'):>22s} {cell('auc_3plus_vs_below3'):>22s} "
          f"{cell('spearman_edu_score'):>22s}")
  print(f"\non the {int(subset.sum())} documents the judge scored "
        f"({int((subset & pos).sum())} with edu >= 3), AUC >= 3 vs <= 1:")
  for m, r in on_subset.items():
    print(f"{m:40s} {r['auc_3plus_vs_0to1']:.3f} [{r['ci95'][0]:.3f}-{r['ci95'][1]:.3f}]  "
          f"per fold {r['per_fold']}")
  for k, d in diffs.items():
    print(f"{k}: {d['auc_3plus_vs_0to1']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]")
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
