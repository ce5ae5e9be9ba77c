"""What the score cache saves and what it costs, with the bundled scorer on real pages.

On the first --docs documents of the FineWeb-Edu dev file, each run being the real job
(`python -m beam_pipelines.select_data`, DirectRunner) in a subprocess:

1. full:      a run that fills its cache (OUTPUT/cache);
2. no cache:  the same run with --cache=none (the cost of the cache: 1 against 2);
3. reselect:  --keep_fraction=0.1 into a new output from run 1's cache (no model load);
4. kill:      a run killed with SIGKILL once about half the documents are cached, then
              --resume: documents re-scored, and kill + resume against run 2;
5. sizes:     cache bytes per document for Ask-LLM scores (run 1) and for float16
              embeddings (a density run), projected to 10^9 documents.

    .venv/bin/python -m benchmarks.score_cache_bench --data PATH [--docs 1000]
        [--max_tokens 512] [--workdir DIR]

Prints one JSON object. Timings are ratios against runs in the same session (the
machine is shared); each run's wall time includes process start and model loading.
"""
import argparse
import glob
import json
import os
import shutil
import signal
import tempfile
import time

from benchmarks.harness import add_data_argument, run_select_data, start_select_data


def job(argv):
  """Runs the job to its end (exits with its stderr's tail when it fails)."""
  run_select_data(argv, f"run ({' '.join(argv)})")


def timed(argv):
  """Wall seconds of one job run."""
  return run_select_data(argv, f"run ({' '.join(argv)})")


def metrics_of(out):
  with open(os.path.join(out, "metrics.json")) as f:
    return json.load(f)


def cache_parts(cache, namespace="ask_llm"):
  return glob.glob(os.path.join(cache, namespace, "*", "*.parquet"))


def cached_entries(cache, namespace="ask_llm"):
  import pyarrow.parquet as pq
  keys = set()
  for f in cache_parts(cache, namespace):
    try:
      keys.update(pq.read_table(f).column("key").to_pylist())
    except Exception:  # pylint: disable=broad-except  (a file being renamed)
      pass
  return keys


def cache_bytes(cache, namespace):
  return sum(os.path.getsize(f) for f in cache_parts(cache, namespace))


def build_parser():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  add_data_argument(ap, "--data")
  ap.add_argument("--docs", type=int, default=1000)
  ap.add_argument("--max_tokens", type=int, default=512)
  ap.add_argument("--workdir", default=None)
  ap.add_argument("--only_kill", action="store_true",
                  help="run only part 4, against --uninterrupted_s from an earlier run")
  ap.add_argument("--uninterrupted_s", type=float, default=None)
  return ap


