"""--dedup measured: quality on planted copies, speed per core, memory in N, the cost of
the default.

    # quality: planted copies at known word-5-gram Jaccard levels (0.5 to 1.0) of
    # FineWeb-Edu pages; recall per level and precision for --dedup=exact, --dedup=minhash
    # (the Beam transform on the FnApiRunner), datasketch's MinHashLSH and, with
    # --datatrove_python, datatrove's four-stage MinHash dedup, on the same corpus
    HF_HUB_OFFLINE=1 .venv/bin/python -m benchmarks.dedup_bench quality \
        --data .../fineweb_edu_annotated_dev.jsonl --datatrove_python /tmp/dtvenv/bin/python

    # speed: documents/s per core (CPU seconds) of our signatures and of the whole Beam
    # dedup against datatrove's pipeline on the same documents
    ... dedup_bench speed --data ... --datatrove_python /tmp/dtvenv/bin/python

    # memory: the job (--sampler=random --dedup=minhash) on synthetic corpora with 10%
    # near-copies: peak RSS per N, and the same groups with 1 and 2 workers
    ... dedup_bench memory --sizes 5000,10000,20000

    # cost: --dedup=exact against --dedup=none on report_cost.py's corpus (ABBA)
    ... dedup_bench cost --documents 1000000 --pairs 1

datatrove is never a dependency of this project: install it in a venv of its own, e.g.
`python3.11 -m venv /tmp/dtvenv && /tmp/dtvenv/bin/pip install datatrove==0.10.1 regex
nltk tokenizers orjson spacy xxhash==3.5.0` (its MinHash steps import these without
declaring them; xxhash 4 refuses the str datatrove 0.10.1 hashes).
No parameter is tuned here: the defaults (5-word shingles, 20 bands x 5 rows, threshold
0.8) were set from the LSH curve before any measurement.
"""
import argparse
import json
import os
import pickle
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Sequence, Set, Tuple

import numpy as np

from benchmarks import harness
from transforms.algorithms import minhash as mh

LEVELS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0)
THRESHOLD = 0.8


# ----------------------------------------------------------------------- corpora

def mutate(rng: random.Random, text: str, target: float, vocab: Sequence[str]) -> str:
  """`text` with words at random places replaced: the most edits that keep the word-5-gram
  Jaccard with the original at or above `target` (so level L means J in [L, L + a bit)).
  1.0: a copy with other whitespace."""
  if target >= 1.0:
    return "  " + text.replace(" ", "\n", 2) + " "
  words = text.split()
  order = list(range(len(words)))
  rng.shuffle(order)
  replacement = [rng.choice(vocab) for _ in words]
  base = mh.shingle_hashes(text)

  def edited(k):
    out = list(words)
    for i in order[:k]:
      out[i] = replacement[i]
    return " ".join(out)
  lo, hi = 0, len(words)
  while lo < hi:  # the largest k whose Jaccard is still >= target
    mid = (lo + hi + 1) // 2
    if mh.jaccard(base, mh.shingle_hashes(edited(mid))) >= target:
      lo = mid
    else:
      hi = mid - 1
  return edited(lo)


def planted_corpus(pages: List[dict], per_level: int, seed: int = 0):
  """(docs [{id, text}], planted [(base id, copy id, level, true Jaccard)])."""
  rng = random.Random(seed)
  vocab = sorted({w for p in pages[:200] for w in p["text"].split()})
  docs = [{"id": f"p{i:04d}", "text": p["text"]} for i, p in enumerate(pages)]
  planted = []
  bases = list(range(len(pages)))
  rng.shuffle(bases)
  for li, level in enumerate(LEVELS):
    for j in range(per_level):
      b = bases[li * per_level + j]
      text = mutate(rng, pages[b]["text"], level, vocab)
      cid = f"c{level:.2f}-{j:03d}"
      docs.append({"id": cid, "text": text})
      planted.append((f"p{b:04d}", cid, level,
                      mh.jaccard(mh.shingle_hashes(pages[b]["text"]), mh.shingle_hashes(text))))
  rng.shuffle(docs)
  return docs, planted


