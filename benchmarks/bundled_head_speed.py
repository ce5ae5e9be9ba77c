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

    .venv/bin/python benchmarks/bundled_head_speed.py [--data PATH] [--docs 200] [--rounds 2]

Prints one JSON object: each run's wall time, documents/s, and the median ratio.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile

from job_runner import run_select_data

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(REPO, "..", "shared", "data", "fineweb_edu_annotated_dev.jsonl")


def run_job(corpus: str, out: str, sampler: str) -> float:
  argv = [f"--input={corpus}", f"--output={out}", "--id_field=id", f"--sampler={sampler}",
          "--keep_fraction=0.2", "--cache=none", "--report=false", "--overwrite",
          "--device=cpu"]
  return run_select_data(argv, f"{sampler} run")


def main():
  ap = argparse.ArgumentParser(description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--data", default=DATA)
  ap.add_argument("--docs", type=int, default=200)
  ap.add_argument("--rounds", type=int, default=2)
  ap.add_argument("--workdir", default=None)
  args = ap.parse_args()
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
  runs = {"quality_head": [], "ask_llm": []}
  for r in range(args.rounds):
    order = ["quality_head", "ask_llm"] if r % 2 == 0 else ["ask_llm", "quality_head"]
    for sampler in order:
      secs = run_job(corpus, os.path.join(work, sampler), sampler)
      runs[sampler].append(round(secs, 1))
      print(f"round {r}: {sampler} {secs:.1f} s", file=sys.stderr, flush=True)
  med = {k: statistics.median(v) for k, v in runs.items()}
  print(json.dumps({
      "documents": len(ids), "runs_s": runs,
      "docs_per_s": {k: round(len(ids) / v, 2) for k, v in med.items()},
      "speedup_head_vs_ask_llm": round(med["ask_llm"] / med["quality_head"], 1),
      "per_round_speedup": [round(a / h, 1) for a, h in zip(runs["ask_llm"],
                                                           runs["quality_head"])],
  }, indent=1))


if __name__ == "__main__":
  main()
