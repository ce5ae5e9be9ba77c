"""What the report's statistics cost: the job with and without --report on synthetic docs.

Writes --docs synthetic documents (random words, 20 to 400 characters, in --files JSON
Lines files), then runs the real job (`python -m beam_pipelines.select_data`,
--sampler=random, --cache=none, --keep_fraction=0.1) in a subprocess with --report=false
and with --report=true, alternating the order over --pairs pairs (ABBA) so that drift on
a shared machine falls on both. The report's part is its statistics (computed in the
pipeline: per-bundle summaries, ApproximateQuantiles, fixed-bin histograms) plus drawing
the page at the end; both are in the --report=true wall time.

    .venv/bin/python -m benchmarks.report_cost [--docs 1000000] [--files 8] [--pairs 1]
        [--workdir DIR]

Prints one JSON object: each run's wall and CPU time (user + system: the job's own, so
less moved by other work on a shared machine), the median ratios with/without, and the
report's size.
"""
import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from typing import Tuple

from benchmarks.harness import abba_order, ratios, run_interleaved, time_select_data

_WORDS = ("the of and to in is was for on that with as by at from data water energy river "
          "history science market city school health music light system model theory "
          "engine method paper result number table stone cloud tree wind").split()


def write_corpus(directory: str, docs: int, files: int) -> None:
  """Synthetic documents, the same for a given count (a fixed seed: a benchmark input,
  not a result)."""
  rng = random.Random(0)
  os.makedirs(directory, exist_ok=True)
  handles = [open(os.path.join(directory, f"part-{i:03d}.jsonl"), "w") for i in range(files)]
  try:
    for i in range(docs):
      text = " ".join(rng.choices(_WORDS, k=rng.randint(4, 70)))[:400]
      handles[i % files].write(json.dumps({"id": f"s{i:09d}", "text": text}) + "\n")
  finally:
    for h in handles:
      h.close()


def run_job(corpus: str, out: str, report: bool) -> Tuple[float, float]:
  """(wall, CPU) seconds of the job."""
  argv = [f"--input={corpus}/*.jsonl", f"--output={out}", "--id_field=id",
          "--sampler=random", "--keep_fraction=0.1", "--cache=none",
          f"--report={'true' if report else 'false'}", "--overwrite"]
  return time_select_data(argv, "run")


def build_parser():
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--docs", type=int, default=1_000_000)
  ap.add_argument("--files", type=int, default=8)
  ap.add_argument("--pairs", type=int, default=1)
  ap.add_argument("--workdir", default=None)
  return ap


def main():
  args = build_parser().parse_args()
  work = args.workdir or tempfile.mkdtemp(prefix="report_cost-")
  corpus = os.path.join(work, "corpus")
  t0 = time.time()
  write_corpus(corpus, args.docs, args.files)
  print(f"corpus: {args.docs} documents in {time.time() - t0:.0f} s", file=sys.stderr)
  runs = run_interleaved(
      {report: lambda report=report: run_job(
          corpus, os.path.join(work, "with" if report else "without"), report)
       for report in (False, True)},
      abba_order((False, True), args.pairs),  # without, with, with, without; then reversed
      after=lambda _, report, t: print(f"report={report}: {t[0]:.1f} s wall, {t[1]:.1f} s CPU",
                                       file=sys.stderr))
  times = {report: [wall for wall, _ in v] for report, v in runs.items()}
  cpu = {report: [used for _, used in v] for report, v in runs.items()}
  with_dir = os.path.join(work, "with")
  with open(os.path.join(with_dir, "metrics.json")) as f:
    counts = json.load(f)["counts"]
  wall_ratios = ratios(times[True], times[False])
  cpu_ratios = ratios(cpu[True], cpu[False])
  print(json.dumps({
      "docs": args.docs, "valid": counts["valid"], "selected": counts["selected"],
      "wall_s_without_report": [round(t, 1) for t in times[False]],
      "wall_s_with_report": [round(t, 1) for t in times[True]],
      "ratio_with_over_without": round(statistics.median(wall_ratios), 4),
      "cpu_s_without_report": [round(t, 1) for t in cpu[False]],
      "cpu_s_with_report": [round(t, 1) for t in cpu[True]],
      "cpu_ratio_with_over_without": round(statistics.median(cpu_ratios), 4),
      "report_html_bytes": os.path.getsize(os.path.join(with_dir, "report.html")),
      "report_json_bytes": os.path.getsize(os.path.join(with_dir, "report.json")),
  }, indent=2))
  if not args.workdir:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  main()
