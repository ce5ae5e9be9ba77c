"""k-means at scale on this machine: the job's k-means (transforms/kmeans.py) against
scikit-learn's MiniBatchKMeans, on the same synthetic unit vectors, in the same run.

Data: N unit vectors in 384 dimensions around 2,000 random directions (noise chosen so a
vector's cosine to its direction is about 0.5, like sentence embeddings of one topic),
generated from a fixed seed. K clusters (default 1,000).

- ours: k-means++ on the --sample vectors with the smallest hash of (seed, index), as
  FitKMeans does; then Lloyd passes, each one the work of the Beam pass: batches of
  1,024 (BatchElements' maximum) through kmeans._batch_sums (assign + exact fixed-point
  sums), merged with ClusterSumsFn, then kmeans.update; then one assignment pass
  (AssignClusters' work). Documents/s per pass.
- scikit-learn MiniBatchKMeans (n_init=1, batch_size=1024, k-means++ on its default
  init_size, max_iter = the same number of passes, no early stop): fit time / passes,
  and predict (one assignment pass).
- quality of both: the mean cosine distance of every vector to its nearest centroid
  (lower is better), on the normalised centroids.
- peak memory: each method runs in its own process; the peak of what it allocates
  beyond the data (tracemalloc, which numpy reports its arrays to; started after the
  data is made).
- Beam overhead: FitKMeans with one pass on the FnApiRunner over the first --beam_docs
  vectors, against the same pass's plain work.

  .venv/bin/python -m benchmarks.kmeans_speed [--docs 1000000] [--clusters 1000]
      [--passes 2] [--sample 100000] [--beam_docs 50000]

scikit-learn is a benchmark-only dependency: pip install -e ".[bench]".
"""
import argparse
import json
import multiprocessing as mp
import os
import time
import tracemalloc

import numpy as np

DIM = 384


