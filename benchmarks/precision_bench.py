"""fp32 against bf16 for each model of the job, and 1 against 2 local worker processes.

1. models: the bundled judge (Ask-LLM P(yes), the job's default settings), perplexity
   (mean NLL) and the embedder (MiniLM at the bundled head's 256 tokens, then the head)
   score the first --docs dev pages (--embed_docs for the embedder) in fp32 and in bf16 (models/precision.py: CPU
   autocast; the same loaded weights), batch by batch as the job batches them (length-
   sorted, token budget), the two precisions alternating order batch after batch (ABBA)
   so that a busy spell of the shared machine falls on both. Reported per model:
   documents/s of each and their ratio, the achieved TFLOP/s (2 x non-embedding
   parameters x real tokens) against the CPU's peak, and the scores' differences from
   fp32 (max |diff|, Spearman, for embeddings the smallest cosine).
   Quality: ROC AUC of edu_score >= 3 against <= 1 (the project's definition) for the
   judge's P(yes), -perplexity and the bundled head on the embeddings, with 95% stratified
   bootstrap intervals and the paired interval of AUC(bf16) - AUC(fp32). The pages are
   split in halves by a hash of their id: half A decides (bf16 is auto's choice for a
   model when its AUC loss on A is within half the width of fp32's interval), half B
   reports. (The bundled head was fitted on this file: its AUC is in-sample; the
   difference between precisions is what counts here.)
2. invariance: each model's largest |score alone - score in a batch| over --inv_docs
   pages of mixed lengths, per precision (the batch-invariance promise, docs/design.md).
3. jobs: the whole job (`python -m beam_pipelines.select_data`, --cache=none) with
   --sampler=quality_head and --sampler=ask_llm on the first --job_docs (--llm_job_docs)
   pages:
   --precision=fp32 against auto, and auto with 1 against 2 worker processes
   (--direct_num_workers=2 --direct_running_mode=multi_processing), interleaved ABAB.

    .venv/bin/python -m benchmarks.precision_bench --data PATH [--parts models,invariance,jobs]
        [--models embedder,judge,perplexity] [--docs 200] [--ppl_docs N]
        [--embed_docs 1000] [--inv_docs 24] [--job_docs 1000]
        [--llm_job_docs 100] [--rounds 1] [--out FILE.json]
"""
import argparse
import functools
import hashlib
import json
import os
import statistics
import tempfile
import time

import numpy as np

from benchmarks.harness import (abba_order, add_data_argument, auc, bootstrap_aucs, ci95,
                                read_jsonl, ratios, run_interleaved, run_select_data,
                                stratified_resamples)

BOOT = 1000


def half_of(doc_id: str) -> str:
  return "A" if hashlib.sha256(doc_id.encode()).digest()[0] % 2 == 0 else "B"


@functools.lru_cache(maxsize=1)
def load_models(docs_tokens: int):
  """(judge, perplexity scorer, embedder, head) as the job builds them by default."""
  from beam_pipelines import config as cfg
  from beam_pipelines.options import parse_args
  from models import ask_llm, embeddings, perplexity
  from transforms import quality_head
  args, _ = parse_args(["--input=unused", "--output=unused", "--device=cpu",
                        "--precision=fp32"])
  head = quality_head.load_head("bundled")
  args.embedding_max_tokens = head.embedding_max_tokens or docs_tokens
  judge = ask_llm.load_scorer(cfg.ask_llm_config(args))
  # The same causal LM (loading the GGUF twice would double the wait and the memory).
  ppl = perplexity.PerplexityScorer(judge.model, judge.tokenizer,
                                    cfg.perplexity_config(args), "cpu", judge.model_name)
  emb = embeddings.load_embedder(cfg.embedding_config(args))
  return judge, ppl, emb, head


def with_precision(model, precision: str):
  """A second view of a loaded model that runs in `precision` (CPU: same weights)."""
  import copy
  other = copy.copy(model)
  other.precision = precision
  return other


def non_embedding_params(model) -> int:
  skip = {id(p) for m in model.modules() if type(m).__name__ == "Embedding"
          for p in m.parameters()}
  return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def run_model(name, model, texts, run, batches, tokens_of, lm_head_tokens=False):
  """Scores texts in fp32 and bf16, ABBA per batch; returns rows, times and tokens."""
  views = {"fp32": with_precision(model, "fp32"), "bf16": with_precision(model, "bf16")}
  rows = {p: [None] * len(texts) for p in views}
  secs = {p: 0.0 for p in views}
  tokens = 0
  for b, batch in enumerate(batches):
    order = ("fp32", "bf16") if b % 2 == 0 else ("bf16", "fp32")
    for p in order:
      start = time.perf_counter()
      out = run(views[p], [texts[i] for i in batch])
      secs[p] += time.perf_counter() - start
      for i, row in zip(batch, out):
        rows[p][i] = row
    tokens += sum(tokens_of(texts[i]) for i in batch)
  params = non_embedding_params(model.model)
  flops = 2.0 * params * tokens
  if lm_head_tokens:  # perplexity: the output layer at every position
    flops += 2.0 * model.model.get_output_embeddings().weight.numel() * tokens
  print(f"{name}: fp32 {len(texts) / secs['fp32']:.1f} docs/s, bf16 "
        f"{len(texts) / secs['bf16']:.1f} docs/s", flush=True)
  return ({p: np.asarray(r, np.float64) for p, r in rows.items()}, secs, flops)


