"""benchmarks/streamed_shuffle.py (the local runner sending each stage's input in pieces,
used to measure workers' memory as Dataflow's shuffle would feed them) changes nothing a
job writes: the same scores and selection, with pieces small enough that every shuffle of
a small corpus is cut many times, and workers that drop idle stages' processors after 1 s
(benchmarks/worker_cache.py)."""
import json
import os
import subprocess
import sys

from benchmarks import harness
from benchmarks.dedup_bench import synthetic_corpus


def _rows(out):
  rows = [json.loads(line) for name in sorted(os.listdir(f"{out}/scores"))
          for line in open(f"{out}/scores/{name}")]
  return sorted(rows, key=lambda r: (r["id"], r.get("source", "")))


def test_a_job_with_streamed_shuffle_writes_what_the_local_runner_writes(tmp_path):
  with open(tmp_path / "in.jsonl", "w") as f:
    for d in synthetic_corpus(400, 0.2, words=60):
      f.write(json.dumps(d) + "\n")
  args = [f"--input={tmp_path}/in.jsonl", "--id_field=id", "--sampler=random",
          "--dedup=minhash", "--report=false", "--scores_format=jsonl", "--cache=none",
          "--direct_num_workers=1", "--direct_running_mode=multi_processing"]
  outs = {}
  streamed = ["--chunk_bytes=2048", "--processor_cache_s=1"]
  for module, extra in (("beam_pipelines.select_data", []),
                        ("benchmarks.streamed_shuffle", streamed)):
    out = tmp_path / module.split(".")[0]
    done = subprocess.run([sys.executable, "-m", module, *args, f"--output={out}", *extra],
                          cwd=harness.REPO, env=harness.job_env(), capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    outs[module] = _rows(out)
  local, streamed = outs.values()
  assert len(local) == 400 and sum(1 for r in local if r.get("copy_of")) >= 40
  assert streamed == local
