"""Speed and memory of the density sketch (build + score) on synthetic unit vectors.

Each variant runs in its own subprocess so that its peak memory is its own. Embeddings are
generated chunk by chunk from a seeded RNG (generation is not timed) and scored in a second
pass over the same chunks, so the sketch path never holds more than one chunk. The naive
reference (the whole N x R*K projection matrix in one go, np.add.at) runs on a smaller N.

  .venv/bin/python -m benchmarks.sketch_speed                 # 1M docs, R=1000, B=20000
  .venv/bin/python -m benchmarks.sketch_speed --threads 1,2   # per core and both cores
  .venv/bin/python -m benchmarks.sketch_speed --threads 1 --variants \
      '[{"family":"sqrt","k":8,"chunk":16384},{"family":"sqrt","k":8,"chunk":16384,"procs":2}]'
  .venv/bin/python -m benchmarks.sketch_speed --repeat 3 --variants \
      '[{"family":"naive","k":8,"chunk":0},{"family":"sqrt","k":8,"chunk":16384}]'
"""
import argparse
import collections
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tracemalloc

from benchmarks.harness import REPO

DIM, ROWS, BUCKETS = 384, 1000, 20000


def _rss_mb():
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _maxrss_mb():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _chunks(np, n_docs, chunk, seed=0):
  for i, s in enumerate(range(0, n_docs, chunk)):
    x = np.random.default_rng([seed, i]).standard_normal((min(chunk, n_docs - s), DIM),
                                                         dtype=np.float32)
    x /= np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]
    yield x
    del x  # a suspended generator would hold it while the next chunk is generated


def _naive(np, sh, params, n_docs):
  """Straightforward numpy: one big projection, int64 K-tuples hashed with a multiply-add,
  modulo B, np.add.at. The same hash family and cost model as the paper's public code."""
  x = next(_chunks(np, n_docs, n_docs))
  w, b = sh.make_hashes(params)
  k = params.hashes_per_row
  mult = np.random.default_rng(1).integers(1, 2**62, k) * 2 + 1

  def ids_of(x):
    h = np.floor((x @ w + b) / params.bucket_width).astype(np.int64)
    key = (h.reshape(len(x), params.rows, k) * mult).sum(-1)
    key ^= key >> 29
    key *= 0xBF58476D1CE4E5B9 - 2**64
    return (key >> 32) % params.buckets

  rss0 = _rss_mb()
  tracemalloc.start()
  t0, c0 = time.perf_counter(), time.process_time()
  counts = np.zeros((params.rows, params.buckets), np.int32)
  ids = ids_of(x)
  np.add.at(counts, (np.arange(params.rows)[None, :], ids), 1)
  t1, c1 = time.perf_counter(), time.process_time()
  dens = counts[np.arange(params.rows)[None, :], ids_of(x)].mean(1)
  t2, c2 = time.perf_counter(), time.process_time()
  assert dens.min() >= 1
  return t1 - t0, t2 - t1, c1 - c0, c2 - c1, rss0, tracemalloc.get_traced_memory()[1] / 2**20


def _fast(np, sh, sc, params, n_docs, chunk):
  hashes = sh.make_hashes(params)
  sh.bucket_ids(next(_chunks(np, 64, 64)), params, hashes)  # BLAS buffers, outside timing
  rss0 = _rss_mb()
  tracemalloc.start()  # numpy reports its buffers to tracemalloc: arrays only, no BLAS
  build = score = cpu_build = cpu_score = 0.0
  counts, n = sc.new_counts(params), 0
  for x in _chunks(np, n_docs, chunk):
    t, c = time.perf_counter(), time.process_time()
    sc._add_embeddings(counts, x, params, hashes, chunk)
    build += time.perf_counter() - t
    cpu_build += time.process_time() - c
    n += len(x)
    del x  # else the loop holds the previous chunk while the next one is generated
  sketch = sc.Sketch(params, counts, n)
  lo = float("inf")
  for x in _chunks(np, n_docs, chunk):
    t, c = time.perf_counter(), time.process_time()
    d = sc.density(x, sketch, hashes, chunk_size=chunk)
    score += time.perf_counter() - t
    cpu_score += time.process_time() - c
    lo = min(lo, d.min())
    del x
  assert lo >= 1 and counts.sum() == n * params.rows
  return build, score, cpu_build, cpu_score, rss0, tracemalloc.get_traced_memory()[1] / 2**20


# Shared with forked workers (copy-on-write), as Beam shares a side input on a VM.
_SHARED = {}


def _worker_build(w, procs, chunk):
  np, sc, params, hashes, emb = (_SHARED[k] for k in ("np", "sc", "params", "hashes", "emb"))
  counts = sc.new_counts(params)
  for s in range(w * chunk, emb.shape[0], procs * chunk):
    sc._add_embeddings(counts, np.asarray(emb[s:s + chunk]), params, hashes, chunk)
  return counts  # pickled back to the parent: the cost of shipping an accumulator


