"""How well does the Ask-LLM score separate educational from non-educational documents?

Measures the ROC AUC of several Ask-LLM score variants for FineWeb-Edu annotated documents:
positives have edu_score >= 3 (all of them), negatives edu_score <= 1 (a fixed-seed sample).

One forward pass per (prompt wording, chat template on/off) gives the next-token
distribution at the answer position; from it several scores are computed:
  p_yes         P(yes) over {yes, Yes} (with/without leading space): the pipeline's score
  p_yes_lower   P(yes) over lowercase {yes} only
  normalized    P(yes) / (P(yes) + P(no))   (log P(yes) - log P(no) is a monotone
                transform of it, so it has the same AUC and is not listed)
  norm_lower    the same with lowercase yes/no only
Intervals are 95% stratified bootstrap percentiles; `diff` is the paired bootstrap
interval of AUC(variant) - AUC(paper/chat/p_yes) on the same resamples, which is much
tighter than comparing the separate intervals.

Run from the repo root (a few minutes per pass on 2 CPU cores):
  .venv/bin/python -m benchmarks.scorer_quality --data PATH
  .venv/bin/python -m benchmarks.scorer_quality --data PATH --passes paper:chat,short:chat \
      --negatives 80
"""
import argparse
import hashlib
import json
import os
import time

import numpy as np
import torch

from benchmarks.harness import (add_data_argument, auc_pos_neg, bootstrap_aucs, ci95,
                                stratified_resamples)
from models.ask_llm import AskLLMConfig, AskLLMScorer, load_scorer, single_token_ids

ALL_PASSES = ("paper:chat,paper:nochat,educational:chat,short:chat,"
              "educational:nochat,short:nochat")
BASELINE = "paper/chat/p_yes"


def load_data(path, n_neg, seed):
  docs = [json.loads(line) for line in open(path)]
  pos = [d for d in docs if d["edu_score"] >= 3]
  neg = [d for d in docs if d["edu_score"] <= 1]
  rng = np.random.default_rng(seed)
  neg = [neg[i] for i in sorted(rng.choice(len(neg), min(n_neg, len(neg)), replace=False))]
  return pos + neg, np.array([1] * len(pos) + [0] * len(neg))


def batches(prompts, budget=8192, max_size=64):
  """Indices of prompts sorted by length, grouped so that n * longest <= budget."""
  order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
  batch = []
  for i in order:
    if batch and (len(batch) + 1 > max_size or (len(batch) + 1) * len(prompts[i]) > budget):
      yield batch
      batch = []
    batch.append(i)
  if batch:
    yield batch