def synthetic_corpus(n: int, copy_fraction: float, seed: int = 0,
                     words: int = 200) -> List[dict]:
  """n documents of `words` random words; copy_fraction of them near-copies of others
  (one word in 50 replaced: Jaccard of 5-word shingles about 0.8-0.9)."""
  rng = np.random.default_rng(seed)
  vocab = np.array([f"w{i}" for i in range(20000)])
  n_copies = int(n * copy_fraction)
  n_base = n - n_copies
  docs = [{"id": f"d{i:07d}", "text": " ".join(vocab[rng.integers(0, len(vocab), words)])}
          for i in range(n_base)]
  for j in range(n_copies):
    text = docs[int(rng.integers(0, max(1, n_base // 4)))]["text"].split()
    for i in rng.integers(0, len(text), max(1, words // 50)):
      text[i] = vocab[rng.integers(0, len(vocab))]
    docs.append({"id": f"n{j:07d}", "text": " ".join(text)})
  return docs


# ----------------------------------------------------------------------- the methods

def ours(docs: List[dict], mode: str, workers: int = 1,
         threshold: float = THRESHOLD) -> Dict[str, str]:
  """{removed id: kept id} of the Beam transform (transforms/dedup.py) on the FnApiRunner."""
  import apache_beam as beam
  from apache_beam.options.pipeline_options import PipelineOptions
  from apache_beam.testing.test_pipeline import TestPipeline
  from beam_pipelines.dedup_options import DedupConfig
  from transforms.dedup import Deduplicate
  from transforms.records import Document
  path = os.path.join(tempfile.mkdtemp(), "copies.pickle")
  options = PipelineOptions([f"--direct_num_workers={workers}",
                             "--direct_running_mode=multi_processing"] if workers > 1 else [])
  with TestPipeline(runner="FnApiRunner", options=options) as p:
    out = (p | beam.Create([Document(d["id"], d["text"], f"in:{i}")
                            for i, d in enumerate(docs)])
           | Deduplicate(DedupConfig(mode=mode, threshold=threshold), seed=0))
    _ = (out["duplicates"] | beam.Map(lambda d: (d.id, d.scores["copy_of"]))
         | beam.combiners.ToList()
         | beam.Map(lambda rows: pickle.dump(dict(rows), open(path, "wb"))))
  with open(path, "rb") as f:
    return pickle.load(f)


def datasketch_lsh(docs: List[dict], threshold: float = THRESHOLD,
                   num_perm: int = 128) -> Dict[str, str]:
  """datasketch's MinHashLSH on the same shingles: each document queried before it is
  inserted; a hit makes it a copy of the first hit's group (union-find)."""
  from datasketch import MinHash, MinHashLSH
  lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
  parent: Dict[str, str] = {}

  def find(x):
    while parent.get(x, x) != x:
      x = parent[x]
    return x
  removed = {}
  for d in docs:
    m = MinHash(num_perm=num_perm, seed=1, hashfunc=lambda x: x, scheme="affine32")
    m.update_batch([int(v) for v in mh.shingle_hashes(d["text"])])
    hits = lsh.query(m)
    if hits:
      root = find(sorted(hits)[0])
      parent[d["id"]] = root
      removed[d["id"]] = root
    lsh.insert(d["id"], m)
  return removed


_DATATROVE_SCRIPT = r"""
import json, os, sys, time
from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import (MinhashConfig, MinhashDedupBuckets,
    MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature)
from datatrove.pipeline.readers import JsonlReader
from datatrove.pipeline.writers import JsonlWriter
data, work = sys.argv[1], sys.argv[2]
config = MinhashConfig()
def run(name, pipeline, tasks=1):
  start = time.time()
  LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1,
                        logging_dir=f"{work}/logs/{name}").run()
  return time.time() - start
times = {}
times["signatures"] = run("sig", [JsonlReader(data), MinhashDedupSignature(
    output_folder=f"{work}/sigs", config=config)])
times["buckets"] = run("buckets", [MinhashDedupBuckets(
    input_folder=f"{work}/sigs", output_folder=f"{work}/buckets", config=config)],
    tasks=config.num_buckets)
times["cluster"] = run("cluster", [MinhashDedupCluster(
    input_folder=f"{work}/buckets", output_folder=f"{work}/remove", config=config)])
times["filter"] = run("filter", [JsonlReader(data), MinhashDedupFilter(
    input_folder=f"{work}/remove"), JsonlWriter(f"{work}/kept", compression=None)])
kept = []
for name in sorted(os.listdir(f"{work}/kept")):
  kept += [json.loads(l)["id"] for l in open(f"{work}/kept/{name}")]
json.dump({"kept": kept, "stage_wall_s": times}, open(f"{work}/result.json", "w"))
"""


def datatrove(docs: List[dict], python: str) -> Tuple[Set[str], float, float]:
  """(removed ids, wall s, CPU s of the whole subprocess tree) of datatrove's four-stage
  MinHash dedup (its defaults: 5-grams, 14 buckets x 8 hashes) in its own venv."""
  work = tempfile.mkdtemp(prefix="dt-")
  os.makedirs(f"{work}/in")
  with open(f"{work}/in/docs.jsonl", "w") as f:
    for d in docs:
      f.write(json.dumps(d) + "\n")
  script = os.path.join(work, "run.py")
  with open(script, "w") as f:
    f.write(_DATATROVE_SCRIPT)
  before = resource.getrusage(resource.RUSAGE_CHILDREN)
  start = time.time()
  subprocess.run([python, script, f"{work}/in", work], check=True,
                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  wall = time.time() - start
  after = resource.getrusage(resource.RUSAGE_CHILDREN)
  cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
  kept = set(json.load(open(f"{work}/result.json"))["kept"])
  return {d["id"] for d in docs} - kept, wall, cpu


# ----------------------------------------------------------------------- scoring

def evaluate(docs, planted, removed: Set[str]):
  """Recall per level (a planted pair is found when one of the two is removed) and
  precision (a removed document is right when some other document has word-5-gram
  Jaccard >= THRESHOLD with it)."""
  found = {}
  for base, copy, level, _ in planted:
    found.setdefault(level, []).append(base in removed or copy in removed)
  sets = {d["id"]: mh.shingle_hashes(d["text"]) for d in docs}
  partner = {}
  for base, copy, _, j in planted:
    partner.setdefault(base, []).append((copy, j))
    partner.setdefault(copy, []).append((base, j))
  right = 0
  for r in removed:
    best = max((j for _, j in partner.get(r, [])), default=0.0)
    if best < THRESHOLD:  # not a planted pair: look at every document
      best = max((mh.jaccard(sets[r], s) for i, s in sets.items() if i != r), default=0.0)
    right += best >= THRESHOLD - 1e-9
  recall = {f"{lv:.2f}": round(float(np.mean(v)), 3) for lv, v in sorted(found.items())}
  should = [f for (_, _, _, j), f in zip(planted, [b in removed or c in removed
                                                  for b, c, _, _ in planted])
            if j >= THRESHOLD]
  return {"removed": len(removed), "recall_by_level": recall,
          "recall_at_or_above_threshold": round(float(np.mean(should)), 3) if should else None,
          "precision": round(right / len(removed), 3) if removed else None}


# ----------------------------------------------------------------------- commands

def _pages(path: str, half: str) -> List[dict]:
  pages = [p for p in harness.read_jsonl(path) if len(p["text"].split()) >= 50]
  mid = len(pages) // 2
  return pages[mid:] if half == "report" else pages[:mid]


def cmd_quality(args) -> None:
  docs, planted = planted_corpus(_pages(args.data, "report"), args.per_level)
  print(f"{len(docs)} documents, {len(planted)} planted copies at levels {LEVELS}; "
        f"true Jaccard of the planted: " + ", ".join(
            f"{lv}: {np.mean([j for *_, l, j in planted if l == lv]):.3f}" for lv in LEVELS))
  results = {}
  for name, fn in (("ours exact", lambda: set(ours(docs, "exact"))),
                   ("ours minhash", lambda: set(ours(docs, "minhash"))),
                   ("datasketch MinHashLSH(0.8, 128)", lambda: set(datasketch_lsh(docs))),
                   # Lower confirming thresholds: our recall at datatrove's (equal recall).
                   *((f"ours minhash, threshold {t}",
                      lambda t=t: set(ours(docs, "minhash", threshold=t)))
                     for t in args.thresholds)):
    start = time.time()
    removed = fn()
    results[name] = {**evaluate(docs, planted, removed), "wall_s": round(time.time() - start, 1)}
  if args.datatrove_python:
    removed, wall, _ = datatrove(docs, args.datatrove_python)
    results["datatrove 0.10.1 MinHash"] = {**evaluate(docs, planted, removed),
                                           "wall_s": round(wall, 1)}
  print(json.dumps(results, indent=1))


def _cpu() -> float:
  t = os.times()
  return t.user + t.system


def cmd_speed(args) -> None:
  pages = _pages(args.data, "report")
  docs, _ = planted_corpus(pages, args.per_level)
  docs = (docs * ((args.documents + len(docs) - 1) // len(docs)))[:args.documents]
  docs = [{"id": f"{d['id']}#{i}", "text": d["text"]} for i, d in enumerate(docs)]
  perms = mh.permutations(100)
  rows = {}
  for r in range(args.rounds):  # interleaved: drift falls on both
    start = _cpu()
    for i in range(0, len(docs), 256):
      batch = docs[i:i + 256]
      mh.band_keys(mh.signatures([mh.shingle_hashes(d["text"]) for d in batch], perms), 20, 5)
    rows.setdefault("ours: shingles + signatures + band keys (numpy)", []).append(_cpu() - start)
    start = _cpu()
    ours(docs, "minhash", threshold=args.threshold)
    rows.setdefault(f"ours: whole --dedup=minhash (Beam, FnApiRunner, 1 worker, threshold "
                    f"{args.threshold})", []).append(_cpu() - start)
    if args.datatrove_python:
      _, _, cpu = datatrove(docs, args.datatrove_python)
      rows.setdefault("datatrove 0.10.1: 4 stages (1 worker)", []).append(cpu)
  out = {k: {"cpu_s": [round(v, 2) for v in vs],
             "docs_per_cpu_s": round(len(docs) / float(np.median(vs)), 1)}
         for k, vs in rows.items()}
  print(json.dumps({"documents": len(docs), **out}, indent=1))


def _write_jsonl(docs, path):
  with open(path, "w") as f:
    for d in docs:
      f.write(json.dumps(d) + "\n")


def _rss_kib(pid: int) -> int:
  try:
    with open(f"/proc/{pid}/status") as f:
      return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
  except (OSError, StopIteration):
    return 0


def _children(pid: int) -> List[int]:
  found = []
  try:
    for task in os.listdir(f"/proc/{pid}/task"):
      with open(f"/proc/{pid}/task/{task}/children") as f:
        found += [int(c) for c in f.read().split()]
  except OSError:
    pass
  return found + [g for c in found for g in _children(c)]


def _sampled_run(argv, every: float = 0.2, module: str = "beam_pipelines.select_data"
                 ) -> Tuple[float, int, int]:
  """(wall s, peak RSS in KiB of the job's own process, peak RSS of its largest other
  process), sampled from /proc every `every` seconds. With
  --direct_running_mode=multi_processing the job's own process is the local runner (it
  holds every shuffle in memory, as a shuffle service would) and the others are the SDK
  worker processes, which run the transforms as Dataflow's workers do."""
  proc = harness.start_select_data(argv, module)
  start, runner, worker = time.time(), 0, 0
  while proc.poll() is None:
    runner = max(runner, _rss_kib(proc.pid))
    worker = max([worker] + [_rss_kib(c) for c in _children(proc.pid)])
    time.sleep(every)
  err = proc.stderr.read().decode(errors="replace")
  if proc.returncode:
    sys.exit(f"the job failed:\n{err[-3000:]}")
  return time.time() - start, runner, worker


def cmd_memory(args) -> None:
  # streamed: Beam's local runner sends each shuffle's output to a worker in pieces, as
  # Dataflow does, instead of in one message (see benchmarks/streamed_shuffle.py).
  module = ("benchmarks.streamed_shuffle" if args.shuffle == "streamed"
            else "beam_pipelines.select_data")
  if args.processor_cache_s is not None and args.shuffle != "streamed":
    sys.exit("error: --processor_cache_s needs --shuffle=streamed")
  results = []
  for n in [int(x) for x in args.sizes.split(",")]:
    if args.workdir:
      work = os.path.join(args.workdir, f"n{n}-w{args.words}")
      os.makedirs(work, exist_ok=True)
    else:
      work = tempfile.mkdtemp(prefix="ddmem-")
    if not os.path.exists(f"{work}/in.jsonl"):
      _write_jsonl(synthetic_corpus(n, 0.1, words=args.words), f"{work}/in.jsonl.part")
      os.replace(f"{work}/in.jsonl.part", f"{work}/in.jsonl")
    copies = {}
    # The same job without dedup is the peer: what the job itself holds at this N.
    for run in args.runs.split(","):
      mode, workers = run.split(":")[0], int(run.split(":")[1])
      out = f"{work}/{mode}{workers}-{args.shuffle}"
      shutil.rmtree(out, ignore_errors=True)  # this benchmark's own earlier output
      wall, runner, worker = _sampled_run(module=module, argv=[
          f"--input={work}/in.jsonl", f"--output={out}", "--id_field=id",
          "--sampler=random", f"--dedup={mode}", "--report=false", "--scores_format=jsonl",
          "--cache=none", f"--docs_per_file={args.docs_per_file}",
          f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
          + ([f"--processor_cache_s={args.processor_cache_s}"]
             if args.processor_cache_s is not None else []))
      rows = [json.loads(l) for name in sorted(os.listdir(f"{out}/scores"))
              for l in open(f"{out}/scores/{name}")]
      found = {r["id"]: r.get("copy_of") for r in rows if r.get("copy_of")}
      row = {"documents": n, "dedup": mode, "workers": workers, "shuffle": args.shuffle,
             "processor_cache_s": args.processor_cache_s,
             "wall_s": round(wall, 1),
             "runner_peak_rss_mib": round(runner / 1024, 1),
             "worker_peak_rss_mib": round(worker / 1024, 1), "copies": len(found)}
      if mode == "minhash":
        copies[workers] = found
        if workers == 2 and 1 in copies:
          row["same_groups_as_1_worker"] = copies[1] == copies[2]
      results.append(row)
      print(json.dumps(row), flush=True)


def cmd_cost(args) -> None:
  """The job of benchmarks/report_cost.py (random words, 20-400 characters, 8 files,
  --sampler=random --keep_fraction=0.1 --cache=none), --report=false, with --dedup=exact
  and --dedup=none in ABBA order."""
  from benchmarks.report_cost import write_corpus
  work = args.workdir or tempfile.mkdtemp(prefix="ddcost-")
  if not os.path.isdir(f"{work}/corpus"):
    write_corpus(f"{work}/corpus", args.documents, 8)
  runs = {}
  for mode in ("exact", "none"):
    runs[mode] = (lambda mode=mode: harness.time_select_data(
        [f"--input={work}/corpus/*.jsonl", f"--output={work}/{mode}", "--id_field=id",
         "--sampler=random", "--keep_fraction=0.1", "--cache=none", f"--dedup={mode}",
         "--report=false", "--overwrite"], mode))
  times = {m: [] for m in runs}
  cpus = {m: [] for m in runs}
  for _, mode in harness.abba_order(list(runs), args.pairs):
    wall, cpu = runs[mode]()
    times[mode].append(round(wall, 2))
    cpus[mode].append(round(cpu, 2))
    print(f"{mode}: {wall:.1f} s wall, {cpu:.1f} s CPU", file=sys.stderr, flush=True)
  with open(f"{work}/exact/metrics.json") as f:
    removed = json.load(f).get("dedup", {}).get("duplicates")
  print(json.dumps({"documents": args.documents, "exact_copies_found": removed,
                    "wall_s": times, "cpu_s": cpus,
                    "exact_over_none_wall_median": round(
                        harness.median_ratio(times["exact"], times["none"]), 3),
                    "exact_over_none_cpu_median": round(
                        harness.median_ratio(cpus["exact"], cpus["none"]), 3)}))


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  sub = parser.add_subparsers(dest="command", required=True)
  q = sub.add_parser("quality")
  harness.add_data_argument(q)
  q.add_argument("--per_level", type=int, default=25)
  q.add_argument("--datatrove_python", default=None)
  q.add_argument("--thresholds", type=lambda v: [float(t) for t in v.split(",") if t],
                 default=[], help="extra confirming thresholds of ours, e.g. 0.75,0.7")
  s = sub.add_parser("speed")
  harness.add_data_argument(s)
  s.add_argument("--per_level", type=int, default=25)
  s.add_argument("--documents", type=int, default=5000)
  s.add_argument("--rounds", type=int, default=2)
  s.add_argument("--datatrove_python", default=None)
  s.add_argument("--threshold", type=float, default=THRESHOLD,
                 help="our confirming threshold (the one at which recall equals datatrove's)")
  m = sub.add_parser("memory")
  m.add_argument("--sizes", default="5000,10000,20000")
  m.add_argument("--words", type=int, default=200, help="words per synthetic document")
  m.add_argument("--shuffle", choices=("local", "streamed"), default="local",
                 help="streamed: the local runner sends a shuffle's output to workers in "
                      "pieces, as Dataflow does (benchmarks/streamed_shuffle.py)")
  m.add_argument("--docs_per_file", type=int, default=50_000,
                 help="the job's option: a ranked file's documents are sorted in one "
                      "worker, so its peak is at least this many selected documents")
  m.add_argument("--processor_cache_s", type=float, default=None,
                 help="with --shuffle=streamed: workers keep an idle stage's bundle "
                      "processor this long instead of Beam's 60 s (worker_cache.py)")
  m.add_argument("--workdir", default=None,
                 help="kept between calls: a corpus of the same size and words is reused")
  m.add_argument("--runs", default="minhash:1,minhash:2,none:1",
                 help="MODE:WORKERS runs at each size; --dedup=none is the peer (what the "
                      "job itself holds at that size)")
  c = sub.add_parser("cost")
  c.add_argument("--documents", type=int, default=20000)
  c.add_argument("--pairs", type=int, default=2)
  c.add_argument("--workdir", default=None, help="kept between calls: the corpus is reused")
  return parser


def main(argv=None) -> None:
  args = build_parser().parse_args(argv)
  {"quality": cmd_quality, "speed": cmd_speed, "memory": cmd_memory,
   "cost": cmd_cost}[args.command](args)


if __name__ == "__main__":
  main()