def _worker_score(w, procs, chunk):
  np, sc, hashes, emb, sketch = (_SHARED[k] for k in ("np", "sc", "hashes", "emb", "sketch"))
  lo = float("inf")
  for s in range(w * chunk, emb.shape[0], procs * chunk):
    lo = min(lo, sc.density(np.asarray(emb[s:s + chunk]), sketch, hashes, chunk_size=chunk).min())
  return lo


def _parallel(np, sh, sc, params, n_docs, chunk, procs):
  """`procs` processes, as `procs` Beam workers would run the job: each builds a partial
  sketch over its share of the chunks, the parent merges them (CombineFn merge), then each
  scores its share against the merged sketch (side input). Embeddings come from a
  memory-mapped .npy written before timing (Beam workers read their input too)."""
  import multiprocessing
  import tempfile
  path = os.path.join(tempfile.mkdtemp(prefix="sketch_speed_"), "emb.npy")
  emb = np.lib.format.open_memmap(path, "w+", np.float32, (n_docs, DIM))
  for i, x in enumerate(_chunks(np, n_docs, chunk)):
    emb[i * chunk:i * chunk + len(x)] = x
  emb.flush()
  del emb
  hashes = sh.make_hashes(params)
  _SHARED.update(np=np, sc=sc, params=params, hashes=hashes,
                 emb=np.load(path, mmap_mode="r"))
  np.asarray(_SHARED["emb"]).sum()  # into the page cache, outside timing
  ctx = multiprocessing.get_context("fork")
  rss0 = _rss_mb()
  t0, c0 = time.perf_counter(), time.process_time()
  with ctx.Pool(procs) as pool:
    parts = pool.starmap(_worker_build, [(w, procs, chunk) for w in range(procs)])
  counts, n = None, 0
  for part in parts:
    counts, n = sc.sketch_merge(counts, n, part, int(part[0].sum()))
  del parts
  t1, c1 = time.perf_counter(), time.process_time()
  _SHARED["sketch"] = sc.Sketch(params, counts, n)
  with ctx.Pool(procs) as pool:
    lo = min(pool.starmap(_worker_score, [(w, procs, chunk) for w in range(procs)]))
  t2, c2 = time.perf_counter(), time.process_time()
  assert lo >= 1 and n == n_docs and counts.sum() == n * params.rows
  os.remove(path)
  # CPU time of the workers is not in this process: report the wall-clock rates only.
  return t1 - t0, t2 - t1, float("nan"), float("nan"), rss0, float("nan")


def child(spec):
  import numpy as np
  from transforms import sketch_counts as sc, sketch_hashing as sh
  from benchmarks.sketch_accuracy import groups_for
  groups = 0 if spec["family"] == "naive" else groups_for(spec["family"], ROWS)
  params = sh.SketchParams(DIM, ROWS, BUCKETS, spec["k"], spec["width"], seed=1,
                           groups=groups)
  base_peak = _maxrss_mb()
  if spec["family"] == "naive":
    build, score, cpu_b, cpu_s, rss0, arrays = _naive(np, sh, params, spec["docs"])
  elif spec.get("procs", 1) > 1:
    build, score, cpu_b, cpu_s, rss0, arrays = _parallel(np, sh, sc, params, spec["docs"],
                                                         spec["chunk"], spec["procs"])
  else:
    build, score, cpu_b, cpu_s, rss0, arrays = _fast(np, sh, sc, params, spec["docs"],
                                                     spec["chunk"])
  peak = _maxrss_mb()
  print(json.dumps(dict(spec, build_docs_s=spec["docs"] / build,
                        both_docs_s=spec["docs"] / (build + score),
                        score_docs_s=spec["docs"] / score, build_docs_cpu_s=spec["docs"] / cpu_b,
                        score_docs_cpu_s=spec["docs"] / cpu_s, rss_start_mb=rss0,
                        peak_rss_mb=peak, peak_before_run_mb=base_peak,
                        peak_growth_mb=peak - rss0, array_peak_mb=arrays)))