def answer_logprobs(scorer, prompts, token_ids):
  """log P(token) at the answer position for each prompt, [N, len(token_ids)].

  The same forward pass as AskLLMScorer.score_ids (left padding, position_ids,
  logits_to_keep=1), keeping the probabilities of single tokens instead of their sums.
  """
  out = np.zeros((len(prompts), len(token_ids)))
  for idx in batches(prompts):
    width = max(len(prompts[i]) for i in idx)
    ids = torch.full((len(idx), width), scorer.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, i in enumerate(idx):
      ids[row, width - len(prompts[i]):] = torch.tensor(prompts[i])
      mask[row, width - len(prompts[i]):] = 1
    with torch.inference_mode():
      logits = scorer.model(input_ids=ids, attention_mask=mask,
                            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                            logits_to_keep=1).logits[:, -1, :]
      out[idx] = torch.log_softmax(logits.float(), -1)[:, token_ids].double().numpy()
  return out


def score_variants(logp, cols):
  """Score variants from the per-token log-probabilities (cols: name -> column indices)."""
  p = np.exp(logp)
  yes, no = p[:, cols["yes"]].sum(1), p[:, cols["no"]].sum(1)
  yes_l, no_l = p[:, cols["yes_lower"]].sum(1), p[:, cols["no_lower"]].sum(1)
  return {"p_yes": yes, "p_yes_lower": yes_l, "normalized": yes / (yes + no),
          "norm_lower": yes_l / (yes_l + no_l)}


def halves(ids, labels, seed):
  """0/1 per document: within each class, documents ordered by a hash of (seed, id) and
  dealt alternately, so both halves hold the same numbers of positives and negatives."""
  half = np.zeros(len(ids), int)
  for cls in (0, 1):
    idx = [i for i in range(len(ids)) if labels[i] == cls]
    idx.sort(key=lambda i: hashlib.blake2b(f"{seed}:{ids[i]}".encode(), digest_size=8).digest())
    half[idx[1::2]] = 1
  return half


def split_half(args, ids, labels, scores):
  """Honest AUC: the variant chosen on one half (best AUC there) reported on the other half,
  both ways, with stratified bootstrap intervals over the reporting half."""
  half = halves(ids, labels, args.seed)
  rng = np.random.default_rng(args.seed + 2)
  out = []
  for pick in (0, 1):
    a, b = half == pick, half != pick
    on_a = {k: auc_pos_neg(s[a & (labels == 1)], s[a & (labels == 0)])
            for k, s in scores.items()}
    best = max(on_a, key=lambda k: (on_a[k], k == BASELINE))
    s = scores[best]
    pos, neg = s[b & (labels == 1)], s[b & (labels == 0)]
    boot = [auc_pos_neg(rng.choice(pos, len(pos)), rng.choice(neg, len(neg)))
            for _ in range(args.bootstrap)]
    out.append({"chosen_on_half": pick, "variant": best, "auc_on_choosing_half": on_a[best],
                "reported_on_half": 1 - pick, "auc": auc_pos_neg(pos, neg),
                "ci95": ci95(boot),
                "positives": len(pos), "negatives": len(neg),
                "baseline_auc_on_reporting_half": auc_pos_neg(
                    scores[BASELINE][b & (labels == 1)], scores[BASELINE][b & (labels == 0)])
                if BASELINE in scores else None})
  return {"halves": out, "mean_auc": float(np.mean([o["auc"] for o in out]))}


def report(args, labels, scores, passes, groups, final, ids=None):
  """AUCs with bootstrap intervals; writes --out (after every pass) and the per-document
  scores next to it (.npz), prints the table at the end."""
  # Stratified bootstrap, the same resamples for every variant (paired differences).
  pos_i, neg_i = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
  boots = stratified_resamples(labels == 1, args.bootstrap, args.seed + 1)
  base_name = BASELINE if BASELINE in scores else next(iter(scores))
  boot = {k: bootstrap_aucs(s, boots) for k, s in scores.items()}
  results = []
  for k, s in scores.items():
    d = boot[k] - boot[base_name]
    diff = None if k == base_name else {"mean": d.mean(), "ci95": ci95(d),
                                        "frac_le_0": (d <= 0).mean()}
    results.append({"variant": k, "auc": auc_pos_neg(s[pos_i], s[neg_i]),
                    "ci95": ci95(boot[k]), "se": boot[k].std(),
                    "diff_vs_baseline": diff})
  results.sort(key=lambda r: -r["auc"])
  out = {"data": args.data, "positives": int(labels.sum()), "negatives": int((1 - labels).sum()),
         "max_tokens": args.max_tokens, "seed": args.seed, "bootstrap": args.bootstrap,
         "baseline": base_name, "yes_no_token_ids": groups, "passes": passes,
         "results": results, "best": results[0]["variant"], "complete": final}
  if ids is not None:
    out["split_half"] = split_half(args, ids, labels, scores)
    np.savez(os.path.splitext(args.out)[0] + ".npz", ids=np.array(ids), labels=labels,
             **{k.replace("/", "__"): v for k, v in scores.items()})
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1, default=float)
  if not final:
    return
  print(f"\n{'variant':32s} {'AUC':>6s} {'95% CI':>15s} {'SE':>6s}   diff vs {base_name} [95% CI]")
  for r in results:
    dv = r["diff_vs_baseline"]
    dtxt = f"{dv['mean']:+.3f} [{dv['ci95'][0]:+.3f}, {dv['ci95'][1]:+.3f}]" if dv else "(baseline)"
    print(f"{r['variant']:32s} {r['auc']:6.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] "
          f"{r['se']:6.3f}   {dtxt}")
  print(f"\nbest: {results[0]['variant']} (AUC {results[0]['auc']:.3f}; chosen and "
        "reported on the same documents, so optimistic)")
  if "split_half" in out:
    print("\nsplit-half (chosen on one half, reported on the other):")
    for h in out["split_half"]["halves"]:
      print(f"  chosen on half {h['chosen_on_half']}: {h['variant']} "
            f"(AUC {h['auc_on_choosing_half']:.3f} there) -> {h['auc']:.3f} "
            f"[{h['ci95'][0]:.3f}, {h['ci95'][1]:.3f}] on half {h['reported_on_half']} "
            f"({h['positives']} vs {h['negatives']}); default there "
            f"{h['baseline_auc_on_reporting_half']:.3f}")
    print(f"  mean: {out['split_half']['mean_auc']:.3f}")
  print(f"wrote {args.out}")


