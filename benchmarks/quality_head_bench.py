"""The quality head (ridge on MiniLM embeddings) against Ask-LLM and perplexity: quality,
cost, and how well a head distils a teacher scored on a fraction of the documents.

1. Quality. 5-fold cross-validated ROC AUC of edu_score >= 3 (positives) vs <= 1
   (negatives) on the FineWeb-Edu annotated dev set for
     (a) the quality head: ridge (transforms/quality_head.py RidgeStats + solve) from the
         bundled all-MiniLM-L6-v2 embeddings to edu_score. All documents take part in the
         folds (stratified by edu_score, seeded); each fold is predicted by a head fitted
         on the other four; the AUC is computed on the pooled out-of-fold predictions of
         the labelled documents. Reported for every l2 of --l2_grid (one l2 for all folds:
         the grid's best is the recommended --head_l2, but picking the best of a grid on
         the same folds is slightly optimistic), and nested: the l2 chosen inside each
         outer training set by an inner 4-fold CV (criterion: inner out-of-fold AUC), which
         is the honest estimate of "fit a head and choose l2 by CV". Per-fold AUCs give a
         mean +- sd.
     (b) Ask-LLM with the bundled scorer and the pipeline's default configuration
         (options.ask_llm_config of the default arguments): AUC of P(yes), no fitting.
     (c) perplexity with the bundled scorer (options.perplexity_config): AUC of
         -perplexity (lower perplexity ranked as better).
   95% CIs: stratified bootstrap percentiles over the evaluation documents, the same
   resamples for every method (so the paired differences have intervals too). For the
   head they hold the out-of-fold predictions fixed: the fold-to-fold spread is the
   per-fold sd.
2. Cost. Documents/s of head scoring (tokenise + embed at 128 tokens + head.predict)
   against Ask-LLM scoring (tokenise + prompt + forward at 512 tokens) of the same
   --speed_docs documents in this run, batched as the pipeline batches them (sorted by
   estimated tokens, token budget 8192, at most 256 / 64 documents). The two are
   interleaved (order alternating) --repeats times; medians and per-round ratios are
   reported. Then a FLOPs projection (2 x params x tokens per document) for a 3B scorer
   reading the measured mean prompt tokens (at most 512) against the 22M embedder
   reading its measured mean tokens (at most 128). It is a projection, not a measurement.
3. Teacher fraction. The bundled Ask-LLM P(yes) of a deterministic fraction of the
   documents (transforms.quality.in_teacher_fraction(seed, id, f), as the pipeline picks
   them) is the teacher; a head fitted to it is compared with the teacher on the
   documents the teacher did not score (Spearman). For f = 0.05, 0.1, 0.2, 0.5, with the
   l2 recommended by part 1 and with the l2 chosen by CV inside the teacher set (Spearman
   criterion), for seed 0 (with bootstrap CI) and as mean +- sd over seeds 0..9. The same
   for edu_score as the teacher. Also "pipeline-exact": fitted on the teacher set minus
   the 20% the pipeline holds back for its fit report.

Per-document scores are cached in /tmp (keyed by document ids, texts and the model
configuration; partial progress is saved), so a rerun takes a minute or two plus part 2:
  /tmp/qh_emb.npy      embeddings [N, 384]
  /tmp/qh_askllm.npy   (P(yes), P(no)) [N, 2]
  /tmp/qh_ppl.npy      mean negative log-likelihood per token [N] (perplexity = exp)

Run from the repo root (first run: ~15 min each for Ask-LLM and perplexity over the 1000
documents on 2 CPU cores, plus ~10 min for part 2):
  nohup .venv/bin/python -m benchmarks.quality_head_bench --data PATH \
      > /tmp/quality_head.log 2>&1 &
  .venv/bin/python -m benchmarks.quality_head_bench --data PATH --negatives 240
      # 80 pos + 240 neg only
"""
import argparse
import hashlib
import json
import os
import statistics
import time
import types

import numpy as np

from benchmarks.harness import (add_data_argument, auc, bootstrap_aucs, ci95,
                                interleaved_order, run_interleaved, stopwatch,
                                stratified_resamples)

L2_GRID = "1e-5,1e-4,1e-3,3e-3,1e-2,3e-2,1e-1,3e-1,1,3"
FRACTIONS = (0.05, 0.1, 0.2, 0.5)
PRIMARY_FRACTION = 0.1


