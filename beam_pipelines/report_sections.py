"""report.html's sections, each a piece of HTML drawn from metrics.json (the counts) and
report.json (the statistics): the run card, the funnel, the scores, the input files, the
clusters, the examples, the quality head and the density sketch.
"""
from __future__ import annotations

import hashlib
import json
import platform
from importlib import metadata
from typing import Any, Dict, Optional

from beam_pipelines import precision_options
from beam_pipelines.options import JobConfig
from beam_pipelines.report_charts import _bar_chart, _histogram_chart, _scatter_chart
from beam_pipelines.report_html import _esc, _num, _table
from transforms import signals

_PERCENTILES = ("p1", "p10", "p50", "p90", "p99")
_LOW_HELD_BACK = 100  # below this many held-back documents the head's AUC is flagged
# Counts that a stage's documents/s is computed from (stage clock name -> count name).
_STAGE_COUNTS = {"read": "read", "scored": "scored", "perplexity": "perplexity",
                 "embedded": "embedded", "quality_head": "valid", "density": "valid",
                 "rank": "valid", "write_selected": "selected"}
# The model namespace of a model stage's clock (its documents inferred are counted there).
_STAGE_MODELS = {"scored": "ask_llm", "perplexity": "perplexity", "embedded": "embeddings"}
# A score's description comes from the registry of signals (transforms/signals.py).
_CHARS = {"chars": "document length in characters"}
_VERSIONED = ("askllm-density-select", "apache-beam", "torch", "transformers", "numpy",
              "tensorflow")


def _versions() -> Dict[str, str]:
  out = {"python": platform.python_version()}
  for dist in _VERSIONED:
    try:
      out[dist] = metadata.version(dist)
    except metadata.PackageNotFoundError:
      pass
  return out


def _run_card(job: JobConfig, metrics: dict, model_ids: Dict[str, Any]) -> str:
  counts = metrics["counts"]
  keep = (f"--keep_tokens={job.keep_tokens:,}" if job.keep_tokens
          else f"--keep_count={job.keep_count}" if job.keep_count is not None
          else f"--keep_fraction={job.keep_fraction}")
  rows = [("sampler", f"<b>{_esc(job.sampler.name)}</b>: {_esc(job.sampler.help)}"),
          ("keep", f"{_esc(keep)} → k = {counts.get('selected', 0):,} of "
                   f"{counts.get('valid', 0):,} valid documents"),
          ("seed", _esc(job.seed)),
          ("input", "<br>".join(_esc(p) for p in job.patterns)),
          ("output", _esc(job.output))]
  config = metrics.get("config_file")
  if config:  # --config=FILE
    rows.append(("config file", f"{_esc(config['path'])}<br><span class='muted'>sha256 "
                                f"{_esc(config['sha256'])}</span>"))
  for role, name in metrics.get("models", {}).items():
    identity = model_ids.get(role)
    rows.append((f"{role} model", _esc(name) + (
        f'<br><span class="muted">{_esc(json.dumps(identity, sort_keys=True)[:400])}</span>'
        if identity else "")))
  ask = metrics.get("ask_llm")
  if ask:
    digest = hashlib.sha256(ask["prompt"].encode("utf-8")).hexdigest()[:16]
    template = ask.get("chat_template_used", ask["chat_template"])
    if "chat_template_used" not in ask and template == "auto":
      template = "auto (decided when the model loads: not loaded in this run)"
    rows.append(("prompt", f"sha256 {digest}; chat template {_esc(template)}; "
                           f"score {_esc(ask['score'])}<pre>{_esc(ask['prompt'])}</pre>"))
  precision = precision_options.report_line(metrics)
  if precision:
    rows.append(("precision", _esc(precision)))
  rows.append(("versions", _esc(", ".join(f"{k} {v}" for k, v in _versions().items()))))
  if "wall_time_s" in metrics:
    rows.append(("wall time", f"{metrics['wall_time_s']:.1f} s"))
  card = _table(("", ""), rows)
  stage_times = metrics.get("stage_wall_time_s") or {}
  if stage_times:
    stage_rows = []
    for stage, seconds in sorted(stage_times.items(), key=lambda kv: -kv[1]):
      n = _stage_documents(stage, counts)
      rate = n / seconds if n and seconds > 0 else None
      stage_rows.append((_esc(stage), seconds, n, rate))
    card += ("<p class='muted'>Per stage: from its first to its last document in any "
             "worker (stages overlap).</p>"
             + _table(("stage", "wall time (s)", "documents", "documents/s"), stage_rows,
                      numeric=(1, 2, 3)))
  return "<h2 id='run'>Run</h2>" + card


