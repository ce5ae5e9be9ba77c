"""Does density (IPS) sampling drop near-duplicates and keep coverage? Real documents.

1. Near-duplicates: 800 WebOrganizer documents plus 30 near-copies of 20 of them (8% of
   the words dropped at random, fixed seed): 1,400 documents. Sample 20% (280) with
   key = log(u) / w, w = 1 / density, and report the share of near-copies in the sample
   (random keeps ~600/1400 = 0.43). Mean over 5 seeds (hash seed = sampling seed).
2. Coverage: an imbalanced corpus, topic sizes 100 / rank (WebOrganizer topic labels,
   23 topics, 373 documents; which topic gets which rank is shuffled per repetition).
   Sample 20% and report the normalised entropy H(topic of selected) / ln(23).
   Mean over 10 repetitions.
3. Spurious collisions: the near-duplicate test with few buckets (n/B up to 47, as at
   scale), raw density vs density(debias=True).

width = f * K * median pairwise distance (auto_bucket_width with factor f). R=1000,
B=20000. Embeddings as in sketch_accuracy.py (cached in /tmp).

  .venv/bin/python -m benchmarks.density_selection --weborganizer PATH [--grid full]
"""
import argparse
import collections

import numpy as np

from benchmarks.harness import WEBORGANIZER, add_data_argument, read_jsonl
from benchmarks.sketch_accuracy import embed_texts, groups_for
from benchmarks.sketch_reference import exact_kernel_density
from transforms.sketch_counts import sketch_from_embeddings
from transforms.sketch_hashing import SketchParams, auto_bucket_width
from transforms import sampling

ROWS, BUCKETS, RATE = 1000, 20000, 0.2


def near_copy(text, rng, drop=0.08):
  words = text.split()
  keep = np.ones(len(words), bool)
  keep[rng.choice(len(words), int(round(drop * len(words))), replace=False)] = False
  return " ".join(w for w, k in zip(words, keep) if k)


def ips_sample(ids, density, seed, k):
  w = sampling.ips_weight(density)
  keys = {i: sampling.sampling_key(seed, i, float(wi)) for i, wi in zip(ids, w)}
  return sampling.select_top_k_keys(keys, k)


def random_sample(ids, seed, k):
  return sampling.select_top_k_keys({i: sampling.sampling_key(seed, i, 1.0) for i in ids}, k)


def sketch_density(emb, k, width, seed, family):
  p = SketchParams(emb.shape[1], ROWS, BUCKETS, k, width, seed, groups_for(family, ROWS))
  return sketch_from_embeddings([emb], p).density(emb)


def exact_density(emb, k, width):
  return exact_kernel_density(emb, SketchParams(emb.shape[1], 1, 1, k, width, 0))


def entropy(labels, n_topics):
  c = np.array(list(collections.Counter(labels).values()), float)
  p = c / c.sum()
  return float(-(p * np.log(p)).sum() / np.log(n_topics))


def build_parser():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_data_argument(ap, "--weborganizer", WEBORGANIZER)
  ap.add_argument("--grid", default="full", choices=["full", "fine"],
                  help="full: K 1-8, f 0.05-0.4; fine: K 4-16, f 0.075-0.15")
  return ap