# --------------------------------------------------------------------------------------
# Data, folds, caches
# --------------------------------------------------------------------------------------
def load_docs(path):
  with open(path) as f:
    docs = [json.loads(line) for line in f]
  ids = [str(d["id"]) for d in docs]
  texts = [d["text"] for d in docs]
  edu = np.array([float(d["edu_score"]) for d in docs])
  return ids, texts, edu


def stratified_folds(strata, k, seed):
  """Fold index per item: each stratum shuffled (seeded) and dealt round-robin."""
  rng = np.random.default_rng(seed)
  folds = np.empty(len(strata), int)
  offset = 0
  for s in np.unique(strata):
    idx = np.flatnonzero(strata == s)
    idx = idx[rng.permutation(len(idx))]
    folds[idx] = (np.arange(len(idx)) + offset) % k
    offset += len(idx)  # so small strata do not all start at fold 0
  return folds


def cache_key(ids, texts, what):
  h = hashlib.sha256(repr(what).encode())
  for i, t in zip(ids, texts):
    h.update(i.encode() + b"\x00" + hashlib.sha1(t.encode()).digest())
  return h.hexdigest()


def load_cache(path, key, shape):
  """The cached array (NaN rows = not yet scored), or a fresh all-NaN one."""
  meta = path + ".json"
  if os.path.exists(path) and os.path.exists(meta):
    with open(meta) as f:
      if json.load(f).get("key") == key:
        arr = np.load(path)
        if arr.shape == shape:
          return arr
    print(f"  cache {path} is for other documents or another model: recomputing", flush=True)
  return np.full(shape, np.nan)


def save_cache(path, key, arr, what):
  np.save(path + ".tmp.npy", arr)
  os.replace(path + ".tmp.npy", path)
  with open(path + ".json", "w") as f:
    json.dump({"key": key, "config": repr(what)}, f)


def estimated_batches(texts, max_tokens, frame, budget, max_size, idx=None):
  """Index batches as the pipeline's SortAndBatchElements makes them: sorted by the
  estimated token count (transforms.score.estimated_tokens), at most max_size documents
  and `budget` estimated tokens per batch."""
  from transforms.score import estimated_tokens
  idx = list(range(len(texts))) if idx is None else list(idx)
  size = {i: estimated_tokens(types.SimpleNamespace(text=texts[i]), max_tokens, frame)
          for i in idx}
  order = sorted(idx, key=lambda i: (size[i], i))
  batches, batch, weight = [], [], 0
  limit = max(budget, max_tokens)
  for i in order:
    if batch and (len(batch) >= max_size or weight + size[i] > limit):
      batches.append(batch)
      batch, weight = [], 0
    batch.append(i)
    weight += size[i]
  return batches + [batch] if batch else batches


def fill_cache(name, path, key, what, arr, todo, batches_fn, score_fn, save_every=60.0):
  """Scores the rows `todo` (batch by batch), saving progress every save_every seconds."""
  if not len(todo):
    print(f"{name}: all {len(arr)} documents cached in {path}", flush=True)
    return arr, None
  batches = batches_fn(todo)
  print(f"{name}: scoring {len(todo)} documents in {len(batches)} batches "
        f"({len(arr) - np.isnan(arr.reshape(len(arr), -1)[:, 0]).sum()} cached)", flush=True)
  start = last_save = time.perf_counter()
  done = 0
  for b, idx in enumerate(batches):
    arr[idx] = score_fn(idx)
    done += len(idx)
    now = time.perf_counter()
    if now - last_save > save_every or b == len(batches) - 1:
      save_cache(path, key, arr, what)
      last_save = now
      rate = done / (now - start)
      print(f"  {name}: {done}/{len(todo)} documents, {rate:.2f} docs/s, "
            f"ETA {(len(todo) - done) / rate / 60:.1f} min "
            f"(load avg {os.getloadavg()[0]:.1f})", flush=True)
  return arr, time.perf_counter() - start


# --------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------
def spearman(a, b):
  from scipy.stats import spearmanr
  return float(spearmanr(a, b).statistic)


# --------------------------------------------------------------------------------------
# Ridge helpers (the pipeline's own RidgeStats / solve / QualityHead.predict)
# --------------------------------------------------------------------------------------
def fit_head(x, y, l2, teacher="benchmark"):
  from transforms.quality_head import RidgeStats, solve
  return solve(RidgeStats().add(x, y), l2, "benchmark", teacher)