def _stage_documents(stage: str, counts: dict) -> Optional[int]:
  key = _STAGE_COUNTS.get(stage)
  if key is None:
    return None
  model = _STAGE_MODELS.get(stage)
  if model in counts.get("inferred", {}):
    return counts["inferred"][model]  # what the model actually ran on, not the cached
  value = counts.get(key)
  return value if isinstance(value, int) else None


def _funnel(metrics: dict, stats: Optional[dict]) -> str:
  counts = metrics["counts"]
  rows = [("read", counts.get("read", 0))]
  for reason, n in sorted(counts.get("rejected_by_reason", {}).items()):
    rows.append((f"&nbsp;&nbsp;rejected: {_esc(reason)}", n))
  rows.append(("valid", counts.get("valid", 0)))
  for stage in sorted(counts.get("from_cache", {})):
    cached, inferred = counts["from_cache"][stage], counts.get("inferred", {}).get(stage, 0)
    rows.append((f"&nbsp;&nbsp;{_esc(stage)}: scores from the cache / by the model",
                 f"{cached:,} / {inferred:,}"))
  for stage, n in counts.get("scoring_failed", {}).items():
    rows.append((f"&nbsp;&nbsp;{_esc(stage)}: model failed (ranked last)", n))
  if "quality_pool" in counts:
    rows.append(("quality pool", counts["quality_pool"]))
  rows.append(("<b>selected</b>", counts.get("selected", 0)))
  if stats:
    chars = stats["chars"]
    share = chars["selected"] / chars["all"] if chars["all"] else 0.0
    rows.append(("characters: selected / all",
                 f"{chars['selected']:,} / {chars['all']:,} ({share:.1%})"))
  if "selected_tokens" in counts:
    rows.append(("tokens selected", counts["selected_tokens"]))
  table = _table(("step", "documents"),
                 [(label, _num(n) if isinstance(n, int) else n) for label, n in rows])
  labels = ["read", "valid"] + (["quality pool"] if "quality_pool" in counts else []) + [
      "selected"]
  values = [counts.get("read", 0), counts.get("valid", 0)] + (
      [counts["quality_pool"]] if "quality_pool" in counts else []) + [
          counts.get("selected", 0)]
  chart = _bar_chart("funnel", labels, values, "documents")
  out = "<h2 id='funnel'>Funnel</h2>" + f"<div class='grid'><div>{table}</div>" \
        f"<div>{chart}</div></div>"
  if not counts.get("accounted", True):
    out += "<div class='warn'>read ≠ valid + rejected: some records are unaccounted for.</div>"
  examples = (stats or {}).get("rejected_examples") or {}
  if examples:
    rows = []
    for reason, items in examples.items():
      for item in items:
        rows.append((_esc(reason), _esc(item["source"]),
                     f"<div class='excerpt'>{_esc(item['excerpt'])}</div>",
                     _esc(item.get("detail", ""))))
    out += ("<h3>Rejected records (a few per reason; all are in rejected/)</h3>"
            + _table(("reason", "source", "excerpt", "detail"), rows))
  return out


