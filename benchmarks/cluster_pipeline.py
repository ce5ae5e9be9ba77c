"""The cluster samplers as users run them: the whole job (FnApiRunner, bundled models, the
default cluster options) against random and density in the same run.

1. coverage: imbalanced corpora cut from the held-out half B of the WebOrganizer dev file
   (documents with uniform_from_id(12345, id) >= 0.5; benchmarks/cluster_methods.py chose
   the defaults on half A), round(60 / rank) documents per topic, and a larger one from
   all documents, round(130 / rank^0.7); keep 20%. Normalised topic entropy of the
   selected documents, H / ln(T), and embedding coverage: the mean cosine distance from
   every corpus document to its nearest selected one. The ceiling is the balanced cap
   with the true topics as the clusters (computed here, not by the job).
2. near-duplicates: 800 WebOrganizer documents plus 30 near-copies (8% of the words
   dropped) of 20 of them (the corpus of benchmarks/density_pipeline.py); keep 20%;
   share of near-copies among the selected.
3. quality: the first --fineweb_docs pages of the FineWeb-Edu dev file; keep 20%; mean
   edu_score (0-4, Llama-3-70B) and share >= 3 of the selected documents, for ask_llm,
   ask_llm_balanced and ask_llm_density (and random). The Ask-LLM scores are computed
   once (the score cache, --cache) and reused by the other samplers.

The job's inputs are written as JSONL to a temporary directory and its outputs read back
from scores/ (the `selected` flag). Every job of a part shares one --cache directory, so
each document is embedded (and scored) once.

  .venv/bin/python -m benchmarks.cluster_pipeline --weborganizer PATH --fineweb PATH
      [--parts coverage,duplicates,quality] [--reps 10] [--large_reps 3] [--seeds 5]
      [--fineweb_docs 400] [-- JOB OPTIONS]
"""
import argparse
import collections
import glob
import json
import logging
import os
import tempfile
import time

import numpy as np

from beam_pipelines import select_data
from benchmarks.cluster_methods import SPLIT_SEED, build_corpus, embed_corpus, topic_pools
from benchmarks.density_selection import entropy, near_copy
from benchmarks.harness import (FINEWEB_EDU, WEBORGANIZER, add_data_argument,
                                read_jsonl)
from transforms.cluster_sampling import balanced_quotas
from transforms.sampling import uniform_from_id

COVERAGE_SAMPLERS = ("random", "density", "balanced", "balanced_far", "semdedup", "prototypes")


def write_corpus(path, docs):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "docs.jsonl"), "w") as f:
    for doc_id, text in docs:
      f.write(json.dumps({"id": doc_id, "text": text}) + "\n")


def run_job(in_dir, out_dir, sampler, seed, cache, extra):
  argv = [f"--input={in_dir}/*.jsonl", f"--output={out_dir}", "--id_field=id",
          "--keep_fraction=0.2", f"--sampler={sampler}", f"--seed={seed}",
          f"--cache={cache}", "--report=false", "--overwrite", *extra]
  t = time.perf_counter()
  metrics = select_data.run(argv)
  elapsed = time.perf_counter() - t
  rows = [json.loads(line) for p in glob.glob(os.path.join(out_dir, "scores", "*.jsonl"))
          for line in open(p)]
  selected = [r["id"] for r in rows if r["selected"]]
  assert len(selected) == metrics["counts"]["selected"]
  return selected, elapsed, metrics


def ceiling(ids, topics, k, seed):
  """The balanced cap with the true topics as clusters, filled by the same hash draw."""
  sizes = collections.Counter(topics)
  _, quotas = balanced_quotas({t: n for t, n in sizes.items()}, k, seed)
  taken = []
  for t, q in quotas.items():
    members = sorted((i for i, tt in zip(ids, topics) if tt == t),
                     key=lambda i: (uniform_from_id(seed, i), i))
    taken += members[:q]
  return taken


def coverage_distance(x_all, selected_rows):
  """Mean over the corpus of 1 - max cosine similarity to a selected document."""
  sims = x_all @ x_all[selected_rows].T
  return float(np.mean(1.0 - sims.max(axis=1)))