def oof_predictions(x, y, folds, l2):
  pred = np.zeros(len(y))
  for k in np.unique(folds):
    test = folds == k
    pred[test] = fit_head(x[~test], y[~test], l2).predict(x[test])
  return pred


def choose_l2(x, y, grid, criterion, seed, k=4, strata=None):
  """The grid l2 with the best pooled out-of-fold criterion(pred, index) inside (x, y)."""
  folds = stratified_folds(strata if strata is not None else np.zeros(len(y)), k, seed)
  scores = []
  for l2 in grid:
    s = criterion(oof_predictions(x, y, folds, l2))
    scores.append(-np.inf if np.isnan(s) else s)
  return grid[int(np.argmax(scores))], scores


# --------------------------------------------------------------------------------------
# Part 1: quality
# --------------------------------------------------------------------------------------
def part1(args, emb, edu, p_yes, nll, eval_mask, grid):
  labelled = (edu >= 3) | (edu <= 1)
  pos = edu >= 3
  folds = stratified_folds(edu, args.folds, args.seed)
  ev = np.flatnonzero(eval_mask)
  lab_ev = pos[ev]

  # Fixed l2 for all folds.
  table = []
  for l2 in grid:
    pred = oof_predictions(emb, edu, folds, l2)
    per_fold = [auc(pred[ev][folds[ev] == k], lab_ev[folds[ev] == k]) for k in range(args.folds)]
    table.append({"l2": l2, "auc": auc(pred[ev], lab_ev), "per_fold_mean": float(np.mean(per_fold)),
                  "per_fold_sd": float(np.std(per_fold, ddof=1)),
                  "mse_all_docs": float(np.mean((pred - edu) ** 2)), "pred": pred})
  best = max(table, key=lambda r: r["auc"])

  # Nested: l2 chosen inside each outer training set by inner 4-fold CV (AUC criterion on
  # the inner labelled docs).
  nested_pred, chosen = np.zeros(len(edu)), []
  for k in range(args.folds):
    tr, te = np.flatnonzero(folds != k), folds == k
    lab_tr, pos_tr = labelled[tr], pos[tr]
    crit = lambda pred, lab_tr=lab_tr, pos_tr=pos_tr: auc(pred[lab_tr], pos_tr[lab_tr])
    l2, _ = choose_l2(emb[tr], edu[tr], grid, crit, args.seed + 100 + k, strata=edu[tr])
    chosen.append(l2)
    nested_pred[te] = fit_head(emb[tr], edu[tr], l2).predict(emb[te])

  methods = {"head_nested_cv": nested_pred[ev],
             f"head_l2={best['l2']:g}": best["pred"][ev],
             f"head_l2={args.current_l2:g}": next(
                 (r["pred"] for r in table if np.isclose(r["l2"], args.current_l2)),
                 oof_predictions(emb, edu, folds, args.current_l2))[ev],
             "ask_llm_p_yes": p_yes[ev],
             "neg_perplexity": -nll[ev]}
  boots = stratified_resamples(lab_ev, args.bootstrap, args.seed + 1)
  boot = {m: bootstrap_aucs(s, boots) for m, s in methods.items()}
  results = {}
  for m, s in methods.items():
    per_fold = [auc(s[folds[ev] == k], lab_ev[folds[ev] == k]) for k in range(args.folds)]
    results[m] = {"auc": auc(s, lab_ev), "ci95": ci95(boot[m]),
                  "per_fold": per_fold, "per_fold_mean": float(np.mean(per_fold)),
                  "per_fold_sd": float(np.std(per_fold, ddof=1))}
  diffs = {}
  for a_name, b_name in (("head_nested_cv", "ask_llm_p_yes"), ("head_nested_cv", "neg_perplexity"),
                         ("ask_llm_p_yes", "neg_perplexity")):
    d = boot[a_name] - boot[b_name]
    diffs[f"{a_name} - {b_name}"] = {"diff": results[a_name]["auc"] - results[b_name]["auc"],
                                     "ci95": ci95(d), "frac_le_0": float((d <= 0).mean())}
  return {"eval_docs": int(len(ev)), "positives": int(lab_ev.sum()),
          "negatives": int((~lab_ev).sum()), "folds": args.folds,
          "l2_grid": [{k: v for k, v in r.items() if k != "pred"} for r in table],
          "best_grid_l2": best["l2"], "nested_chosen_l2_per_fold": chosen,
          "results": results, "paired_differences": diffs}