def make_data(n, seed=0, directions=2000):
  rng = np.random.default_rng(seed)
  centres = rng.standard_normal((directions, DIM)).astype(np.float32)
  centres /= np.linalg.norm(centres, axis=1, keepdims=True)
  x = np.empty((n, DIM), np.float32)
  step = 100_000
  for s in range(0, n, step):
    m = min(step, n - s)
    noise = rng.standard_normal((m, DIM)).astype(np.float32) * (1.7 / np.sqrt(DIM))
    v = centres[rng.integers(0, directions, m)] + noise
    x[s:s + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
  return x


def mean_distance(x, centroids, batch=65536):
  c = centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
  total = 0.0
  for s in range(0, len(x), batch):
    total += float((1.0 - (x[s:s + batch] @ c.T).max(axis=1)).sum())
  return total / len(x)


def _start_memory():
  tracemalloc.start()


def _peak_mb():
  return tracemalloc.get_traced_memory()[1] / 2 ** 20


def run_ours(args, out):
  from transforms import kmeans
  from transforms.sampling import uniform_from_id
  x = make_data(args.docs)
  ids = [str(i) for i in range(len(x))]
  _start_memory()
  res = {}
  t = time.perf_counter()
  # The sample FitKMeans takes: the smallest hashes (Top.Of with the same key).
  key = kmeans._sample_key(args.seed)
  order = sorted(range(len(x)), key=lambda i: key((ids[i], None)))[-args.sample:]
  centroids = kmeans.kmeans_plus_plus([ids[i] for i in order], x[order], args.clusters,
                                      args.seed)
  res["init_s"] = time.perf_counter() - t
  # The sample's sort over every id is this script's stand-in for Top.Of (which streams);
  # the passes' memory is measured on its own.
  del order, key
  tracemalloc.reset_peak()
  passes = []
  fn = kmeans.ClusterSumsFn()
  for _ in range(args.passes):
    t = time.perf_counter()
    acc = fn.create_accumulator()
    for s in range(0, len(x), 1024):
      batch = [(None, v) for v in x[s:s + 1024]]
      acc = fn.add_input(acc, kmeans._batch_sums(batch, centroids))
    centroids = kmeans.update(fn.extract_output(acc), centroids)
    passes.append(time.perf_counter() - t)
  res["pass_s"] = passes
  t = time.perf_counter()
  for s in range(0, len(x), 1024):
    kmeans.assign(x[s:s + 1024], centroids)
  res["assign_s"] = time.perf_counter() - t
  res["peak_mb_above_data"] = _peak_mb()  # before the evaluation's own buffers
  res["mean_distance"] = mean_distance(x, centroids)
  out.put(res)


def run_sklearn(args, out):
  from sklearn.cluster import MiniBatchKMeans
  x = make_data(args.docs)
  _start_memory()
  res = {}
  t = time.perf_counter()
  km = MiniBatchKMeans(n_clusters=args.clusters, batch_size=1024, n_init=1,
                       max_iter=args.passes, max_no_improvement=None, tol=0.0,
                       random_state=args.seed, compute_labels=False)
  km.fit(x)
  res["fit_s"] = time.perf_counter() - t
  res["passes"] = int(km.n_iter_)
  t = time.perf_counter()
  for s in range(0, len(x), 65536):
    km.predict(x[s:s + 65536])
  res["assign_s"] = time.perf_counter() - t
  res["peak_mb_above_data"] = _peak_mb()
  res["mean_distance"] = mean_distance(x, km.cluster_centers_.astype(np.float32))
  out.put(res)


def run_beam(args, out):
  import apache_beam as beam
  from apache_beam.testing.test_pipeline import TestPipeline
  from transforms import kmeans
  from transforms.records import Document
  x = make_data(args.beam_docs, seed=1)
  docs = [Document(id=str(i), text="", source=str(i), embedding=v) for i, v in enumerate(x)]
  k = min(args.clusters, args.beam_docs // 10)
  res = {"docs": len(docs), "clusters": k}
  for passes in (0, 1):
    t = time.perf_counter()
    with TestPipeline(runner="FnApiRunner") as p:
      _ = (p | beam.Create(docs, reshuffle=False)
           | kmeans.FitKMeans(k, passes, min(args.sample, len(docs)), args.seed))
    res[f"fit_{passes}_passes_s"] = time.perf_counter() - t
  res["beam_pass_s"] = res["fit_1_passes_s"] - res["fit_0_passes_s"]
  # The same pass's plain work, for the overhead ratio.
  centroids = x[:k] / np.linalg.norm(x[:k], axis=1, keepdims=True)
  t = time.perf_counter()
  fn = kmeans.ClusterSumsFn()
  acc = fn.create_accumulator()
  for s in range(0, len(x), 1024):
    acc = fn.add_input(acc, kmeans._batch_sums([(None, v) for v in x[s:s + 1024]], centroids))
  res["plain_pass_s"] = time.perf_counter() - t
  out.put(res)


def in_process(fn, args):
  ctx = mp.get_context("spawn")
  q = ctx.Queue()
  p = ctx.Process(target=fn, args=(args, q))
  p.start()
  res = q.get()
  p.join()
  return res


def build_parser():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--docs", type=int, default=1_000_000)
  ap.add_argument("--clusters", type=int, default=1000)
  ap.add_argument("--passes", type=int, default=2)
  ap.add_argument("--sample", type=int, default=100_000)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--beam_docs", type=int, default=50_000)
  ap.add_argument("--skip_beam", action="store_true")
  return ap


def main():
  args = build_parser().parse_args()
  n = args.docs
  print(f"{n:,} vectors x {DIM}, {args.clusters} clusters, {args.passes} passes, "
        f"{os.cpu_count()} CPUs", flush=True)
  ours = in_process(run_ours, args)
  print(f"ours: k-means++ on {args.sample:,}: {ours['init_s']:.1f} s; passes "
        + ", ".join(f"{s:.1f} s ({n / s:,.0f} docs/s)" for s in ours["pass_s"])
        + f"; assignment {ours['assign_s']:.1f} s ({n / ours['assign_s']:,.0f} docs/s); mean "
        f"distance {ours['mean_distance']:.4f}; peak {ours['peak_mb_above_data']:.0f} MB above "
        "the data", flush=True)
  skl = in_process(run_sklearn, args)
  per_pass = skl["fit_s"] / max(skl["passes"], 1)
  print(f"sklearn MiniBatchKMeans: fit {skl['fit_s']:.1f} s for {skl['passes']} passes "
        f"(init included; {n / per_pass:,.0f} docs/s per pass); predict "
        f"{skl['assign_s']:.1f} s ({n / skl['assign_s']:,.0f} docs/s); mean distance "
        f"{skl['mean_distance']:.4f}; peak {skl['peak_mb_above_data']:.0f} MB above the data",
        flush=True)
  ours_total = ours["init_s"] + sum(ours["pass_s"])
  ratios = {"fit_time_ours_over_sklearn": ours_total / skl["fit_s"],
            "pass_docs_per_s_ours_over_sklearn": per_pass / np.mean(ours["pass_s"]),
            "assign_docs_per_s_ours_over_sklearn": skl["assign_s"] / ours["assign_s"]}
  print("ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()), flush=True)
  out = {"docs": n, "clusters": args.clusters, "ours": ours, "sklearn": skl, **ratios}
  if not args.skip_beam:
    beam_res = in_process(run_beam, args)
    print(f"Beam FitKMeans on the FnApiRunner, {beam_res['docs']:,} documents, "
          f"{beam_res['clusters']} clusters: one Lloyd pass {beam_res['beam_pass_s']:.1f} s "
          f"against {beam_res['plain_pass_s']:.1f} s of plain work "
          f"({beam_res['beam_pass_s'] / beam_res['plain_pass_s']:.1f}x)", flush=True)
    out["beam"] = beam_res
  print(json.dumps(out))


if __name__ == "__main__":
  main()
