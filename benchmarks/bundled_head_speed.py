"""Whole-job speed of the bundled quality head against the bundled Ask-LLM judge.

Takes the first --docs documents of the FineWeb-Edu dev file, and runs the real job
(`python -m beam_pipelines.select_data`, local runner, --cache=none, --keep_fraction=0.2)
on them with --sampler=quality_head (no teacher option: the bundled head on the bundled
MiniLM embeddings) and with --sampler=ask_llm (the bundled SmolLM2-135M-Instruct judge),
alternating the order over --rounds rounds so that drift on a shared machine falls on
both. Wall time covers everything a user waits for: start-up, model loading, scoring,
selection and writing. (No quality figure here: the bundled head was fitted on this
file, so its selections on it are in-sample; scripts/fit_quality_head.py reports its
cross-validated fit.)

    .venv/bin/python -m benchmarks.bundled_head_speed --data PATH [--docs 200] [--rounds 2]

Prints one JSON object: each run's wall time, documents/s, and the median ratio.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile

from benchmarks.harness import (add_data_argument, interleaved_order, ratios,
                                run_interleaved, run_select_data)


def run_job(corpus: str, out: str, sampler: str) -> float:
  argv = [f"--input={corpus}", f"--output={out}", "--id_field=id", f"--sampler={sampler}",
          "--keep_fraction=0.2", "--cache=none", "--report=false", "--overwrite",
          "--device=cpu"]
  return run_select_data(argv, f"{sampler} run")


def build_parser():
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  add_data_argument(ap, "--data")
  ap.add_argument("--docs", type=int, default=200)
  ap.add_argument("--rounds", type=int, default=2)
  ap.add_argument("--workdir", default=None)
  return ap


def main():
  args = build_parser().parse_args()
  work = args.workdir or tempfile.mkdtemp(prefix="bundled_head_speed_")
  corpus = os.path.join(work, "docs.jsonl")
  ids = []
  with open(args.data) as src, open(corpus, "w") as dst:
    for n, line in enumerate(src):
      if n == args.docs:
        break
      d = json.loads(line)
      ids.append(d["id"])
      dst.write(json.dumps({"id": d["id"], "text": d["text"]}) + "\n")
  samplers = ("quality_head", "ask_llm")  # round r: in this order when r is even
  runs = run_interleaved(
      {s: lambda s=s: run_job(corpus, os.path.join(work, s), s) for s in samplers},
      interleaved_order(samplers, args.rounds),
      after=lambda r, sampler, secs: print(f"round {r}: {sampler} {secs:.1f} s",
                                           file=sys.stderr, flush=True))
  runs = {k: [round(secs, 1) for secs in v] for k, v in runs.items()}
  med = {k: statistics.median(v) for k, v in runs.items()}
  print(json.dumps({
      "documents": len(ids), "runs_s": runs,
      "docs_per_s": {k: round(len(ids) / v, 2) for k, v in med.items()},
      "speedup_head_vs_ask_llm": round(med["ask_llm"] / med["quality_head"], 1),
      "per_round_speedup": [round(x, 1) for x in ratios(runs["ask_llm"],
                                                       runs["quality_head"])],
  }, indent=1))


if __name__ == "__main__":
  main()