# --------------------------------------------------------------------------------------
# Part 2: cost
# --------------------------------------------------------------------------------------
def part2(args, embedder, scorer, head, texts, cached_p_yes):
  import torch
  sel = list(range(min(args.speed_docs, len(texts))))
  t = [texts[i] for i in sel]
  emb_batches = estimated_batches(t, embedder.config.max_tokens, 2, 8192, 256)
  llm_batches = estimated_batches(t, scorer.config.max_tokens, 100, 8192, 64)

  def run_head():
    out = np.zeros(len(t))
    for idx in emb_batches:
      out[idx] = head.predict(embedder.embed([t[i] for i in idx]))
    return out

  def run_llm():
    out = np.zeros(len(t))
    for idx in llm_batches:
      out[idx] = scorer.score([t[i] for i in idx])[:, 0]
    return out

  # Token counts (what the models actually read, special tokens and prompt included).
  emb_tokens = [len(embedder.tokenizer(x[: embedder.config.max_tokens * 32], truncation=True,
                                       max_length=embedder.config.max_tokens)["input_ids"])
                for x in t]
  llm_tokens = [len(scorer.encode(x)) for x in t]
  with torch.inference_mode():
    run_head()  # warm-up
    scorer.score(t[:4])
  jobs = {"head": run_head, "ask_llm": run_llm}

  def progress(r, name, run):
    print(f"  round {r + 1} {name:8s} {len(t) / run[0]:8.2f} docs/s "
          f"({run[0]:.1f} s, load avg {os.getloadavg()[0]:.1f})", flush=True)

  # Interleaved: head first in even rounds, Ask-LLM first in odd ones.
  runs = run_interleaved({k: lambda fn=fn: stopwatch(fn) for k, fn in jobs.items()},
                         interleaved_order(list(jobs), args.repeats), after=progress)
  times = {k: [secs for secs, _ in v] for k, v in runs.items()}
  p_yes_timed = runs["ask_llm"][-1][1] if runs["ask_llm"] else None
  dps = {k: len(t) / statistics.median(v) for k, v in times.items()}
  per_round = [a / b for a, b in zip(times["ask_llm"], times["head"])]
  mean_llm, mean_emb = float(np.mean(llm_tokens)), float(np.mean(emb_tokens))
  n_emb = sum(p.numel() for p in embedder.model.parameters())
  n_llm = sum(p.numel() for p in scorer.model.parameters())
  flops = lambda params, tokens: 2.0 * params * tokens
  proj = flops(args.big_params, mean_llm) / flops(args.emb_params, mean_emb)
  bundled_proj = flops(n_llm, mean_llm) / flops(n_emb, mean_emb)
  check = cached_p_yes[sel]
  return {"docs": len(t), "repeats": args.repeats, "torch_threads": torch.get_num_threads(),
          "seconds": times, "docs_per_s_median": dps,
          "speedup_head_over_ask_llm_median": dps["head"] / dps["ask_llm"],
          "speedup_per_round": per_round,
          "mean_tokens": {"ask_llm_prompt": mean_llm, "embedder": mean_emb},
          "batches": {"head": len(emb_batches), "ask_llm": len(llm_batches)},
          "params_counted": {"embedder": n_emb, "bundled_scorer": n_llm},
          "flops_projection": {
              "note": "FLOPs projection (2 x params x tokens per document), not a measurement",
              "scorer_params": args.big_params, "embedder_params": args.emb_params,
              "scorer_flops_per_doc": flops(args.big_params, mean_llm),
              "embedder_flops_per_doc": flops(args.emb_params, mean_emb),
              "ratio_3b_scorer_over_embedder": proj,
              "same_formula_bundled_135m_over_embedder": bundled_proj},
          "max_abs_diff_p_yes_timed_vs_cache": (float(np.nanmax(np.abs(p_yes_timed - check)))
                                                if not np.isnan(check).all() else None)}


