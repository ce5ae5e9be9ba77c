"""Scoring throughput of the Ask-LLM scorer (tokens/s) on CPU, against two references.

  (a) ours:     AskLLMScorer.score_ids as the pipeline uses it: prompts sorted by length,
                batched by a padded-token budget (--batch_tokens, at most --max_batch docs),
                left padding with position_ids and logits_to_keep=1.
  (b) generate: model.generate(max_new_tokens=1, output_logits=True) on batches of
                --gen_batch prompts in input order, left-padded by the tokenizer (the same
                prompt ids), then the softmax of the first step's logits.
  (c) plain:    a forward pass (logits_to_keep=1) over random token ids in equal-length
                batches, no padding: what this machine can do with this model. One entry
                per --plain_shapes shape (BATCHxLENGTH).

Tokens/s counts prompt tokens actually scored (sum of prompt lengths after truncation to
--max_tokens), not padding. Each measurement is repeated --repeats times, interleaved
(the order rotates every round); the median is reported. Also checks that (a) and (b)
give the same P(yes) for every document.

Run from the repo root (takes several minutes):
  .venv/bin/python -m benchmarks.scorer_speed --data PATH
  .venv/bin/python -m benchmarks.scorer_speed --data PATH --n 40 --repeats 2
"""
import argparse
import json
import os
import statistics

import numpy as np
import torch
import transformers

from benchmarks.harness import (add_data_argument, interleaved_order, run_interleaved,
                                stopwatch)
from models.ask_llm import AskLLMConfig, load_scorer


def token_budget_batches(prompts, budget, max_size):
  """Prompts sorted by length, grouped so that n * longest <= budget (as SortAndBatch)."""
  order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
  batches, batch = [], []
  for i in order:
    if batch and (len(batch) >= max_size or (len(batch) + 1) * len(prompts[i]) > budget):
      batches.append(batch)
      batch = []
    batch.append(i)
  return batches + [batch] if batch else batches


def run_ours(scorer, prompts, batches):
  p_yes = np.zeros(len(prompts))
  for idx in batches:
    p_yes[idx] = scorer.score_ids([prompts[i] for i in idx])[:, 0]
  return p_yes


def run_generate(scorer, prompts, batch_size):
  tok, model, p_yes = scorer.tokenizer, scorer.model, []
  for start in range(0, len(prompts), batch_size):
    enc = tok.pad({"input_ids": prompts[start:start + batch_size]}, padding=True,
                  padding_side="left", return_tensors="pt")
    out = model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                         max_new_tokens=1, output_logits=True, return_dict_in_generate=True,
                         do_sample=False, pad_token_id=scorer.pad_id)
    probs = torch.softmax(out.logits[0].float(), dim=-1)
    p_yes.extend(probs[:, scorer.yes_ids].sum(-1).tolist())
  return np.array(p_yes)


def run_plain(model, batch, length, n_batches):
  gen = torch.Generator().manual_seed(0)
  for _ in range(n_batches):
    ids = torch.randint(0, model.config.vocab_size, (batch, length), generator=gen)
    model(input_ids=ids, logits_to_keep=1)


def build_parser():
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  add_data_argument(ap, "--data")
  ap.add_argument("--n", type=int, default=200, help="the first N documents")
  ap.add_argument("--max_tokens", type=int, default=512)
  ap.add_argument("--batch_tokens", type=int, default=8192, help="(a) padded tokens per batch")
  ap.add_argument("--max_batch", type=int, default=64, help="(a) documents per batch")
  ap.add_argument("--gen_batch", type=int, default=8, help="(b) documents per batch")
  ap.add_argument("--plain_shapes", default="8x256,16x512", help="(c) BATCHxLENGTH,...")
  ap.add_argument("--plain_tokens", type=int, default=16384, help="(c) tokens per shape")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--out", default="/tmp/scorer_speed.json")
  return ap