def main():
  args = build_parser().parse_args()
  work = args.workdir or tempfile.mkdtemp(prefix="score_cache_bench_")
  os.makedirs(work, exist_ok=True)
  corpus = os.path.join(work, "docs.jsonl")
  with open(args.data) as src, open(corpus, "w") as dst:
    for i, line in enumerate(src):
      if i >= args.docs:
        break
      dst.write(line)
  common = [f"--input={corpus}", "--id_field=id", f"--max_tokens={args.max_tokens}",
            "--device=cpu", "--keep_fraction=0.2"]

  def out(name):
    path = os.path.join(work, name)
    shutil.rmtree(path, ignore_errors=True)
    return path

  result = {"docs": args.docs, "max_tokens": args.max_tokens}
  if args.only_kill:
    result["kill"] = kill_and_resume(common, out, args.uninterrupted_s, None)
    print(json.dumps(result, indent=2))
    return
  full = out("full")
  t_full = timed([*common, f"--output={full}"])
  t_none = timed([*common, f"--output={out('nocache')}", "--cache=none"])
  m_full = metrics_of(full)
  result["full_run_s"] = round(t_full, 1)
  result["no_cache_run_s"] = round(t_none, 1)
  result["cache_cost"] = round(t_full / t_none - 1.0, 4)
  result["full_run_stage"] = m_full["cache"]["stages"]["ask_llm"]

  reselect = out("reselect")
  t_re = timed([*common[:-1], "--keep_fraction=0.1", f"--output={reselect}",
                f"--cache={full}/cache"])
  m_re = metrics_of(reselect)["cache"]["stages"]["ask_llm"]
  result["reselect_s"] = round(t_re, 1)
  result["reselect_over_full"] = round(t_re / t_full, 4)
  result["reselect_model_loads"] = m_re["model_loads"]
  result["reselect_inferred"] = m_re["inferred"]

  result["kill"] = kill_and_resume(common, out, t_none, m_full,
                                   os.path.join(work, "nocache"))

  # Cache sizes per document.
  dens = out("density")
  job([*common, "--sampler=density", f"--output={dens}"])
  n_emb = len(cached_entries(os.path.join(dens, "cache"), "embeddings"))
  per_score = cache_bytes(os.path.join(full, "cache"), "ask_llm") / args.docs
  per_emb = cache_bytes(os.path.join(dens, "cache"), "embeddings") / max(n_emb, 1)
  result["bytes_per_doc"] = {"ask_llm": round(per_score, 1), "embeddings_f16": round(per_emb, 1)}
  result["projected_1e9_docs_gb"] = {"ask_llm": round(per_score, 1),  # bytes/doc = GB/1e9
                                     "embeddings_f16": round(per_emb, 1)}
  result["cache_files"] = {"ask_llm": len(cache_parts(os.path.join(full, "cache"))),
                           "embeddings": len(cache_parts(os.path.join(dens, "cache"),
                                                         "embeddings"))}
  print(json.dumps(result, indent=2))


def kill_and_resume(common, out, uninterrupted_s, m_full, reference=None):
  """Kills a run with SIGKILL at half the uninterrupted run's time (wherever the flushes
  are), then resumes it."""
  killed = out("killed")
  cache = os.path.join(killed, "cache")
  start = time.time()
  proc = start_select_data([*common, f"--output={killed}"])
  while proc.poll() is None and time.time() - start < uninterrupted_s / 2:
    time.sleep(0.2)
  kill_at = time.time()
  os.killpg(proc.pid, signal.SIGKILL)
  proc.wait()
  parts = cache_parts(cache)
  last_file_at = max((os.path.getmtime(p) for p in parts), default=start)
  before = len(cached_entries(cache))
  t_resume = timed([*common, f"--output={killed}", "--resume"])
  stage = metrics_of(killed)["cache"]["stages"]["ask_llm"]
  # The scoring rate of the full run, else of the resumed part.
  docs = (stage["inferred"] + stage["from_cache"]) if m_full else stage["inferred"]
  scored_s = (m_full or metrics_of(killed)).get("stage_wall_time_s", {}).get("scored")
  rate = docs / scored_s if scored_s else None
  since_flush = kill_at - last_file_at
  report = {
      "killed_after_s": round(kill_at - start, 1), "cached_at_kill": before,
      "seconds_since_last_flush_at_kill": round(since_flush, 1),
      "resume_s": round(t_resume, 1), "resume_inferred": stage["inferred"],
      "resume_from_cache": stage["from_cache"],
      "kill_plus_resume_over_uninterrupted": round(
          (kill_at - start + t_resume) / uninterrupted_s, 3),
      # Work lost = documents scored after the last flush: its age times the scoring rate
      # (at most one flush interval: 30 s or 1,000 documents).
      "estimated_rescored_docs": int(round(since_flush * rate)) if rate else None,
      "flush_interval_docs_at_this_rate": int(round(min(30.0 * rate, 1000))) if rate else None,
  }
  if reference:
    report["same_selection_as_uninterrupted"] = _selected(killed) == _selected(reference)
  return report


def _selected(out):
  rows = []
  for f in sorted(glob.glob(os.path.join(out, "scores", "*"))):
    if f.endswith(".jsonl"):
      rows += [json.loads(l) for l in open(f) if l.strip()]
  return sorted((r["rank"], r["id"], r["ask_llm_score"]) for r in rows if r["selected"])


if __name__ == "__main__":
  main()
