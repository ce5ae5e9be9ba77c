"""The Ask-LLM cascade (--judge_fraction) on the FineWeb-Edu dev file: how much of the full
judge's selection the judged documents hold (true recall), whether the audit's estimate
and 95% interval are calibrated, the judge documents saved, and the selection's mean
`edu_score` against the full judge and the cheap signal alone.

Two judges, each with the cheap signal the job would put in front of it:
  bundled   the bundled SmolLM2-135M judge (its ask_llm_score read from a finished
            `--sampler=ask_llm` run's scores/: --judge_run) behind the bundled quality
            head, as the job runs it (the head's score of the same run's documents)
  strong    a stand-in for a strong judge: the 70B `edu_score` of the dev file (ties
            broken by a hash of the id), behind out-of-fold predictions of a head with
            the bundled head's setting (256 tokens, l2 0.03; 5 folds), since the bundled
            head was fitted on these very pages
Each (F, keep) is simulated offline with the pipeline's own functions
(transforms/algorithms/cascade_recall.py: the cut, the hash-chosen audit, the estimate),
over --audit_seeds seeds of the audit, so the interval's coverage is measured.
--cascade_run (a finished run with --judge_fraction on the same documents) is checked
against the simulation: the same judged documents and the same estimate.

    .venv/bin/python -m beam_pipelines.select_data --input=DEV300 --sampler=ask_llm \\
      --output=out/cb/full --cache=out/cb/cache --id_field=id --keep_fraction=0.2
    .venv/bin/python -m benchmarks.cascade_bench --data DATA/fineweb_edu_annotated_dev.jsonl \\
      --work out/cb --judge_run out/cb/full
"""
import argparse
import glob
import hashlib
import json
import os

import numpy as np

from benchmarks.harness import add_data_argument
from transforms.algorithms.cascade_recall import (cascade_masks, estimate_recall, keep_k,
                                                  true_recall)

FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5)  # 0.4: the goal (judge on <= 40%)
KEEPS = (0.1, 0.2)
HEAD_TOKENS, HEAD_L2 = 256, 0.03  # the bundled head's setting


def _rows(pattern):
  return [json.loads(line) for f in sorted(glob.glob(pattern)) for line in open(f)
          if line.strip()]


def _jitter(ids):
  """A tie-break in [0, 0.01) from a hash of the id (edu_score is an integer 0-4)."""
  return np.array([int.from_bytes(hashlib.blake2b(i.encode(), digest_size=8).digest(),
                                  "big") / 2.0 ** 64 * 0.01 for i in ids])


def _top(scores, ids, k):
  order = np.lexsort((np.asarray(ids), -np.asarray(scores, float)))
  mask = np.zeros(len(scores), bool)
  mask[order[:k]] = True
  return mask


def _tie_aware_recall(judge_int, cascade_sel, full_sel):
  """The share of the full selection the cascade's matches up to ties of the judge's
  integer score (documents of equal score are interchangeable)."""
  hit = 0
  for s in np.unique(judge_int[full_sel]):
    hit += min((judge_int[cascade_sel] == s).sum(), (judge_int[full_sel] == s).sum())
  return hit / full_sel.sum()


def simulate(ids, cheap, judge, edu, audit_fraction, seeds, judge_int=None):
  """One row per (keep, F): recall (cut and audit), the estimate's calibration, the
  judge documents saved and the selections' mean edu_score."""
  ids = np.asarray(ids)
  n = len(ids)
  rows = []
  for keep in KEEPS:
    k = keep_k(n, keep)
    full = _top(judge, ids, k)
    head_only = _top(cheap, ids, k)
    for fraction in FRACTIONS:
      if fraction < keep:
        continue
      recalls, estimates, covered, widths, judged, mean_edu, tie_recalls = ([] for _ in range(7))
      for seed in range(seeds):
        cut, audited = cascade_masks(cheap, ids, fraction, audit_fraction, seed)
        judged_mask = cut | audited
        truth = true_recall(judge, judged_mask, k, ids)
        est = estimate_recall(judge[cut], judge[audited], int((~cut).sum()), k)
        # The cascade's selection: judged documents by the judge, then the rest by the
        # cheap score (k <= the cut, so never reached here).
        sel = _top(np.where(judged_mask, judge, -np.inf), ids, k)
        recalls.append(truth)
        judged.append(judged_mask.sum())
        mean_edu.append(edu[sel].mean())
        if judge_int is not None:
          tie_recalls.append(_tie_aware_recall(judge_int, sel, full))
        if est.recall is not None:
          estimates.append(est.recall)
          covered.append(est.low - 1e-9 <= truth <= est.high + 1e-9)
          widths.append(est.high - est.low)
      cut_only = true_recall(judge, cascade_masks(cheap, ids, fraction, 0.0, 0)[0], k, ids)
      rows.append({
          "keep": keep, "judge_fraction": fraction, "k": k,
          "recall_of_cut": round(cut_only, 4),
          "recall": round(float(np.mean(recalls)), 4),
          "estimate_mean": round(float(np.mean(estimates)), 4) if estimates else None,
          "estimate_bias": (round(float(np.mean(estimates) - np.mean(recalls[:len(estimates)])), 4)
                            if estimates else None),
          "coverage_95": round(float(np.mean(covered)), 3) if covered else None,
          "interval_width": round(float(np.mean(widths)), 3) if widths else None,
          "judged_share": round(float(np.mean(judged)) / n, 4),
          "judge_documents_saved": round(n - float(np.mean(judged)), 1),
          "mean_edu_cascade": round(float(np.mean(mean_edu)), 3),
          "mean_edu_full_judge": round(float(edu[full].mean()), 3),
          "mean_edu_cheap_alone": round(float(edu[head_only].mean()), 3),
          **({"tie_aware_recall": round(float(np.mean(tie_recalls)), 4)}
             if tie_recalls else {})})
  return rows