def _report(threads, variants, runs, upto=None):
  """One line per variant (only `upto` when streaming): median over rounds, and the best
  round in brackets when there are several. Ratios are medians over medians."""
  def med(i, key):
    return statistics.median(r[key] for r in runs[i])
  naive = {v["k"]: (med(i, "build_docs_s"), med(i, "score_docs_s"))
           for i, v in enumerate(variants) if v["family"] == "naive" and runs[i]}
  for i, v in enumerate(variants):
    if not runs[i] or (upto is not None and i != upto):
      continue
    r, ref = runs[i][-1], naive.get(v["k"])
    b, sc = med(i, "build_docs_s"), med(i, "score_docs_s")
    best = (f" [{max(x['build_docs_s'] for x in runs[i]):.0f}/"
            f"{max(x['score_docs_s'] for x in runs[i]):.0f}]" if len(runs[i]) > 1 else "")
    ratio = f"{b / ref[0]:4.1f}/{sc / ref[1]:<4.1f}" if ref and v["family"] != "naive" else ""
    family = v["family"] + (f" x{v['procs']}" if v.get("procs", 1) > 1 else "")
    print(f"{threads:>7} {family:>9} {v['k']:>2} {v['chunk']:>6} {r['docs']:>8} "
          f"{b:>9.0f} {sc:>9.0f} {med(i, 'both_docs_s'):>9.0f} {ratio:>9} "
          f"{med(i, 'peak_rss_mb'):>8.0f} "
          f"{med(i, 'peak_growth_mb'):>7.0f} {med(i, 'array_peak_mb'):>7.0f} "
          f"{v['chunk'] * DIM * 4 / 2**20:>8.0f} {med(i, 'build_docs_cpu_s'):>9.0f} "
          f"{med(i, 'score_docs_cpu_s'):>9.0f}{best}", flush=True)


def build_parser():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--docs", type=int, default=1_000_000)
  ap.add_argument("--ref-docs", type=int, default=20_000)
  ap.add_argument("--threads", default="2", help="BLAS threads, comma separated")
  ap.add_argument("--variants", default="default",
                  help="'default' or a JSON list of {family,k,chunk}")
  ap.add_argument("--repeat", type=int, default=1,
                  help="rounds over all variants; reports medians (and best) over rounds")
  ap.add_argument("--child", help=argparse.SUPPRESS)
  return ap


def main():
  args = build_parser().parse_args()
  if args.child:
    return child(json.loads(args.child))
  if args.variants == "default":
    variants = ([dict(family="naive", k=k, chunk=0) for k in (1, 4, 8)]
                + [dict(family="indep", k=k, chunk=16384) for k in (1, 2, 4, 8)]
                + [dict(family="indep", k=4, chunk=c) for c in (8192, 32768)]
                + [dict(family=f, k=8, chunk=16384) for f in ("R/4", "R/8", "sqrt")]
                + [dict(family="sqrt", k=4, chunk=16384)]
                + [dict(family="sqrt", k=8, chunk=c) for c in (8192, 32768)])
  else:
    variants = json.loads(args.variants)
  sketch_mb = ROWS * BUCKETS * 4 / 2**20
  print(f"R={ROWS} B={BUCKETS} dim={DIM}; int32 sketch {sketch_mb:.0f} MB; "
        f"{os.cpu_count()} cores; load avg {os.getloadavg()[0]:.1f}", flush=True)
  print(f"{'threads':>7} {'family':>9} {'K':>2} {'chunk':>6} {'docs':>8} {'build/s':>9} "
        f"{'score/s':>9} {'both/s':>9} {'vs naive':>9} {'peak MB':>8} {'growth':>7} {'arrays':>7} {'chunk MB':>8} "
        f"{'build/cpu':>9} {'score/cpu':>9}")
  for threads in args.threads.split(","):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=threads, OMP_NUM_THREADS=threads,
               MKL_NUM_THREADS=threads)
    runs = collections.defaultdict(list)
    for _ in range(args.repeat):  # rounds interleave the variants: load spikes hit all
      for i, v in enumerate(variants):
        spec = dict(v, docs=args.ref_docs if v["family"] == "naive" else args.docs,
                    width=0.14 * v["k"])  # auto width on MiniLM: 0.1 * K * 1.39
        out = subprocess.run([sys.executable, "-m", "benchmarks.sketch_speed", "--child",
                              json.dumps(spec)], cwd=REPO, env=env, capture_output=True,
                             text=True)
        if out.returncode:
          print(out.stderr[-2000:])
          continue
        runs[i].append(json.loads(out.stdout.strip().splitlines()[-1]))
        if args.repeat == 1:
          _report(threads, variants, runs, upto=i)
    if args.repeat > 1:
      _report(threads, variants, runs)
  print("indep: independent rows (groups=0); R/4, R/8, sqrt: rows sharing R/4, R/8, "
        "ceil(sqrt(R)) projection groups (the chunk is capped at 2^21/groups docs).")
  print("x2: two worker processes (1 BLAS thread each) as two Beam workers: partial "
        "sketches, merged in the parent, then scoring against the merged sketch; peak "
        "memory columns are the parent's only.")
  print("both/s: docs per wall-clock second for build and score together. "
        "build/s, score/s: docs per wall-clock second; build/cpu, score/cpu: docs per "
        "CPU-second of this process (all its threads), which other users' load on the "
        "machine distorts much less.")
  print("vs naive: build/score speed-up over the naive reference with the same K, "
        "same threads, same run. growth: peak RSS minus RSS before the run (the sketch, "
        "one chunk and temporaries; for naive the whole N x R*K projection). arrays: peak of\n"
        "numpy buffers alive at once (tracemalloc), including the input chunk being generated.")


if __name__ == "__main__":
  main()