def build_parser():
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  add_data_argument(ap, "--data")
  ap.add_argument("--negatives", type=int, default=160, help="negatives sampled (seeded)")
  ap.add_argument("--max_tokens", type=int, default=512)
  ap.add_argument("--passes", default=ALL_PASSES,
                  help="comma-separated PROMPT:chat|nochat, run in this order")
  ap.add_argument("--budget_minutes", type=float, default=25,
                  help="after the first 4 passes, start no pass that would end after "
                  "this (0: no limit)")
  ap.add_argument("--bootstrap", type=int, default=2000)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--out", default="/tmp/scorer_quality.json")
  return ap


def main():
  args = build_parser().parse_args()

  docs, labels = load_data(args.data, args.negatives, args.seed)
  ids = [str(d["id"]) for d in docs]
  print(f"{labels.sum()} positives (edu>=3), {(1 - labels).sum()} negatives (edu<=1)",
        flush=True)
  base = load_scorer(AskLLMConfig(device="cpu", max_tokens=args.max_tokens))
  tok = base.tokenizer
  groups = {"yes": single_token_ids(tok, ["yes", "Yes"]), "no": single_token_ids(tok, ["no", "No"]),
            "yes_lower": single_token_ids(tok, ["yes"]), "no_lower": single_token_ids(tok, ["no"])}
  token_ids = sorted(set(sum(groups.values(), [])))
  cols = {k: [token_ids.index(t) for t in v] for k, v in groups.items()}

  scores, passes, t0 = {}, [], time.perf_counter()
  for spec in args.passes.split(","):
    spent = time.perf_counter() - t0
    if len(passes) >= 4 and args.budget_minutes and spent + passes[-1]["seconds"] > 60 * args.budget_minutes:
      print(f"skipping {spec} and later passes: over --budget_minutes", flush=True)
      break
    prompt, chat = spec.split(":")
    config = AskLLMConfig(device="cpu", max_tokens=args.max_tokens, prompt=prompt,
                          chat_template="on" if chat == "chat" else "off")
    scorer = AskLLMScorer(base.model, tok, config, "cpu")
    prompts = [scorer.encode(d["text"]) for d in docs]
    start = time.perf_counter()
    logp = answer_logprobs(scorer, prompts, token_ids)
    secs = time.perf_counter() - start
    n_tok = sum(map(len, prompts))
    if not passes:  # the shared forward pass must reproduce the pipeline's score
      check = scorer.score_ids(prompts[:4])[:, 0]
      mine = np.exp(logp[:4][:, cols["yes"]]).sum(1)
      assert np.allclose(check, mine, rtol=1e-4, atol=1e-6), (check, mine)
    for name, s in score_variants(logp, cols).items():
      scores[f"{prompt}/{chat}/{name}"] = s
    mass = np.exp(logp[:, cols["yes"] + cols["no"]]).sum(1)
    passes.append({"pass": spec, "tokens": n_tok, "seconds": round(secs, 1),
                   "tokens_per_s": round(n_tok / secs), "mean_p_yes_plus_p_no": mass.mean()})
    print(f"pass {spec}: {n_tok} tokens in {secs:.0f} s ({n_tok / secs:.0f} tok/s), "
          f"mean P(yes)+P(no) = {mass.mean():.3f}", flush=True)
    report(args, labels, scores, passes, groups, final=False, ids=ids)
  report(args, labels, scores, passes, groups, final=True, ids=ids)


if __name__ == "__main__":
  main()