def main():
  args = build_parser().parse_args()
  records = read_jsonl(args.weborganizer)
  emb_all = embed_texts([r["text"] for r in records])

  # --- near-duplicate corpus
  rng = np.random.default_rng(0)
  pick = rng.permutation(len(records))[:800]
  base = [records[i] for i in pick]
  copies = [(f"{r['id']}#copy{j}", near_copy(r["text"], rng)) for r in base[:20]
            for j in range(30)]
  ids = [r["id"] for r in base] + [c[0] for c in copies]
  emb = np.concatenate([emb_all[pick], embed_texts([c[1] for c in copies])])
  is_copy = {i: "#copy" in i for i in ids}
  k_dup = int(RATE * len(ids))
  d_med = auto_bucket_width(emb, 1, factor=1.0)
  seeds = range(5)

  def dup_share(dens_fn):
    return float(np.mean([np.mean([is_copy[i] for i in ips_sample(ids, dens_fn(s), s, k_dup)])
                          for s in seeds]))

  # --- imbalanced topic corpora
  topics = sorted({r["topic_id"] for r in records})
  by_topic = {t: [i for i, r in enumerate(records) if r["topic_id"] == t] for t in topics}
  corpora = []
  for rep in range(10):
    r_rng = np.random.default_rng(100 + rep)
    order = r_rng.permutation(topics)
    idx = np.concatenate([r_rng.choice(by_topic[t], int(round(100 / (rank + 1))), replace=False)
                          for rank, t in enumerate(order)])
    corpora.append((rep, [records[i]["id"] for i in idx], emb_all[idx],
                    {records[i]["id"]: records[i]["topic_id"] for i in idx}))
  n_topics = len(topics)

  def coverage(dens_fn):
    out = []
    for rep, c_ids, c_emb, topic_of in corpora:
      sel = ips_sample(c_ids, dens_fn(rep, c_emb), rep, int(RATE * len(c_ids)))
      out.append(entropy([topic_of[i] for i in sel], n_topics))
    return float(np.mean(out)), float(np.std(out) / np.sqrt(len(out)))

  rand_dup = float(np.mean([np.mean([is_copy[i] for i in random_sample(ids, s, k_dup)])
                            for s in seeds]))
  rand_cov = [entropy([t[i] for i in random_sample(c, rep, int(RATE * len(c)))], n_topics)
              for rep, c, _, t in corpora]
  full_cov = np.mean([entropy(list(t.values()), n_topics) for _, _, _, t in corpora])
  print(f"near-dup corpus: {len(ids)} docs ({sum(is_copy.values())} near-copies), select "
        f"{k_dup}; median pairwise distance {d_med:.3f}")
  print(f"coverage corpora: {len(corpora[0][1])} docs, {n_topics} topics, select "
        f"{int(RATE * len(corpora[0][1]))}; entropy of the whole corpus {full_cov:.3f}")
  # headroom: IPS with the true topic sizes as the density
  oracle = []
  for rep, c, _, t in corpora:
    size = collections.Counter(t.values())
    sel = ips_sample(c, np.array([size[t[i]] for i in c], float), rep, int(RATE * len(c)))
    oracle.append(entropy([t[i] for i in sel], n_topics))
  print(f"random: near-copy share {rand_dup:.3f}; coverage entropy {np.mean(rand_cov):.3f} "
        f"+- {np.std(rand_cov) / np.sqrt(len(rand_cov)):.3f}; oracle IPS with 1/topic size: "
        f"{np.mean(oracle):.3f}")
  print(f"\n{'family':>6} {'K':>2} {'f':>5} {'width':>6} {'dup share':>10} "
        f"{'entropy':>8} {'+-':>5}")
  grid_k = (1, 2, 4, 8) if args.grid == "full" else (4, 6, 8, 12, 16)
  grid_f = (0.05, 0.1, 0.2, 0.4) if args.grid == "full" else (0.075, 0.1, 0.125, 0.15)
  families = ("exact", "indep", "R/4", "sqrt")
  settings = [(fam, k, f, f * k * d_med) for k in grid_k for f in grid_f
              for fam in families if not (fam in ("R/4", "sqrt") and k == 1)
              ]
  if args.grid == "full":
    settings += [(fam, k, None, w) for k, w in ((4, 0.5), (8, 1.0))  # the points measured first
                 for fam in families]
  for fam, k, f, width in settings:
    # f: auto width on each corpus, as the pipeline would do it from a sample
    width_of = (lambda e: width) if f is None else (
        lambda e: auto_bucket_width(e, k, factor=f))
    if fam == "exact":
      dup = dup_share(lambda s: exact_density(emb, k, width))
      cov = coverage(lambda rep, e: exact_density(e, k, width_of(e)))
    else:
      dup = dup_share(lambda s: sketch_density(emb, k, width, s, fam))
      cov = coverage(lambda rep, e: sketch_density(e, k, width_of(e), rep, fam))
    print(f"{fam:>6} {k:>2} {'' if f is None else f:>5} {width:>6.3f} {dup:>10.3f} "
          f"{cov[0]:>8.3f} {cov[1]:>5.3f}", flush=True)
  # 3. Spurious collisions: at scale n/B is large (364M docs / 20,000 buckets = 18,000 per
  # cell). Emulated here with few buckets; density(debias=True) subtracts the expectation.
  print(f"\nSpurious-collision background (K=8, auto width, groups=sqrt): near-copy share")
  print(f"{'B':>6} {'n/B':>5} {'raw':>6} {'debiased':>9}")
  width = auto_bucket_width(emb, 8)
  for buckets in (20000, 500, 100, 30):
    shares = {False: [], True: []}
    for s in seeds:
      p = SketchParams(emb.shape[1], ROWS, buckets, 8, width, s, groups_for("sqrt", ROWS))
      sketch = sketch_from_embeddings([emb], p)
      for debias in (False, True):
        dens = np.maximum(sketch.density(emb, debias=debias), 1.0)
        shares[debias].append(np.mean([is_copy[i] for i in ips_sample(ids, dens, s, k_dup)]))
    print(f"{buckets:>6} {len(ids) / buckets:>5.1f} {np.mean(shares[False]):>6.3f} "
          f"{np.mean(shares[True]):>9.3f}", flush=True)
  print("\nexact: IPS with the exact kernel sum_y p(|x-y|)^K (what the sketch estimates); "
        "indep: independent rows; R/4, sqrt: rows sharing R/4 or ceil(sqrt(R)) projection "
        "groups.\ndup share: lower is better (random ~0.43); entropy: higher is better.")


if __name__ == "__main__":
  main()