def _scores(stats: dict) -> str:
  parts = ["<h2 id='scores'>Scores</h2>",
           "<p class='muted'>Every document (grey) against the selected ones (blue); "
           "percentiles of the selected (kept) and the others (dropped). Lengths and "
           "scores are binned in the pipeline, over all documents.</p>"]
  ranked_by = stats.get("ranked_by")
  # The score the sampler ranks by first, then the others as the job lists them, length last.
  order = sorted(stats["scores"], key=lambda n: (
      n != ranked_by, n == "chars",
      stats["score_names"].index(n) if n in stats["score_names"] else 0))
  chars_log = stats["scores"].get("chars", {}).get("histogram", {}).get("log", False)
  for name in order:
    entry = stats["scores"][name]
    cutoff = stats.get("cutoff") if name == ranked_by else None
    rows = []
    for part in ("kept", "dropped"):
      pct = entry["percentiles"].get(part)
      if pct:
        rows.append([part, entry["min"][part]] + [pct[p] for p in _PERCENTILES]
                    + [entry["max"][part]])
    table = _table(["", "min"] + list(_PERCENTILES) + ["max"], rows,
                   numeric=range(1, len(_PERCENTILES) + 3))
    note = {**_CHARS, **signals.descriptions()}.get(name, "")
    if cutoff is not None:
      direction = "at least" if stats.get("higher_is_better", True) else "at most"
      note += f"; the sampler kept every document with {name} {direction} {_num(cutoff)}"
    scatter = (_scatter_chart(name, stats["scatter"]["columns"], stats["scatter"]["points"],
                              chars_log) if name != "chars" else "")
    parts.append(f"<h3 id='score-{_esc(name)}'>{_esc(name)}</h3><p class='muted'>"
                 f"{_esc(note)}</p><div class='grid'><div>"
                 f"{_histogram_chart(name, entry, cutoff)}</div>"
                 f"<div>{scatter or ''}</div></div>{table}")
  n = len(stats["scatter"]["points"])
  parts.append(f"<p class='muted'>Scatter plots: {n:,} documents chosen by a hash of "
               "(seed, id), the same on every run.</p>")
  return "".join(parts)


def _files(stats: dict) -> str:
  files = stats["files"]
  if not files:
    return ""
  labels = [_short(f["file"]) for f in files]
  shares = [f["selected"] / f["documents"] if f["documents"] else 0.0 for f in files]
  chart = _bar_chart("files", labels, [100 * s for s in shares], "% of the file selected")
  rows = [(_esc(f["file"]), f["documents"], f["selected"], f"{s:.1%}")
          for f, s in zip(files, shares)]
  more = stats["file_count"] - len(files)
  return ("<h2 id='files'>Selected share per input file</h2>"
          + (f"<p class='muted'>The {len(files)} largest of {stats['file_count']:,} "
             "files.</p>" if more > 0 else "")
          + chart + _table(("file", "documents", "selected", "share"), rows,
                           numeric=(1, 2)))


def _clusters(stats: dict, metrics: dict) -> str:
  clusters = stats.get("clusters") or []
  if not clusters:
    return ""
  info = metrics.get("clusters") or {}
  shares = [c["selected"] / c["documents"] if c["documents"] else 0.0 for c in clusters]
  labels = [f"{c['cluster']} ({c['documents']:,} docs)" for c in clusters]
  chart = _bar_chart("clusters", labels, [100 * s for s in shares],
                     "% of the cluster selected")
  rows = [(c["cluster"], c["documents"], c["selected"], f"{s:.1%}")
          for c, s in zip(clusters, shares)]
  facts = []
  if info:
    facts.append(f"{info.get('clusters', 0):,} clusters (k-means on the embeddings"
                 + (f", from {_esc(info['clusters_from'])}" if info.get("clusters_from")
                    else "") + f"); sizes min {info.get('min', 0):,}, median "
                 f"{info.get('median', 0):,g}, max {info.get('max', 0):,}; "
                 f"{info.get('empty', 0):,} empty.")
    if info.get("balanced"):
      b = info["balanced"]
      facts.append(f"Balanced cap {b['cap']:g}: each cluster gives min(cap, size) of its "
                   f"documents, {b['k']:,} in all; {b['capped_clusters']:,} clusters were "
                   "larger than their quota.")
  more = stats.get("cluster_count", len(clusters)) - len(clusters)
  return ("<h2 id='clusters'>Selected share per cluster</h2>"
          + "".join(f"<p class='muted'>{f}</p>" for f in facts)
          + (f"<p class='muted'>The {len(clusters)} largest of "
             f"{stats['cluster_count']:,} clusters.</p>" if more > 0 else "")
          + chart + _table(("cluster", "documents", "selected", "share"), rows,
                           numeric=(0, 1, 2)))


def _short(path: str, width: int = 48) -> str:
  return path if len(path) <= width else "…" + path[-(width - 1):]