def coverage(args, records, x, tmp):
  half_b = [i for i, r in enumerate(records) if uniform_from_id(SPLIT_SEED, r["id"]) >= 0.5]
  n_topics = len({r["topic_id"] for r in records})
  results = {}
  for label, indices, scale, power, reps in (
      ("half B, 60/rank", half_b, 60, 1.0, args.reps),
      ("all, 130/rank^0.7", list(range(len(records))), 130, 0.7, args.large_reps)):
    pools = topic_pools(records, indices)
    cache = os.path.join(tmp, f"cache_{scale}")
    rows = collections.defaultdict(lambda: collections.defaultdict(list))
    print(f"\ncoverage ({label}): normalised topic entropy / coverage distance "
          "(lower is better)", flush=True)
    print(f"{'rep':>4} {'docs':>5} " + " ".join(f"{s:>17}" for s in
                                                 COVERAGE_SAMPLERS + ("ceiling",)), flush=True)
    for rep in range(reps):
      idx, _ = build_corpus(pools, scale, power, rep)
      ids = [records[i]["id"] for i in idx]
      topics = {records[i]["id"]: records[i]["topic_id"] for i in idx}
      in_dir = os.path.join(tmp, f"cov_{scale}_{rep}")
      write_corpus(in_dir, [(records[i]["id"], records[i]["text"]) for i in idx])
      xs = x[idx]
      local = {i: j for j, i in enumerate(ids)}
      k = int(round(0.2 * len(ids)))
      picks = {}
      for sampler in COVERAGE_SAMPLERS:
        picks[sampler], secs, _ = run_job(in_dir, os.path.join(tmp, f"out_{sampler}"),
                                          sampler, rep, cache, args.job_options)
        rows[sampler]["seconds"].append(secs)
      picks["ceiling"] = ceiling(ids, [topics[i] for i in ids], k, rep)
      cells = []
      for name, sel in picks.items():
        ent = entropy([topics[i] for i in sel], n_topics)
        dist = coverage_distance(xs, [local[i] for i in sel])
        rows[name]["entropy"].append(ent)
        rows[name]["distance"].append(dist)
        cells.append(f"{ent:>8.3f} / {dist:.3f}")
      print(f"{rep:>4} {len(ids):>5} " + " ".join(f"{c:>17}" for c in cells), flush=True)
    gain = {}
    for name in picks:
      d = np.array(rows[name]["entropy"]) - np.array(rows["random"]["entropy"])
      half = 1.96 * d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else float("nan")
      gain[name] = (float(d.mean()), float(half))
    print(f"mean {'':>5} " + " ".join(
        f"{np.mean(rows[n]['entropy']):>8.3f} / {np.mean(rows[n]['distance']):.3f}"
        for n in picks), flush=True)
    print("entropy minus random (95% interval over repetitions): " + ", ".join(
        f"{n} {g[0]:+.3f} ({g[0] - g[1]:+.3f} to {g[0] + g[1]:+.3f})"
        for n, g in gain.items() if n != "random"), flush=True)
    results[label] = {n: {"entropy": float(np.mean(v["entropy"])),
                          "distance": float(np.mean(v["distance"])),
                          "entropy_gain_vs_random": gain[n][0],
                          "entropy_gain_ci95": gain[n][1],
                          **({"job_seconds": float(np.mean(v["seconds"]))}
                             if v.get("seconds") else {})}
                      for n, v in rows.items()}
  return results