# --------------------------------------------------------------------------------------
# Part 3: teacher fraction
# --------------------------------------------------------------------------------------
def teacher_head(args, emb, y, seen, grid, l2_default, seed):
  """Heads fitted on the seen documents: with l2_default and with the l2 chosen by CV
  inside the seen set (Spearman criterion). Returns predictions for all documents."""
  xs, ys = emb[seen], y[seen]
  fixed = fit_head(xs, ys, l2_default).predict(emb)
  crit = lambda pred: spearman(pred, ys) if np.ptp(pred) > 0 else np.nan
  # Stratify the inner folds by teacher quintile so every fold sees the whole range.
  strata = np.searchsorted(np.quantile(ys, [0.2, 0.4, 0.6, 0.8]), ys)
  l2_cv, _ = choose_l2(xs, ys, grid, crit, seed + 7, k=min(5, len(ys)), strata=strata)
  cv = fit_head(xs, ys, l2_cv).predict(emb)
  return fixed, cv, l2_cv


def part3(args, ids, emb, edu, p_yes, grid, l2_default):
  from transforms.quality import in_teacher_fraction, is_held_back
  pos, labelled = edu >= 3, (edu >= 3) | (edu <= 1)
  teachers = {"ask_llm_p_yes": p_yes, "edu_score": edu}
  out = {"l2_default": l2_default, "context": {
      "spearman_ask_llm_vs_edu_all_docs": spearman(p_yes, edu),
      "auc_ask_llm_all_labelled": auc(p_yes[labelled], pos[labelled])}}
  for tname, y in teachers.items():
    rows = []
    for f in args.fractions:
      per_seed = []
      for seed in range(args.teacher_seeds):
        seen = np.array([in_teacher_fraction(seed, i, f) for i in ids])
        unseen = ~seen
        fixed, cv, l2_cv = teacher_head(args, emb, y, seen, grid, l2_default, seed)
        u_lab = unseen & labelled
        rec = {"seed": seed, "seen": int(seen.sum()), "unseen": int(unseen.sum()),
               "spearman_fixed_l2": spearman(fixed[unseen], y[unseen]),
               "spearman_cv_l2": spearman(cv[unseen], y[unseen]), "cv_l2": l2_cv,
               "head_auc_edu_unseen_fixed_l2": auc(fixed[u_lab], pos[u_lab]),
               "teacher_auc_edu_unseen": auc(y[u_lab], pos[u_lab])}
        if seed == 0:
          rng = np.random.default_rng(args.seed + 3)
          u = np.flatnonzero(unseen)
          bs = [rng.choice(u, len(u)) for _ in range(args.bootstrap)]
          rec["spearman_fixed_l2_ci95"] = ci95([spearman(fixed[b], y[b]) for b in bs])
          rec["spearman_cv_l2_ci95"] = ci95([spearman(cv[b], y[b]) for b in bs])
          rec["grid_spearman_unseen"] = {
              f"{l2:g}": spearman(fit_head(emb[seen], y[seen], l2).predict(emb[unseen]), y[unseen])
              for l2 in grid}
          if np.isclose(f, PRIMARY_FRACTION):
            # As the pipeline fits: the teacher set minus its 20% held back for the report.
            train = seen & ~np.array([is_held_back(seed, i) for i in ids])
            p = fit_head(emb[train], y[train], l2_default).predict(emb)
            rec["pipeline_exact_fit_docs"] = int(train.sum())
            rec["pipeline_exact_spearman_unseen"] = spearman(p[unseen], y[unseen])
        per_seed.append(rec)
      summary = {"fraction": f, "seed0": per_seed[0]}
      for key in ("spearman_fixed_l2", "spearman_cv_l2", "head_auc_edu_unseen_fixed_l2",
                  "teacher_auc_edu_unseen"):
        v = np.array([r[key] for r in per_seed])
        summary[key + "_mean_sd_over_seeds"] = [float(np.mean(v)), float(np.std(v, ddof=1))
                                                if len(v) > 1 else 0.0]
      summary["cv_l2_by_seed"] = [r["cv_l2"] for r in per_seed]
      rows.append(summary)
      s0 = per_seed[0]
      print(f"  teacher {tname:13s} f={f:<4g} seen {s0['seen']:3d}: Spearman(head, teacher) "
            f"on unseen = {s0['spearman_fixed_l2']:.3f} {fmt_ci(s0['spearman_fixed_l2_ci95'])} "
            f"(l2 {l2_default:g}); {s0['spearman_cv_l2']:.3f} (CV l2 {s0['cv_l2']:g}); "
            f"seeds 0..{args.teacher_seeds - 1}: "
            f"{summary['spearman_fixed_l2_mean_sd_over_seeds'][0]:.3f} +- "
            f"{summary['spearman_fixed_l2_mean_sd_over_seeds'][1]:.3f}", flush=True)
    out[tname] = rows
  return out


