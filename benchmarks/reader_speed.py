"""Reading speed: documents/s of the job's read step (transforms/read.py's ReadDocuments:
matching, reading, parsing and validating; nothing after it) on the same documents as
Parquet and as JSON Lines, and on one Parquet shard with 1 and 2 local workers.

    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.reader_speed \\
        --data DATA/fineweb_edu_annotated_dev.jsonl --workdir /tmp/reader_speed \\
        --docs 1000000 --pairs 1

The dev pages are repeated, each copy with an id of its own, into WORKDIR/docs.jsonl and
WORKDIR/docs.parquet (snappy, no dictionary for the text, --row_group_rows rows per row
group; made once, reused). Each run is a fresh process (Beam's FnApiRunner, in-process
for one worker; --direct_num_workers=2 --direct_running_mode=multi_processing for two)
timed around the pipeline alone; runs are interleaved A B B A (harness.abba_order) and
ratios are taken within each pair, since the machine is shared.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks import harness


def build(data: str, workdir: str, docs: int, row_group_rows: int):
  """WORKDIR/docs.jsonl and WORKDIR/docs.parquet holding `docs` documents."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  os.makedirs(workdir, exist_ok=True)
  jsonl, parquet = os.path.join(workdir, "docs.jsonl"), os.path.join(workdir, "docs.parquet")
  stamp = os.path.join(workdir, f"built-{docs}-{row_group_rows}")
  if os.path.exists(stamp):
    return jsonl, parquet
  pages = [r["text"] for r in harness.read_jsonl(data)]
  with open(jsonl, "w", encoding="utf-8") as f:
    for i in range(docs):
      f.write(json.dumps({"id": f"doc{i:08d}", "text": pages[i % len(pages)]},
                         ensure_ascii=False) + "\n")
  schema = pa.schema([("id", pa.string()), ("text", pa.string())])
  with pq.ParquetWriter(parquet, schema, compression="snappy",
                        use_dictionary=["id"]) as writer:
    for start in range(0, docs, row_group_rows):
      end = min(docs, start + row_group_rows)
      writer.write_table(pa.table({"id": [f"doc{i:08d}" for i in range(start, end)],
                                   "text": [pages[i % len(pages)] for i in range(start, end)]},
                                  schema=schema), row_group_size=row_group_rows)
  open(stamp, "w").close()
  return jsonl, parquet


def read_once(path: str, workers: int) -> dict:
  """Runs ReadDocuments on `path` in this process; {documents, seconds}."""
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions
  from transforms import read as read_lib
  argv = ["--runner=FnApiRunner"]
  if workers > 1:
    argv += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
  start = time.perf_counter()
  with beam.Pipeline(options=PipelineOptions(argv)) as p:
    out = p | "Read" >> read_lib.ReadDocuments([path], id_field="id")
    counted = out["documents"] | beam.combiners.Count.Globally()
    counted | beam.Map(lambda n: print(json.dumps({"documents": n}), flush=True))
  return {"seconds": time.perf_counter() - start}


def _timed_run(path: str, workers: int) -> dict:
  """A fresh process running read_once; {documents, seconds}."""
  done = subprocess.run(
      [sys.executable, "-m", "benchmarks.reader_speed", "--run", path,
       "--workers", str(workers)],
      cwd=harness.REPO, env=harness.job_env(), capture_output=True, text=True)
  if done.returncode != 0:
    raise SystemExit(f"run failed:\n{done.stderr[-3000:]}")
  result = {}
  for line in done.stdout.splitlines():
    if line.startswith("{"):
      result.update(json.loads(line))
  return result


def compare(name_a: str, run_a, name_b: str, run_b, pairs: int) -> dict:
  """ABBA-interleaved runs of two variants; docs/s of each run and the ratios a/b."""
  def show(r, name, value):
    print(f"  pair {r} {name}: {value['documents']:,} documents in {value['seconds']:.1f} s "
          f"= {value['documents'] / value['seconds']:,.0f} docs/s", flush=True)
  results = harness.run_interleaved({name_a: run_a, name_b: run_b},
                                    harness.abba_order([name_a, name_b], pairs), show)
  rates = {n: [v["documents"] / v["seconds"] for v in vs] for n, vs in results.items()}
  ratio = harness.ratios(rates[name_a], rates[name_b])
  summary = {"docs_per_s": {n: [round(r) for r in rs] for n, rs in rates.items()},
             "ratios": [round(r, 3) for r in ratio], "median_ratio": round(
                 statistics.median(ratio), 3)}
  print(f"{name_a} / {name_b} docs/s: median {summary['median_ratio']} "
        f"(per run {summary['ratios']})", flush=True)
  return summary


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  harness.add_data_argument(parser)
  parser.add_argument("--workdir", required=True, metavar="DIR",
                      help="where the generated inputs go (made once, then reused)")
  parser.add_argument("--docs", type=int, default=1_000_000)
  parser.add_argument("--row_group_rows", type=int, default=50_000)
  parser.add_argument("--pairs", type=int, default=1, help="ABBA pairs per comparison")
  parser.add_argument("--only", choices=("formats", "workers"), default=None)
  return parser


def _child(argv) -> None:
  """One timed run, in a process of its own: --run PATH --workers N."""
  parser = argparse.ArgumentParser()
  parser.add_argument("--run", required=True)
  parser.add_argument("--workers", type=int, default=1)
  args = parser.parse_args(argv)
  print(json.dumps(read_once(args.run, args.workers)), flush=True)


def main():
  if "--run" in sys.argv[1:]:
    _child(sys.argv[1:])
    return
  args = build_parser().parse_args()
  jsonl, parquet = build(args.data, args.workdir, args.docs, args.row_group_rows)
  print(f"inputs: {jsonl} ({os.path.getsize(jsonl) / 2**20:,.0f} MiB), {parquet} "
        f"({os.path.getsize(parquet) / 2**20:,.0f} MiB), {args.docs:,} documents", flush=True)
  out = {}
  if args.only in (None, "formats"):
    out["parquet_vs_jsonl"] = compare("parquet", lambda: _timed_run(parquet, 1),
                                      "jsonl", lambda: _timed_run(jsonl, 1), args.pairs)
  if args.only in (None, "workers"):
    out["parquet_2_vs_1_workers"] = compare("2 workers", lambda: _timed_run(parquet, 2),
                                            "1 worker", lambda: _timed_run(parquet, 1),
                                            args.pairs)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