def duplicates(args, records, tmp):
  rng = np.random.default_rng(0)  # the corpus of density_selection.py / density_pipeline.py
  base = [records[i] for i in rng.permutation(len(records))[:800]]
  copies = [(f"{r['id']}#copy{j}", near_copy(r["text"], rng)) for r in base[:20]
            for j in range(30)]
  docs = [(r["id"], r["text"]) for r in base] + copies
  in_dir = os.path.join(tmp, "dup_in")
  write_corpus(in_dir, docs)
  samplers = COVERAGE_SAMPLERS
  print(f"\nnear-duplicates: {len(docs)} documents, {len(copies)} near-copies; share of "
        "near-copies among the selected", flush=True)
  print(f"{'seed':>4} " + " ".join(f"{s:>10}" for s in samplers), flush=True)
  shares = collections.defaultdict(list)
  dups = {}
  for seed in range(args.seeds):
    for sampler in samplers:
      sel, _, metrics = run_job(in_dir, os.path.join(tmp, f"dup_{sampler}"), sampler, seed,
                                os.path.join(tmp, "cache_dup"), args.job_options)
      shares[sampler].append(float(np.mean(["#copy" in i for i in sel])))
      if sampler == "semdedup":
        dups[seed] = metrics["counts"].get("semdedup:duplicates")
    print(f"{seed:>4} " + " ".join(f"{shares[s][-1]:>10.3f}" for s in samplers), flush=True)
  print(f"mean " + " ".join(f"{np.mean(shares[s]):>10.3f}" for s in samplers)
        + f"   (semdedup marked {sorted(set(dups.values()))} duplicates; {len(copies)} planted)",
        flush=True)
  return {s: float(np.mean(v)) for s, v in shares.items()}


def quality(args, tmp):
  rows = [json.loads(line) for line in open(args.fineweb)][:args.fineweb_docs]
  edu = {r["id"]: r["edu_score"] for r in rows}
  in_dir = os.path.join(tmp, "fw_in")
  write_corpus(in_dir, [(r["id"], r["text"]) for r in rows])
  cache = args.fineweb_cache or os.path.join(tmp, "cache_fw")
  print(f"\nquality: the first {len(rows)} FineWeb-Edu dev pages (mean edu_score "
        f"{np.mean(list(edu.values())):.3f}, share >= 3 "
        f"{np.mean([v >= 3 for v in edu.values()]):.3f}); keep 20%", flush=True)
  out = {}
  for sampler in ("ask_llm", "ask_llm_balanced", "ask_llm_density", "random"):
    sel, secs, _ = run_job(in_dir, os.path.join(tmp, f"fw_{sampler}"), sampler, 0, cache,
                           args.job_options)
    scores = [edu[i] for i in sel]
    out[sampler] = {"mean_edu_score": float(np.mean(scores)),
                    "share_3_plus": float(np.mean([s >= 3 for s in scores])),
                    "job_seconds": secs}
    print(f"{sampler:>18}: mean edu_score {out[sampler]['mean_edu_score']:.3f}, share >= 3 "
          f"{out[sampler]['share_3_plus']:.3f} ({secs:.0f} s)", flush=True)
  return out


def build_parser():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_data_argument(ap, "--weborganizer", WEBORGANIZER)
  add_data_argument(ap, "--fineweb", FINEWEB_EDU)
  ap.add_argument("--embeddings_cache", default="/tmp/weborg_minilm128.npz",
                  help="the WebOrganizer embeddings of benchmarks/cluster_methods.py (for "
                       "the coverage distance)")
  ap.add_argument("--parts", default="coverage,duplicates,quality")
  ap.add_argument("--reps", type=int, default=10)
  ap.add_argument("--large_reps", type=int, default=3)
  ap.add_argument("--seeds", type=int, default=5)
  ap.add_argument("--fineweb_docs", type=int, default=400)
  ap.add_argument("--fineweb_cache", default=None,
                  help="a --cache directory to keep the Ask-LLM scores in across runs")
  ap.add_argument("job_options", nargs="*", help="extra options for every job")
  return ap


def main():
  args = build_parser().parse_args()
  logging.basicConfig(level=logging.WARNING)
  tmp = tempfile.mkdtemp(prefix="cluster_pipeline_")
  parts = args.parts.split(",")
  out = {"job_options": args.job_options}
  if "coverage" in parts or "duplicates" in parts:
    records = read_jsonl(args.weborganizer)
  if "coverage" in parts:
    x = embed_corpus(records, args.embeddings_cache).astype(np.float32)
    out["coverage"] = coverage(args, records, x, tmp)
  if "duplicates" in parts:
    out["near_copy_share"] = duplicates(args, records, tmp)
  if "quality" in parts:
    out["quality"] = quality(args, tmp)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
