"""The topic head (issue 31): its accuracy, the topic coverage that --balance_by=topic
buys on imbalanced corpora, and its cost per document against the embedding it reuses.

1. Accuracy: the bundled head's nested cross-validation (recorded in its provenance by
   scripts/fit_topic_head.py: L2 chosen by an inner 4-fold CV on each outer training
   set, accuracy on the outer fold), and a head fitted here on half A of the dev pages
   (L2 chosen by 5-fold CV on A only) scored on half B.
2. Coverage: imbalanced corpora cut from half B only (23 topics, round(60 / rank)
   documents per topic, ranks shuffled per repetition; benchmarks/cluster_methods.py's
   corpora), --keep kept, compared by normalised topic entropy of the selection
   (H / ln 23) and its paired gain over random with a 95% t interval across
   repetitions: random; balanced and balanced_far on k-means clusters (the job's auto
   rule sqrt(n) clusters, 5 Lloyd passes); balance_by=topic with the topics the head
   fitted on A predicts, each topic's quota filled at random, far from the cluster
   centroid (`balanced_far`), or most confident first (`balanced`); and the ceiling,
   the cap over the true topics. The fill `balanced` uses is chosen on corpora cut from
   half A (with out-of-fold topics: each page's topic from a head that never saw it),
   then reported on half B. The head never sees a page of half B.
3. Cost: the head on a batch of embeddings (per document) against embedding those
   documents with the bundled MiniLM at 128 tokens, in the same process.

  .venv/bin/python -m benchmarks.topic_bench --weborganizer PATH [--reps 40]
      [--embeddings_cache /tmp/weborg_minilm128.npz]
"""
import argparse
import json
import time

import numpy as np

from benchmarks import cluster_methods as cm
from benchmarks.harness import WEBORGANIZER, add_data_argument, read_jsonl
from transforms.algorithms import topic_fit as fth
from transforms.sampling import uniform_from_id


def fit_on_half(ids, x, y, seed=0, folds=5):
  """(W, b, classes, l2): the head fitted on these documents, L2 chosen by CV on them."""
  classes = np.unique(y)
  f = fth.stratified_folds(ids, y, folds, seed)
  table, l2 = fth.choose_l2(x, y, classes, f, fth.L2_GRID)
  w, b = fth.fit_softmax(x, y, classes, l2)
  return w, b, classes, l2, table


FILLS = ("random", "far", "confident")


def coverage(records, x, pool, predicted, confidence, reps, keep, label,
             sample_size=100_000):
  """{method: summary} on corpora cut from the documents in `pool` (indices)."""
  pools = cm.topic_pools(records, pool)
  n_topics = len({r["topic_id"] for r in records})
  corpora, short = cm.make_corpora(records, x, pools, 60, 1.0, reps, keep, sample_size,
                                   n_topics)
  cm.describe(corpora, short, f"{label} corpora, keep {keep}")
  index = {r["id"]: i for i, r in enumerate(records)}
  rows = {}
  for c in corpora:
    cn = c.rule("sqrt(n)")
    labels, dist = c.labels(cn, 5)
    gi = np.array([index[i] for i in c.ids])
    _, topic = np.unique(predicted[gi], return_inverse=True)
    far = -dist + 1e-12 * c.u
    conf = -confidence[gi] + 1e-12 * c.u
    picks = {
        "random": cm.select(c, ("random", {})),
        "balanced (clusters)": cm.balanced(labels, c.k, c.seed, c.u),
        "balanced_far (clusters)": cm.balanced(labels, c.k, c.seed, c.u, order_key=far),
        "topic, random fill": cm.balanced(topic, c.k, c.seed, c.u, prefix="group"),
        "topic, far fill": cm.balanced(topic, c.k, c.seed, c.u, order_key=far,
                                       prefix="group"),
        "topic, confident fill": cm.balanced(topic, c.k, c.seed, c.u, order_key=conf,
                                             prefix="group"),
        "ceiling (true topics)": cm.select(c, ("ceiling", {})),
    }
    for name, sel in picks.items():
      rows.setdefault(name, []).append(c.metrics(sel))
  res = {name: {"H": np.array([h for h, _ in v]), "cov": np.array([cv for _, cv in v])}
         for name, v in rows.items()}
  return {name: cm.summary(res, name) for name in res}


def print_table(res):
  ceiling = res["ceiling (true topics)"]["dH"]
  print(f"{'method':<30} {'H/lnT':>6} {'gain vs random [95% CI]':>26} {'of ceiling':>10}")
  for name, s in res.items():
    print(f"{name:<30} {s['H']:6.3f} {s['dH']:+7.3f} [{s['lo']:+.3f}, {s['hi']:+.3f}] "
          f"{s['dH'] / ceiling if ceiling else float('nan'):10.2f}", flush=True)


def out_of_fold(ids, x, y, classes, l2, seed=0, folds=5):
  """Out-of-fold (topic, confidence) on these documents: each fold predicted by a head
  fitted on the others (what a head would say of pages it never saw)."""
  f = fth.stratified_folds(ids, y, folds, seed)
  topic, conf = np.zeros(len(y), np.int64), np.zeros(len(y))
  for k in np.unique(f):
    w, b = fth.fit_softmax(x[f != k], y[f != k], classes, l2)
    p = fth.probabilities(w, b, x[f == k])
    topic[f == k], conf[f == k] = classes[p.argmax(1)], p.max(1)
  return topic, conf


