"""The density sampler as users run it: the whole job (FnApiRunner, bundled MiniLM, default
sketch options) on the near-duplicate and imbalanced-topic corpora of
benchmarks/density_selection.py, --sampler=density against --sampler=random in the same
run.

1. Near-duplicates: 800 WebOrganizer documents plus 30 near-copies (8% of the words
   dropped) of 20 of them, 1,400 documents; keep 20%. Share of near-copies among the
   selected documents, for --seed 0..S-1 (the seed picks the hashes and the draw).
2. Coverage: imbalanced corpora (topic sizes 100 / rank, 23 topics, 373 documents; which
   topic gets which rank is shuffled per repetition); keep 20%; normalised entropy of the
   selected documents' topics, H / ln(23).

The job's inputs are written to a temporary directory as JSONL; its outputs are read back
from scores/ (the `selected` flag). Nothing else is used from the job.

  .venv/bin/python -m benchmarks.density_pipeline --weborganizer PATH [--seeds 5] [--reps 5]
      [-- JOB OPTIONS]
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
from benchmarks.density_selection import entropy, near_copy
from benchmarks.harness import WEBORGANIZER, add_data_argument, read_jsonl


def write_corpus(path, docs):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "docs.jsonl"), "w") as f:
    for doc_id, text in docs:
      f.write(json.dumps({"id": doc_id, "text": text}) + "\n")


def run_job(in_dir, out_dir, sampler, seed, extra):
  argv = [f"--input={in_dir}/*.jsonl", f"--output={out_dir}", "--id_field=id",
          "--keep_fraction=0.2", f"--sampler={sampler}", f"--seed={seed}", *extra]
  t = time.perf_counter()
  metrics = select_data.run(argv)
  elapsed = time.perf_counter() - t
  selected = []
  for p in glob.glob(os.path.join(out_dir, "scores", "*.jsonl")):
    with open(p) as f:
      selected += [r["id"] for r in map(json.loads, f) if r["selected"]]
  assert len(selected) == metrics["counts"]["selected"]
  return selected, elapsed


def build_parser():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_data_argument(ap, "--weborganizer", WEBORGANIZER)
  ap.add_argument("--seeds", type=int, default=5)
  ap.add_argument("--reps", type=int, default=5)
  ap.add_argument("job_options", nargs="*", help="extra options for both samplers' jobs")
  return ap


def main():
  args = build_parser().parse_args()
  logging.basicConfig(level=logging.WARNING)
  records = read_jsonl(args.weborganizer)
  tmp = tempfile.mkdtemp(prefix="density_pipeline_")

  rng = np.random.default_rng(0)  # the same corpus as density_selection.py
  base = [records[i] for i in rng.permutation(len(records))[:800]]
  copies = [(f"{r['id']}#copy{j}", near_copy(r["text"], rng)) for r in base[:20]
            for j in range(30)]
  dup_docs = [(r["id"], r["text"]) for r in base] + copies
  write_corpus(os.path.join(tmp, "dup_in"), dup_docs)
  print(f"near-duplicate corpus: {len(dup_docs)} documents, {len(copies)} near-copies; "
        f"job options: {' '.join(args.job_options) or '(defaults)'}", flush=True)
  print(f"{'seed':>4} {'density':>8} {'random':>7} {'density s':>9} {'random s':>8}", flush=True)
  shares = collections.defaultdict(list)
  for seed in range(args.seeds):
    row, secs = {}, {}
    for sampler in ("density", "random"):
      sel, secs[sampler] = run_job(os.path.join(tmp, "dup_in"),
                                   os.path.join(tmp, f"dup_{sampler}_{seed}"), sampler, seed,
                                   args.job_options)
      row[sampler] = float(np.mean(["#copy" in i for i in sel]))
      shares[sampler].append(row[sampler])
    print(f"{seed:>4} {row['density']:>8.3f} {row['random']:>7.3f} {secs['density']:>9.1f} "
          f"{secs['random']:>8.1f}", flush=True)
  print(f"mean {np.mean(shares['density']):>8.3f} {np.mean(shares['random']):>7.3f}  "
        "(near-copy share of the selected; goal <= 0.20 for density)\n", flush=True)

  topics = sorted({r["topic_id"] for r in records})
  by_topic = {t: [i for i, r in enumerate(records) if r["topic_id"] == t] for t in topics}
  print(f"coverage: {len(topics)} topics, sizes 100/rank; normalised topic entropy of the "
        "selected", flush=True)
  print(f"{'rep':>4} {'docs':>5} {'density':>8} {'random':>7} {'corpus':>7}", flush=True)
  ent = collections.defaultdict(list)
  for rep in range(args.reps):
    r_rng = np.random.default_rng(100 + rep)
    order = r_rng.permutation(topics)
    idx = np.concatenate([r_rng.choice(by_topic[t], int(round(100 / (rank + 1))), replace=False)
                          for rank, t in enumerate(order)])
    topic_of = {records[i]["id"]: records[i]["topic_id"] for i in idx}
    in_dir = os.path.join(tmp, f"cov_in_{rep}")
    write_corpus(in_dir, [(records[i]["id"], records[i]["text"]) for i in idx])
    row = {"corpus": entropy(list(topic_of.values()), len(topics))}
    for sampler in ("density", "random"):
      sel, _ = run_job(in_dir, os.path.join(tmp, f"cov_{sampler}_{rep}"), sampler, rep,
                       args.job_options)
      row[sampler] = entropy([topic_of[i] for i in sel], len(topics))
    for k, v in row.items():
      ent[k].append(v)
    print(f"{rep:>4} {len(idx):>5} {row['density']:>8.3f} {row['random']:>7.3f} "
          f"{row['corpus']:>7.3f}", flush=True)
  print(f"mean {'':>5} {np.mean(ent['density']):>8.3f} {np.mean(ent['random']):>7.3f} "
        f"{np.mean(ent['corpus']):>7.3f}  (higher = more even topics)", flush=True)
  print(json.dumps({"near_copy_share": {k: float(np.mean(v)) for k, v in shares.items()},
                    "topic_entropy": {k: float(np.mean(v)) for k, v in ent.items()},
                    "seeds": args.seeds, "reps": args.reps, "job_options": args.job_options}))


if __name__ == "__main__":
  main()