def fmt_ci(c):
  return f"[{c[0]:.3f}, {c[1]:.3f}]"


# --------------------------------------------------------------------------------------
def build_parser():
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  add_data_argument(ap, "--data")
  ap.add_argument("--negatives", type=int, default=None,
                  help="Evaluate parts 1-2 on all positives + this many fixed-seed negatives "
                       "(only those are scored by the LLM); part 3 then needs a full cache. "
                       "Default: all labelled documents.")
  ap.add_argument("--folds", type=int, default=5)
  ap.add_argument("--l2_grid", default=L2_GRID, help=f"Default: {L2_GRID}.")
  ap.add_argument("--current_l2", type=float, default=None,
                  help="An l2 also reported in the method table. Default: the job's "
                       "--head_l2 default.")
  ap.add_argument("--bootstrap", type=int, default=2000)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--speed_docs", type=int, default=200, help="part 2: the first N documents")
  ap.add_argument("--repeats", type=int, default=3, help="part 2: interleaved repeats")
  ap.add_argument("--skip_speed", action="store_true", help="skip part 2")
  ap.add_argument("--big_params", type=float, default=3e9)
  ap.add_argument("--emb_params", type=float, default=22e6)
  ap.add_argument("--fractions", type=lambda s: [float(x) for x in s.split(",")],
                  default=list(FRACTIONS))
  ap.add_argument("--teacher_seeds", type=int, default=10,
                  help="part 3: seeds of in_teacher_fraction (seed 0 is the headline)")
  ap.add_argument("--cache_dir", default="/tmp")
  ap.add_argument("--out", default="/tmp/quality_head.json")
  return ap