def _examples(stats: dict) -> str:
  names = stats["score_names"]
  by = stats.get("order_name")
  if stats.get("ranked_by"):
    groups = (("top", "The top selected documents"),
              ("last_selected", "The last selected (at the cutoff)"),
              ("first_not_selected", "The first not selected (just past the cutoff)"),
              ("bottom", f"The bottom by {by}"))
  elif by:  # a draw from a quality pool
    groups = (("top", "The first drawn"), ("last_selected", "The last drawn"),
              ("first_not_selected", f"The best not selected by {by} (in the pool, not "
                                     "drawn)"),
              ("bottom", f"The bottom by {by}"))
  else:  # a draw: no order among the documents not drawn
    groups = (("top", "The first drawn"), ("last_selected", "The last drawn"))
  out = ["<h2 id='examples'>Examples</h2>"]
  for key, title in groups:
    items = stats["examples"].get(key) or []
    if key in ("last_selected",):
      items = sorted(items, key=lambda e: e["rank"])
    if not items:
      continue
    rows = []
    for e in items:
      scores = ", ".join(f"{n}={_num(e['scores'][n])}" for n in names if n in e["scores"])
      rows.append(("–" if e["rank"] is None else e["rank"], _esc(e["id"][:24]),
                   f"<div class='excerpt'>{_esc(e['excerpt'])}</div>", _esc(scores)))
    out.append(f"<h3>{title}</h3>" + _table(("rank", "id", "excerpt", "scores"), rows))
  return "".join(out)


def _quality_head(metrics: dict) -> str:
  head = metrics.get("quality_head")
  if not head:
    return ""
  if "applied" in head:  # a saved or the bundled head: its own recorded fit, if any
    cv = head.get("cross_validated_fit") or {}
    rows = [("head", head["applied"]), ("teacher", head.get("teacher")),
            ("fitted on documents", head.get("fitted_on_documents")),
            ("embedding tokens", head.get("embedding_max_tokens")),
            (f"AUC ({cv.get('folds')}-fold CV on {cv.get('documents')} documents)",
             cv.get("auc")), ("AUC 95% interval", _interval(cv.get("auc_95"))),
            ("Spearman", cv.get("spearman"))] if cv else [
            ("head", head["applied"]), ("teacher", head.get("teacher")),
            ("fitted on documents", head.get("fitted_on_documents"))]
    return ("<h2 id='quality-head'>Quality head</h2>"
            f"<p class='muted'>{_esc(cv.get('auc_definition', 'applied, not fitted in this run'))}</p>"
            + _table(("", ""), [(k, _num(v) if not isinstance(v, str) else _esc(v))
                                for k, v in rows if v is not None]))
  fit = head.get("fit_on_held_back", {})
  n = fit.get("held_back", 0)
  rows = [("teacher documents", head.get("teacher_documents")), ("held back", n),
          ("AUC", fit.get("auc")), ("AUC 95% interval", _interval(fit.get("auc_95"))),
          ("Spearman", fit.get("spearman"))]
  warn = ""
  if n < _LOW_HELD_BACK:
    warn = (f"<div class='warn'><b>Only {n} held-back documents</b>: the AUC above is not "
            f"reliable below {_LOW_HELD_BACK}. Give the head more teacher documents (a "
            "larger --teacher_fraction, or more records with --teacher_field).</div>")
  return ("<h2 id='quality-head'>Quality head</h2>"
          f"<p class='muted'>{_esc(fit.get('auc_definition', ''))}</p>" + warn
          + _table(("", ""), [(k, _num(v) if not isinstance(v, str) else v)
                              for k, v in rows]))


def _interval(pair) -> str:
  return f"{_num(pair[0])} – {_num(pair[1])}" if pair else "–"


def _density(metrics: dict) -> str:
  sketch = metrics.get("sketch")
  if not sketch:
    return ""
  rows = [(k, _esc(v)) for k, v in sorted(sketch.items())]
  return ("<h2 id='density'>Density sketch</h2><p class='muted'>The histograms of "
          "<a href='#score-density'>density</a> and <a href='#score-sampling_weight'>"
          "sampling_weight</a> (1/density, the inclusion weight of the draw) are under "
          "Scores.</p>" + _table(("parameter", "value"), rows))