def _embeddings(texts, work):
  from scripts import fit_quality_head as fit
  return fit.embed_all(texts, [HEAD_TOKENS], "default",
                       cache_dir=os.path.join(work, "embeddings"))[HEAD_TOKENS]


def strong_judge(ids, texts, edu, args):
  from scripts import fit_quality_head as fit
  x = _embeddings(texts, args.work)
  folds = fit.stratified_folds(ids, edu, 5, 0)
  cheap = fit.oof_predictions(x, edu, folds, HEAD_L2)
  judge = edu + _jitter(ids)
  return {"documents": len(ids), "cheap": "out-of-fold head (256 tokens, l2 0.03)",
          "rows": {str(a): simulate(ids, cheap, judge, edu, a, args.audit_seeds,
                                    judge_int=edu.astype(int))
                   for a in args.audit_fractions}}


def bundled_judge(ids, texts, edu, args):
  """The bundled judge's scores from --judge_run and the bundled head's on the same
  documents (computed here as the job computes them)."""
  from transforms import quality_head as qh
  scores = {r["id"]: r.get("ask_llm_score") for r in _rows(os.path.join(
      args.judge_run, "scores", "*.jsonl"))}
  keep = [i for i, d in enumerate(ids) if scores.get(d) is not None]
  ids = [ids[i] for i in keep]
  texts = [texts[i] for i in keep]
  edu = edu[keep]
  judge = np.array([scores[d] for d in ids], float)
  cheap = qh.load_head("bundled").predict(_embeddings(texts, args.work))
  out = {"documents": len(ids), "cheap": "bundled head",
         "rows": {str(a): simulate(ids, cheap, judge, edu, a, args.audit_seeds)
                  for a in args.audit_fractions}}
  if args.cascade_run:
    out["pipeline_check"] = pipeline_check(ids, judge, args.cascade_run)
  return out


def pipeline_check(ids, judge, run):
  """A finished --judge_fraction run against the simulation from its own cheap scores."""
  metrics = json.load(open(os.path.join(run, "metrics.json")))
  c = metrics["cascade"]
  rows = {r["id"]: r for r in _rows(os.path.join(run, "scores", "*.jsonl"))}
  run_ids = [i for i in ids if i in rows]
  cheap = np.array([rows[i]["cascade_score"] for i in run_ids], float)
  judged_run = np.array([rows[i]["cascade_judged"] in (1, 2) for i in run_ids])
  seed = metrics["options"].get("seed", 0) or 0
  cut, audited = cascade_masks(cheap, run_ids, c["judge_fraction"], c["audit_fraction"], seed)
  where = {d: n for n, d in enumerate(ids)}
  j = judge[[where[i] for i in run_ids]]
  est = estimate_recall(j[cut], j[audited], int((~cut).sum()), c["recall"]["k"])
  return {"documents": len(run_ids), "judged_in_run": int(judged_run.sum()),
          "same_judged_documents": bool(((cut | audited) == judged_run).all()),
          "run_recall": c["recall"], "simulated_recall": est.to_dict(),
          "true_recall": round(true_recall(j, cut | audited, c["recall"]["k"], run_ids), 4)}


def build_parser():
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  add_data_argument(p)
  p.add_argument("--work", required=True, help="a directory for cached embeddings")
  p.add_argument("--judge_run", help="a finished --sampler=ask_llm run on (some of) --data "
                                     "with the bundled judge: its scores/ are the judge")
  p.add_argument("--cascade_run", help="a finished --judge_fraction run on the same "
                                       "documents, checked against the simulation")
  p.add_argument("--audit_fractions", default="0.02,0.1",
                 type=lambda s: [float(v) for v in s.split(",")])
  p.add_argument("--audit_seeds", type=int, default=200)
  p.add_argument("--out", help="write the results here as JSON")
  return p


def main(argv=None):
  args = build_parser().parse_args(argv)
  from scripts import fit_quality_head as fit
  ids, texts, edu = fit.load_documents(args.data)
  result = {"strong": strong_judge(ids, texts, edu, args)}
  if args.judge_run:
    result["bundled"] = bundled_judge(ids, texts, edu, args)
  text = json.dumps(result, indent=1)
  if args.out:
    with open(args.out, "w") as f:
      f.write(text)
  for name, part in result.items():
    print(f"\n{name} judge ({part['documents']} documents, cheap: {part['cheap']})")
    for audit, rows in part["rows"].items():
      print(f" audit {audit}")
      print("  keep  F    recall(cut) recall  est   cover width judged saved  "
            "edu: cascade full cheap" + ("  tie-aware" if "tie_aware_recall" in rows[0] else ""))
      for r in rows:
        print(f"  {r['keep']:.1f}  {r['judge_fraction']:.1f}  {r['recall_of_cut']:.3f}"
              f"       {r['recall']:.3f}  {r['estimate_mean'] or float('nan'):.3f} "
              f"{r['coverage_95'] or float('nan'):.2f}  {r['interval_width'] or float('nan'):.2f}"
              f"  {r['judged_share']:.3f}  {r['judge_documents_saved']:6.1f}"
              f"  {r['mean_edu_cascade']:.3f} {r['mean_edu_full_judge']:.3f} "
              f"{r['mean_edu_cheap_alone']:.3f}"
              + (f"  {r['tie_aware_recall']:.3f}" if "tie_aware_recall" in r else ""))
    if "pipeline_check" in part:
      print(" pipeline check:", json.dumps(part["pipeline_check"]))


if __name__ == "__main__":
  main()