def speed_block(n, secs, flops, peak):
  out = {}
  for p in ("fp32", "bf16"):
    tflops = flops / secs[p] / 1e12
    out[p] = {"docs_per_s": round(n / secs[p], 2), "tflops": round(tflops, 4),
              "share_of_peak": round(tflops / peak[p], 3) if peak else None}
  out["bf16_speedup"] = round(secs["fp32"] / secs["bf16"], 2)
  return out


def quality_block(score32, score16, edu, halves):
  """AUC of edu >= 3 vs <= 1, per half, fp32 and bf16, with intervals and paired diff."""
  out = {}
  for half in ("A", "B"):
    keep = (halves == half) & ((edu >= 3) | (edu <= 1))
    labels = edu[keep] >= 3
    res = stratified_resamples(labels, BOOT, seed=0)
    b32, b16 = bootstrap_aucs(score32[keep], res), bootstrap_aucs(score16[keep], res)
    out[half] = {"docs": int(keep.sum()), "positives": int(labels.sum()),
                 "fp32": round(auc(score32[keep], labels), 4),
                 "fp32_ci95": [round(x, 4) for x in ci95(b32)],
                 "bf16": round(auc(score16[keep], labels), 4),
                 "bf16_ci95": [round(x, 4) for x in ci95(b16)],
                 "diff_ci95": [round(x, 4) for x in ci95(b16 - b32)]}
  a = out["A"]
  half_width = (a["fp32_ci95"][1] - a["fp32_ci95"][0]) / 2
  out["bf16_within_interval_on_A"] = bool(a["fp32"] - a["bf16"] <= half_width)
  return out


def diff_block(x32, x16):
  from scipy.stats import spearmanr
  d = np.abs(x32 - x16)
  return {"max_abs_diff": float(d.max()), "mean_abs_diff": float(d.mean()),
          "spearman": round(float(spearmanr(x32, x16).statistic), 5)}


def part_models(args, docs):
  from models import precision
  from benchmarks.quality_head_bench import estimated_batches
  judge, ppl, emb, head = load_models(256)
  peak = precision.peak_tflops("cpu")
  result = {"peak_tflops": peak, "models": {}}

  def judge_tokens(t):
    return len(judge.encode(t))

  def ppl_tokens(t):
    return len(ppl.encode(t))

  def emb_tokens(t):
    return len(emb.tokenizer(t[:256 * 32], truncation=True, max_length=256)["input_ids"])

  def add(name, model, run, budget, size, frame, tok, transform, lm_head=False):
    if name not in args.models.split(","):
      return
    n = {"embedder": args.embed_docs, "perplexity": args.ppl_docs or args.docs}.get(
        name, args.docs)
    texts = [d["text"] for d in docs[:n]]
    edu = np.array([d["edu_score"] for d in docs[:n]], np.float64)
    halves = np.array([half_of(str(d["id"])) for d in docs[:n]])
    batches = estimated_batches(texts, model.config.max_tokens, frame, budget, size)
    rows, secs, flops = run_model(name, model, texts, run, batches, tok, lm_head)
    block = {"docs": n, "speed": speed_block(len(texts), secs, flops, peak)}
    s32, s16 = transform(rows["fp32"]), transform(rows["bf16"])
    block["scores_vs_fp32"] = diff_block(s32, s16)
    block["quality"] = quality_block(s32, s16, edu, halves)
    result["models"][name] = (block, rows)
    print(json.dumps({name: block}), flush=True)

  add("embedder", emb, lambda m, t: m.embed(t), 8192, 256, 2, emb_tokens,
      lambda r: head.predict(r.astype(np.float32)))
  if "embedder" in result["models"]:
    block, rows = result["models"]["embedder"]
    cos = np.sum(rows["fp32"] * rows["bf16"], axis=1)
    block["embedding_min_cosine"] = float(cos.min())
  from models.ask_llm import scores_from_probs
  add("judge", judge, lambda m, t: m.score(t), 8192, 64, 100, judge_tokens,
      lambda r: np.array([scores_from_probs(a, b, judge.config.score)["ask_llm_score"]
                          for a, b in r]))
  add("perplexity", ppl, lambda m, t: m.score(t), 8192, 64, 2, ppl_tokens,
      lambda r: -r, lm_head=True)
  for name in list(result["models"]):
    result["models"][name] = result["models"][name][0]
  return result