def main():
  args = build_parser().parse_args()
  transformers.logging.set_verbosity_error()

  with open(args.data) as f:
    texts = [json.loads(line)["text"] for _, line in zip(range(args.n), f)]
  scorer = load_scorer(AskLLMConfig(device="cpu", max_tokens=args.max_tokens))
  model = scorer.model
  prompts = [scorer.encode(t) for t in texts]
  n_tok = sum(map(len, prompts))
  batches = token_budget_batches(prompts, args.batch_tokens, args.max_batch)
  padded = sum(len(b) * max(len(prompts[i]) for i in b) for b in batches)
  print(f"{len(prompts)} documents, {n_tok} prompt tokens, (a) {len(batches)} batches "
        f"({padded / n_tok - 1:.1%} padding), torch threads {torch.get_num_threads()}",
        flush=True)

  jobs = {"a_ours": (n_tok, lambda: run_ours(scorer, prompts, batches)),
          "b_generate": (n_tok, lambda: run_generate(scorer, prompts, args.gen_batch))}
  for shape in args.plain_shapes.split(","):
    b, l = map(int, shape.split("x"))
    n_b = max(1, args.plain_tokens // (b * l))
    jobs[f"c_plain_{shape}"] = (n_b * b * l, lambda b=b, l=l, n_b=n_b: run_plain(model, b, l, n_b))

  def progress(r, name, run):
    secs = run[0]
    print(f"round {r + 1} {name:18s} {jobs[name][0] / secs:7.0f} tok/s "
          f"({secs:.1f} s, load avg {os.getloadavg()[0]:.1f})", flush=True)

  with torch.inference_mode():
    run_ours(scorer, prompts[:8], [list(range(8))])  # warm-up
    run_plain(model, 2, 64, 1)
    # Interleaved: round r starts r variants further along, so load spikes hit all.
    runs = run_interleaved({name: lambda fn=fn: stopwatch(fn) for name, (_, fn) in jobs.items()},
                           interleaved_order(list(jobs), args.repeats), after=progress)
  times = {k: [secs for secs, _ in v] for k, v in runs.items()}
  results = {k: v[-1][1] for k, v in runs.items() if v and v[-1][1] is not None}

  diff = float(np.abs(results["a_ours"] - results["b_generate"]).max())
  tps = {k: jobs[k][0] / statistics.median(v) for k, v in times.items()}
  ratios = {"a/b": tps["a_ours"] / tps["b_generate"]}
  ratios.update({f"a/{k}": tps["a_ours"] / tps[k] for k in tps if k.startswith("c_")})
  # Per-round ratios (same round, so both runs saw similar load).
  per_round = [tb / ta for ta, tb in zip(times["a_ours"], times["b_generate"])]
  print(f"\nmax |P(yes) ours - P(yes) generate| over {len(prompts)} documents: {diff:.2e}")
  print(f"{'variant':18s} {'tokens/s (median)':>18s}  per-round tokens/s")
  for k, v in times.items():
    print(f"{k:18s} {tps[k]:18.0f}  " + ", ".join(f"{jobs[k][0] / t:.0f}" for t in v))
  for k, v in ratios.items():
    print(f"ratio {k}: {v:.2f}")
  print("ratio a/b per round: " + ", ".join(f"{x:.2f}" for x in per_round))
  out = {"n_docs": len(prompts), "prompt_tokens": n_tok, "padded_tokens_a": padded,
         "batches_a": len(batches), "max_tokens": args.max_tokens, "batch_tokens": args.batch_tokens,
         "max_batch": args.max_batch, "gen_batch": args.gen_batch, "repeats": args.repeats,
         "torch_threads": torch.get_num_threads(), "seconds": times, "tokens": {k: j[0] for k, j in jobs.items()},
         "tokens_per_s_median": tps, "ratios": ratios, "ratio_a_b_per_round": per_round,
         "max_abs_diff_p_yes_a_b": diff}
  with open(args.out, "w") as f:
    json.dump(out, f, indent=1)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