def main():
  args = build_parser().parse_args()

  import torch
  import transformers
  transformers.logging.set_verbosity_error()
  from beam_pipelines import options
  from models.embeddings import load_embedder
  from models.ask_llm import load_scorer

  t_start = time.perf_counter()
  grid = [float(x) for x in args.l2_grid.split(",")]
  ids, texts, edu = load_docs(args.data)
  n = len(ids)
  pos, neg = edu >= 3, edu <= 1
  def subset(n_neg):
    """All positives + a fixed-seed sample of n_neg negatives."""
    rng = np.random.default_rng(args.seed)
    neg_i = np.flatnonzero(neg)
    pick = np.sort(rng.choice(len(neg_i), min(n_neg, len(neg_i)), replace=False))
    mask = pos.copy()
    mask[neg_i[pick]] = True
    return mask

  eval_mask = pos | neg if args.negatives is None else subset(args.negatives)
  first_rows = np.flatnonzero(subset(240) & eval_mask)
  print(f"{n} documents; evaluation: {int((eval_mask & pos).sum())} positives (edu>=3), "
        f"{int((eval_mask & neg).sum())} negatives (edu<=1); torch threads "
        f"{torch.get_num_threads()}", flush=True)

  default_args, _ = options.parse_args(["--input=unused", "--output=unused"])
  if args.current_l2 is None:
    args.current_l2 = default_args.head_l2
  emb_cfg = options.embedding_config(default_args)
  llm_cfg = options.ask_llm_config(default_args)
  ppl_cfg = options.perplexity_config(default_args)
  print(f"embedding config: {emb_cfg}\nAsk-LLM config: {llm_cfg}\nperplexity config: "
        f"{ppl_cfg}", flush=True)
  path = lambda name: os.path.join(args.cache_dir, name)
  # Ask-LLM: every document (part 3 needs them all) unless --negatives; perplexity: the
  # evaluation documents.
  llm_rows = np.flatnonzero(eval_mask) if args.negatives is not None else np.arange(n)
  ppl_rows = np.flatnonzero(eval_mask)
  timings = {}

  # Embeddings (all documents: every document takes part in the folds).
  t0 = time.perf_counter()
  embedder = load_embedder(emb_cfg)
  timings["load_embedder_s"] = time.perf_counter() - t0
  e_key = cache_key(ids, texts, (emb_cfg, embedder.name))
  emb = load_cache(path("qh_emb.npy"), e_key, (n, embedder.dim))
  emb, timings["embed_all_s"] = fill_cache(
      "embeddings", path("qh_emb.npy"), e_key, emb_cfg, emb,
      np.flatnonzero(np.isnan(emb[:, 0])),
      lambda todo: estimated_batches(texts, emb_cfg.max_tokens, 2, 8192, 256, todo),
      lambda idx: embedder.embed([texts[i] for i in idx]))
  emb = emb.astype(np.float32)

  # Ask-LLM (P(yes), P(no)).
  t0 = time.perf_counter()
  scorer = load_scorer(llm_cfg)
  timings["load_ask_llm_s"] = time.perf_counter() - t0
  a_key = cache_key(ids, texts, (llm_cfg, scorer.model_name))
  probs = load_cache(path("qh_askllm.npy"), a_key, (n, 2))
  # The 80 + 240 subset first, so that an interrupted run can be finished with
  # --negatives 240 from the cache; then the other documents.
  timings["ask_llm_all_s"] = 0.0
  for stage, rows in (("subset", first_rows), ("rest", llm_rows)):
    probs, secs = fill_cache(
        f"Ask-LLM ({stage})", path("qh_askllm.npy"), a_key, llm_cfg, probs,
        np.array([i for i in rows if np.isnan(probs[i, 0])], int),
        lambda todo: estimated_batches(texts, llm_cfg.max_tokens, 100, 8192, 64, todo),
        lambda idx: scorer.score([texts[i] for i in idx]))
    timings["ask_llm_all_s"] += secs or 0.0
  p_yes = probs[:, 0]

  # Perplexity (mean NLL per token), its own scorer as the pipeline loads it.
  from models.perplexity import load_perplexity_scorer
  p_key = cache_key(ids, texts, (ppl_cfg, scorer.model_name, "perplexity v1"))
  nll = load_cache(path("qh_ppl.npy"), p_key, (n,))
  # Only the evaluation documents: perplexity enters part 1 alone.
  if any(np.isnan(nll[i]) for i in ppl_rows):
    t0 = time.perf_counter()
    ppl = load_perplexity_scorer(ppl_cfg)
    timings["load_perplexity_s"] = time.perf_counter() - t0
    timings["perplexity_all_s"] = 0.0
    for stage, rows in (("subset", first_rows), ("rest", ppl_rows)):
      nll, secs = fill_cache(
          f"perplexity ({stage})", path("qh_ppl.npy"), p_key, ppl_cfg, nll,
          np.array([i for i in rows if np.isnan(nll[i])], int),
          lambda todo: estimated_batches(texts, ppl_cfg.max_tokens, 1, 8192, 64, todo),
          lambda idx: ppl.score([texts[i] for i in idx]))
      timings["perplexity_all_s"] += secs or 0.0
    del ppl
  else:
    print(f"perplexity: all needed documents cached in {path('qh_ppl.npy')}", flush=True)

  # Part 1.
  print("\n== 1. Quality: 5-fold CV ROC AUC, edu>=3 vs edu<=1 ==", flush=True)
  r1 = part1(args, emb, edu, p_yes, nll, eval_mask, grid)
  print(f"{r1['positives']} positives, {r1['negatives']} negatives; head fitted to edu_score "
        f"on all {n} documents in {args.folds} folds")
  print(f"{'l2':>8s} {'pooled AUC':>10s} {'per-fold mean+-sd':>18s} {'OOF MSE':>8s}")
  for r in r1["l2_grid"]:
    mark = "  <- best" if r["l2"] == r1["best_grid_l2"] else ""
    print(f"{r['l2']:8g} {r['auc']:10.4f} {r['per_fold_mean']:11.4f} +- {r['per_fold_sd']:.4f} "
          f"{r['mse_all_docs']:8.4f}{mark}")
  print(f"nested CV chose l2 per outer fold: {[f'{x:g}' for x in r1['nested_chosen_l2_per_fold']]}")
  print(f"\n{'method':24s} {'AUC':>6s} {'95% CI':>16s}  per-fold mean +- sd")
  for m, r in r1["results"].items():
    print(f"{m:24s} {r['auc']:6.3f} {fmt_ci(r['ci95']):>16s}  {r['per_fold_mean']:.3f} +- "
          f"{r['per_fold_sd']:.3f}")
  for k, d in r1["paired_differences"].items():
    print(f"paired diff {k}: {d['diff']:+.3f} {fmt_ci(d['ci95'])}")
  result = {"data": args.data, "n_docs": n, "configs": {"embedding": repr(emb_cfg),
            "ask_llm": repr(llm_cfg), "perplexity": repr(ppl_cfg),
            "embedder": embedder.name, "scorer": scorer.model_name},
            "timings_s": timings, "part1_quality": r1}

  def write():
    with open(args.out, "w") as f:
      json.dump(result, f, indent=1, default=float)
  write()

  # Part 2.
  if not args.skip_speed:
    print(f"\n== 2. Cost: head scoring vs Ask-LLM on the first {args.speed_docs} documents ==",
          flush=True)
    head = fit_head(emb, edu, r1["best_grid_l2"], "edu_score")
    r2 = part2(args, embedder, scorer, head, texts, p_yes)
    result["part2_cost"] = r2
    d = r2["docs_per_s_median"]
    fp = r2["flops_projection"]
    print(f"head (tokenise + embed + predict): {d['head']:.1f} docs/s; Ask-LLM (tokenise + "
          f"score): {d['ask_llm']:.2f} docs/s; head is {r2['speedup_head_over_ask_llm_median']:.1f}x "
          f"faster (per round: {', '.join(f'{x:.1f}' for x in r2['speedup_per_round'])})")
    print(f"mean tokens: Ask-LLM prompt {r2['mean_tokens']['ask_llm_prompt']:.1f} (max "
          f"{llm_cfg.max_tokens}), embedder {r2['mean_tokens']['embedder']:.1f} (max "
          f"{emb_cfg.max_tokens}); params counted: embedder {r2['params_counted']['embedder'] / 1e6:.1f}M, "
          f"bundled scorer {r2['params_counted']['bundled_scorer'] / 1e6:.1f}M")
    print(f"FLOPs projection (2 x params x tokens): 3B scorer {fp['scorer_flops_per_doc']:.3g} "
          f"FLOPs/doc vs 22M embedder {fp['embedder_flops_per_doc']:.3g}: "
          f"{fp['ratio_3b_scorer_over_embedder']:.0f}x (the same formula for the bundled 135M "
          f"scorer gives {fp['same_formula_bundled_135m_over_embedder']:.1f}x, measured "
          f"{r2['speedup_head_over_ask_llm_median']:.1f}x)")
    if r2["max_abs_diff_p_yes_timed_vs_cache"] is not None:
      print(f"max |P(yes) timed run - cache| = {r2['max_abs_diff_p_yes_timed_vs_cache']:.2e}")
    write()

  # Part 3.
  print("\n== 3. Teacher fraction: head fitted on the teacher's documents vs the teacher on "
        "the rest ==", flush=True)
  if np.isnan(p_yes).any():
    print("skipped: needs Ask-LLM scores of all documents (run without --negatives)")
  else:
    l2_default = r1["best_grid_l2"]
    result["part3_teacher_fraction"] = part3(args, ids, emb, edu, p_yes, grid, l2_default)
    r3 = result["part3_teacher_fraction"]
    s = next((r for r in r3["ask_llm_p_yes"] if np.isclose(r["fraction"], PRIMARY_FRACTION)),
             r3["ask_llm_p_yes"][0])["seed0"]
    print(f"headline (Ask-LLM teacher, f={PRIMARY_FRACTION:g}, seed 0, l2 {l2_default:g}): Spearman "
          f"{s['spearman_fixed_l2']:.3f} {fmt_ci(s['spearman_fixed_l2_ci95'])} on "
          f"{s['unseen']} unseen docs ({s['seen']} teacher docs)" +
          (f"; pipeline-exact fit on {s['pipeline_exact_fit_docs']} docs: "
           f"{s['pipeline_exact_spearman_unseen']:.3f}" if "pipeline_exact_fit_docs" in s else ""))
    print(f"context: Spearman(Ask-LLM P(yes), edu_score) over all docs = "
          f"{r3['context']['spearman_ask_llm_vs_edu_all_docs']:.3f}")
  result["total_s"] = time.perf_counter() - t_start
  write()
  print(f"\nwrote {args.out} ({result['total_s'] / 60:.1f} min)")


if __name__ == "__main__":
  main()