def cost(texts, head, batch=64, rounds=3):
  """(seconds per document: embedding at 128 tokens, the head on those embeddings)."""
  from models.embeddings import EmbeddingConfig, load_embedder
  emb = load_embedder(EmbeddingConfig(max_tokens=128, device="cpu"))
  texts = texts[:batch]
  emb.embed(texts[:8])  # warm up
  t_emb, t_head = [], []
  for _ in range(rounds):  # interleaved: drift falls on both
    t0 = time.perf_counter()
    v = np.stack(emb.embed(texts))
    t_emb.append((time.perf_counter() - t0) / len(texts))
    t0 = time.perf_counter()
    for _ in range(100):
      head.predict(v)
    t_head.append((time.perf_counter() - t0) / (100 * len(texts)))
  return float(np.median(t_emb)), float(np.median(t_head))


def build_parser():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_data_argument(ap, "--weborganizer", WEBORGANIZER)
  ap.add_argument("--reps", type=int, default=40)
  ap.add_argument("--keep", default="0.2,0.1")
  ap.add_argument("--embeddings_cache", default="/tmp/weborg_minilm128.npz")
  ap.add_argument("--skip_cost", action="store_true")
  return ap


def main(argv=None):
  args = build_parser().parse_args(argv)
  from models import topic_head as th

  records = read_jsonl(args.weborganizer)
  x = cm.embed_corpus(records, args.embeddings_cache)
  ids = [r["id"] for r in records]
  y = np.array([r["topic_id"] for r in records], np.int64)
  half = np.array([uniform_from_id(cm.SPLIT_SEED, i) < 0.5 for i in ids])
  a, b = np.flatnonzero(half), np.flatnonzero(~half)
  out = {}

  bundled = th.load_topic_head("bundled")
  nested = bundled.provenance["cross_validation"]["nested"]
  out["bundled_nested_cv_accuracy"] = nested["accuracy"]
  print(f"bundled head: nested CV accuracy {nested['accuracy']} (outer folds "
        f"{[f['accuracy'] for f in nested['outer_folds']]}), l2 "
        f"{bundled.provenance['cross_validation']['chosen_l2']}", flush=True)

  w, bias, classes, l2, table = fit_on_half([ids[i] for i in a], x[a], y[a])
  predicted = fth.predict(w, bias, classes, x)
  acc_b = float((predicted[b] == y[b]).mean())
  out["half_a_head"] = {"l2": l2, "accuracy_on_b": round(acc_b, 4),
                        "cv_on_a": {f"{k:g}": round(v, 4) for k, v in table.items()}}
  print(f"head fitted on half A ({len(a)} pages, l2 {l2:g} by CV on A): accuracy on half B "
        f"({len(b)} pages) {acc_b:.4f}", flush=True)

  keeps = [float(k) for k in args.keep.split(",")]
  # The fill is chosen on half A (out-of-fold topics: the head never saw the page),
  # by the mean gain over the keep fractions; half B reports.
  topic_a, conf_a = out_of_fold([ids[i] for i in a], x[a], y[a], classes, l2)
  topic_all, conf_all = np.zeros(len(y), np.int64), np.zeros(len(y))
  topic_all[a], conf_all[a] = topic_a, conf_a
  p_b = fth.probabilities(w, bias, x[b])
  topic_all[b], conf_all[b] = predicted[b], p_b.max(1)
  gains = {fill: [] for fill in FILLS}
  for keep in keeps:
    res = coverage(records, x, a, topic_all, conf_all, args.reps, keep, "half A (tuning)")
    print_table(res)
    for fill in FILLS:
      gains[fill].append(res[f"topic, {fill} fill"]["dH"])
  chosen = max(FILLS, key=lambda f: (np.mean(gains[f]), f))
  out["fill_chosen_on_a"] = chosen
  print(f"\nfill chosen on half A: {chosen} "
        f"({ {f: round(float(np.mean(g)), 4) for f, g in gains.items()} })", flush=True)
  for keep in keeps:
    res = coverage(records, x, b, topic_all, conf_all, args.reps, keep, "half B (report)")
    print_table(res)
    out[f"half_b_keep_{keep:g}"] = {name: {k: round(v, 4) for k, v in s.items()}
                                    for name, s in res.items()}
    ceiling = res["ceiling (true topics)"]["dH"]
    s = res[f"topic, {chosen} fill"]
    print(f"balance_by=topic ({chosen} fill) at keep {keep:g}: {s['dH']:+.3f} over random, "
          f"{s['dH'] / ceiling:.2f} of the true-topic ceiling", flush=True)

  if not args.skip_cost:
    t_emb, t_head = cost([r["text"] for r in records], bundled)
    out["cost"] = {"embedding_s_per_doc": t_emb, "head_s_per_doc": t_head,
                   "head_over_embedding": t_head / t_emb}
    print(f"cost per document: embedding {t_emb * 1e3:.2f} ms, topic head "
          f"{t_head * 1e6:.2f} us ({t_head / t_emb:.5f} of the embedding)", flush=True)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