def part_invariance(args, docs):
  """Largest |alone - in one batch| per model and precision, on mixed lengths."""
  judge, ppl, emb, _ = load_models(256)
  picked = sorted(docs[:args.inv_docs * 4], key=lambda d: len(d["text"]))
  step = max(1, len(picked) // args.inv_docs)
  texts = [d["text"] for d in picked[::step]][:args.inv_docs]
  out = {}
  for name, model, run in (("judge", judge, lambda m, t: m.score(t)[:, 0]),
                           ("perplexity", ppl, lambda m, t: m.score(t)),
                           ("embedder", emb, lambda m, t: m.embed(t))):
    out[name] = {}
    for p in ("fp32", "bf16"):
      view = with_precision(model, p)
      together = np.asarray(run(view, texts), np.float64)
      alone = np.concatenate([np.asarray(run(view, [t]), np.float64) for t in texts])
      out[name][p] = float(np.abs(together.reshape(alone.shape) - alone).max())
    print(f"invariance {name}: {out[name]}", flush=True)
  return {"docs": len(texts), "max_abs_alone_vs_batch": out}


def part_jobs(args, docs):
  tmp = tempfile.mkdtemp(prefix="precision_bench_")
  two = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]
  out = {"cores": os.cpu_count()}
  for sampler in args.samplers.split(","):
    n = args.job_docs if sampler == "quality_head" else args.llm_job_docs
    corpus = os.path.join(tmp, f"corpus{n}.jsonl")
    with open(corpus, "w", encoding="utf-8") as f:
      for d in docs[:n]:
        f.write(json.dumps({"id": d["id"], "text": d["text"]}) + "\n")

    def job(extra, tag):
      argv = [f"--input={corpus}", f"--output={os.path.join(tmp, sampler + tag)}",
              "--id_field=id", f"--sampler={sampler}", "--keep_fraction=0.2",
              "--cache=none", "--report=false", "--overwrite", "--device=cpu", *extra]
      return lambda: run_select_data(argv, f"{sampler} {tag}")
    runs = {"fp32": job(["--precision=fp32"], "fp32"), "auto": job([], "auto"),
            "auto_2workers": job(two, "auto2")}
    runs = {k: v for k, v in runs.items() if k in args.variants.split(",")}
    next(iter(runs.values()))()  # untimed: the first run reads every library from disk
    times = run_interleaved(runs, abba_order(list(runs), args.rounds),
                            after=lambda r, n, s: print(f"{sampler} {n}: {s:.1f} s",
                                                        flush=True))
    out[sampler] = {"docs": n,
                    "wall_s": {k: [round(x, 1) for x in v] for k, v in times.items()}}
    for name, (a, b) in (("fp32_over_auto", ("fp32", "auto")),
                         ("one_over_two_workers", ("auto", "auto_2workers"))):
      if a in times and b in times:
        out[sampler][name] = round(statistics.median(ratios(times[a], times[b])), 3)
  return out


def build_parser():
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  add_data_argument(ap, "--data")
  ap.add_argument("--parts", default="models,invariance,jobs")
  ap.add_argument("--docs", type=int, default=200, help="pages for the judge, perplexity")
  ap.add_argument("--ppl_docs", type=int, default=None, help="pages for perplexity "
                  "(default --docs: it runs at a third of the judge's pages/s)")
  ap.add_argument("--embed_docs", type=int, default=1000, help="pages for the embedder")
  ap.add_argument("--models", default="embedder,judge,perplexity")
  ap.add_argument("--inv_docs", type=int, default=24)
  ap.add_argument("--job_docs", type=int, default=1000, help="quality_head job pages")
  ap.add_argument("--llm_job_docs", type=int, default=100, help="ask_llm job pages")
  ap.add_argument("--samplers", default="quality_head,ask_llm")
  ap.add_argument("--variants", default="fp32,auto,auto_2workers")
  ap.add_argument("--rounds", type=int, default=1, help="ABBA pairs of job runs")
  ap.add_argument("--out", default=None)
  return ap


def main():
  args = build_parser().parse_args()
  import torch
  docs = read_jsonl(args.data)
  result = {"torch": torch.__version__, "threads": torch.get_num_threads()}
  parts = {"models": part_models, "invariance": part_invariance, "jobs": part_jobs}
  for part in args.parts.split(","):
    result[part] = parts[part](args, docs)
    if args.out:
      with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
