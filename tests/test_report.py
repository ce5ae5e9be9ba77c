"""report.json and report.html: the statistics are exact where they should be and do not
depend on bundling; the page opens in a real headless browser (Debian's Chromium, which
scripts/test.sh installs when missing) without errors, with every chart, and loads nothing
from the network."""
import io
import json
import os
import re
import shutil

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that
from hypothesis import given, settings, strategies as st

from beam_pipelines import select_data
from transforms import quality_head as qh
from transforms import report_stats as rs
from transforms.records import Document, Rejected


def _docs(n=300, files=3):
  rng = np.random.default_rng(7)
  docs = []
  for i in range(n):
    score = float(rng.uniform(0, 1))
    docs.append(Document(id=f"d{i:04d}", text="x" * int(rng.integers(10, 5000)),
                         source=f"in/f{i % files}.jsonl:{i + 1}",
                         scores={"s": score, "t": None if i % 10 == 0 else -score}))
  return docs


def _key(doc):
  return (-doc.scores["s"], doc.id, doc.source)


def _outcomes(docs, k):
  ranked = sorted(docs, key=_key)
  return [(d, i if i < k else None) for i, d in enumerate(ranked)]


def _stats(outcomes, rejected=(), workers=None):
  """The pipeline's statistics dict, passed back through a file (as the job writes it)."""
  import tempfile
  from apache_beam.options.pipeline_options import PipelineOptions
  flags = ([f"--direct_num_workers={workers}", "--direct_running_mode=multi_threading"]
           if workers else [])
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, "stats.json")
    with TestPipeline(runner="FnApiRunner", options=PipelineOptions(flags)) as p:
      selected = [(d, r) for d, r in outcomes if r is not None]
      others = [d for d, r in outcomes if r is None]
      stats = ({"selected": p | "S" >> beam.Create(selected) | "RS" >> beam.Reshuffle(),
                "not_selected": p | "N" >> beam.Create(others) | "RN" >> beam.Reshuffle(),
                "rejected": p | "Rej" >> beam.Create(list(rejected))}
               | rs.ReportStatistics(["s", "t"], seed=3, sort_key=_key, ranked_by="s"))
      assert_that(stats | beam.Map(lambda s: 1), lambda got: got == [1] or 1 / 0)
      stats | beam.Map(lambda s: json.dump(s, open(path, "w")))
    return json.load(open(path))


def test_statistics_are_exact_where_they_should_be():
  docs = _docs()
  k = 60
  outcomes = _outcomes(docs, k)
  rejected = [Rejected(f"in/bad.jsonl:{i}", "invalid_json", "{oops", "") for i in range(5)]
  st_ = _stats(outcomes, rejected)
  assert st_["documents"] == 300 and st_["selected"] == k
  kept = [d for d, r in outcomes if r is not None]
  assert st_["chars"] == {"all": sum(len(d.text) for d in docs),
                          "selected": sum(len(d.text) for d in kept)}
  assert st_["file_count"] == 3 and sum(f["documents"] for f in st_["files"]) == 300
  assert sum(f["selected"] for f in st_["files"]) == k
  # The cutoff is the worst kept score; every histogram counts every document once.
  assert st_["cutoff"] == min(d.scores["s"] for d in kept)
  for name, n_valid in (("s", 300), ("t", 270), ("chars", 300)):
    hist = st_["scores"][name]["histogram"]
    assert sum(hist["all"]) == n_valid and len(hist["edges"]) == len(hist["all"]) + 1
  assert sum(st_["scores"]["s"]["histogram"]["selected"]) == k
  assert st_["scores"]["chars"]["histogram"]["log"]  # 10 to 5000 characters: log bins
  assert not st_["scores"]["s"]["histogram"]["log"]
  # Percentiles match numpy's on the same values (small inputs: the sketch is exact).
  dropped = np.array([d.scores["s"] for d, r in outcomes if r is None])
  got = st_["scores"]["s"]["percentiles"]["dropped"]
  for p in rs.PERCENTILES:
    lo, hi = np.percentile(dropped, [max(p - 1, 0), min(p + 1, 100)])
    assert lo <= got[f"p{p}"] <= hi, (p, got)
  assert st_["scores"]["s"]["min"]["kept"] == st_["cutoff"]
  # Examples: the top by rank, the last selected, the first not selected, the bottom.
  ex = st_["examples"]
  assert [e["rank"] for e in ex["top"]] == [0, 1, 2, 3, 4]
  assert [e["rank"] for e in ex["last_selected"]] == [59, 58, 57, 56, 55]
  assert [e["id"] for e in ex["first_not_selected"]] == [d.id for d, _ in outcomes[k:k + 5]]
  assert [e["id"] for e in ex["bottom"]] == [d.id for d, _ in outcomes[::-1][:5]]
  assert len(ex["top"][0]["excerpt"]) <= rs.EXCERPT_CHARS
  # Every document is in the scatter sample below its bound.
  assert len(st_["scatter"]["points"]) == 300
  assert len(st_["rejected_examples"]["invalid_json"]) == rs.REJECTED_EXAMPLES


def test_statistics_do_not_depend_on_bundling_or_workers():
  outcomes = _outcomes(_docs(n=2500, files=30), 400)
  one = _stats(outcomes)
  two = _stats(outcomes[::-1], workers=2)
  for key in ("documents", "selected", "chars", "files", "file_count", "cutoff", "examples"):
    assert one[key] == two[key], key
  for name in ("s", "t", "chars"):
    assert one["scores"][name]["histogram"] == two["scores"][name]["histogram"]
  # The scatter sample is chosen by a hash of (seed, id): the same documents.
  assert sorted(map(tuple, one["scatter"]["points"])) == sorted(
      map(tuple, two["scatter"]["points"]))
  assert len(one["scatter"]["points"]) == rs.SCATTER_POINTS


@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(0, 120), max_size=6), order=st.randoms())
def test_summaries_merge_in_any_order(cuts, order):
  outcomes = _outcomes(_docs(n=120, files=4), 30)
  bounds = sorted(set([0, 120] + cuts))
  parts = []
  tap = rs.ReportTap(["s", "t"], seed=3, sort_key=_key)
  for a, b in zip(bounds[:-1], bounds[1:]):
    bundle = tap.start()
    for doc, rank in outcomes[a:b]:
      bundle.add(doc, rank)
    parts.append(bundle.summary())

  def merged(parts):
    total = rs.Summary(["s", "t"])
    for s in parts:
      total.merge(s)
    return total
  forward = merged(parts)
  shuffled = list(parts)
  order.shuffle(shuffled)
  other = merged(shuffled)
  for attr in ("documents", "selected", "chars", "files", "low", "high"):
    assert getattr(forward, attr) == getattr(other, attr)
  for name in forward.lists:
    assert forward.lists[name].items() == other.lists[name].items()


def test_histogram_edges():
  assert rs.histogram_edges(0.5, 0.5) == ([0.495, 0.505], False)
  edges, log = rs.histogram_edges(1.0, 10_000.0)
  assert log and edges[0] == pytest.approx(1.0) and edges[-1] == pytest.approx(10_000.0)
  assert not rs.histogram_edges(0.001, 0.9)[1]  # probabilities stay linear
  edges, log = rs.histogram_edges(-1.0, 1.0, bins=4)
  assert not log and edges == [-1.0, -0.5, 0.0, 0.5, 1.0]
  with pytest.raises(ValueError, match="finite"):
    rs.histogram_edges(0.0, float("inf"))


def test_auc_interval_narrows_with_more_documents():
  small = qh.auc_interval(0.9, 3, 3)
  large = qh.auc_interval(0.9, 300, 300)
  assert small[0] < large[0] < 0.9 < large[1] <= small[1] <= 1.0
  assert qh.auc_interval(float("nan"), 3, 3) is None


# --- the page, in a real browser -----------------------------------------------------------

_BROWSER_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]


def _chromium() -> str:
  path = os.environ.get("CHROMIUM") or shutil.which("chromium")
  if not path:
    pytest.fail("no chromium: scripts/test.sh installs Debian's chromium "
                "(scripts/install_chromium.sh), or set CHROMIUM=/path/to/chromium")
  return path


def _open_in_browser(html_path: str, screenshot: str):
  """(console errors and page errors, URLs requested, chart names, PNG bytes)."""
  from playwright.sync_api import sync_playwright
  errors, requests = [], []
  with sync_playwright() as pw:
    browser = pw.chromium.launch(executable_path=_chromium(), args=_BROWSER_FLAGS)
    try:
      page = browser.new_page(viewport={"width": 1200, "height": 900})
      page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
      page.on("pageerror", lambda e: errors.append(str(e)))
      page.on("request", lambda r: requests.append(r.url))
      page.goto("file://" + os.path.abspath(html_path), wait_until="load")
      charts = page.eval_on_selector_all(
          "[data-chart]", "els => els.map(e => [e.dataset.chart, "
          "e.querySelector('svg').getBoundingClientRect().height])")
      png = page.screenshot(path=screenshot, full_page=True)
    finally:
      browser.close()
  return errors, requests, charts, png


def _write_corpus(path):
  rng = np.random.default_rng(2)
  words = ("alpha beta gamma delta river stone cloud light tree wind the a of and to "
           "history science water energy").split()
  os.makedirs(path, exist_ok=True)
  for part in range(2):
    with open(os.path.join(path, f"part{part}.jsonl"), "w") as f:
      for i in range(30):
        row = {"id": f"p{part}-{i:03d}", "text": " ".join(rng.choice(words, 8 + 3 * i))}
        if i % 2:
          row["edu"] = float(i % 4)
        f.write(json.dumps(row) + "\n")
      f.write("{not json\n")


def test_report_opens_in_a_browser_with_every_chart(tmp_path, tiny_bert_dir):
  _write_corpus(str(tmp_path / "in"))
  out = str(tmp_path / "out")
  metrics = select_data.run(
      [f"--input={tmp_path}/in/*.jsonl", f"--output={out}", "--id_field=id",
       "--device=cpu", "--keep_count=12", "--sampler=quality_head_density",
       "--teacher_field=edu", f"--embedding_model={tiny_bert_dir}", "--sketch_rows=32",
       "--sketch_buckets=256"],
      test_pipeline=TestPipeline(runner="FnApiRunner"))
  html_path = os.path.join(out, "report.html")
  stats = json.load(open(os.path.join(out, "report.json")))
  assert stats["documents"] == metrics["counts"]["valid"] == 60
  assert stats["selected"] == metrics["counts"]["selected"] == 12
  page = open(html_path, encoding="utf-8").read()
  # Self-contained: no resource is referenced by URL (SVG namespace names are not loaded).
  assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page)
  assert not re.search(r"url\((?!#)|@import|<script|<link|<img", page)  # url(#id): in-page
  assert "held-back documents</b>: the AUC" in page  # a handful held back: a warning
  assert "invalid_json" in page and "{not json" in page

  errors, requests, charts, png = _open_in_browser(html_path, str(tmp_path / "r.png"))
  assert errors == []
  assert all(u.startswith("file://") for u in requests), requests
  names = {name for name, _ in charts}
  expected = {"funnel", "files"} | {f"histogram:{n}" for n in stats["scores"]} | {
      f"scatter:{n}" for n in stats["scores"] if n != "chars"}
  assert expected <= names, expected - names
  assert {"histogram:quality_score", "histogram:density",
          "histogram:sampling_weight"} <= names
  assert all(height > 50 for _, height in charts), charts
  from matplotlib import image
  pixels = image.imread(io.BytesIO(png), format="png")
  assert pixels.shape[0] > 2000 and pixels.std() > 0.05  # a long page, not blank


def test_report_false_writes_no_report_and_a_draw_marks_no_cutoff(tmp_path):
  _write_corpus(str(tmp_path / "in"))
  args = [f"--input={tmp_path}/in/*.jsonl", "--id_field=id", "--keep_count=5",
          "--sampler=random", "--cache=none"]
  select_data.run(args + [f"--output={tmp_path}/a", "--report=false"],
                  test_pipeline=TestPipeline(runner="FnApiRunner"))
  assert not os.path.exists(tmp_path / "a" / "report.html")
  assert not os.path.exists(tmp_path / "a" / "report.json")
  assert os.path.exists(tmp_path / "a" / "metrics.json")
  select_data.run(args + [f"--output={tmp_path}/b"],
                  test_pipeline=TestPipeline(runner="FnApiRunner"))
  stats = json.load(open(tmp_path / "b" / "report.json"))
  assert stats["ranked_by"] is None and stats["cutoff"] is None
  assert list(stats["scores"]) == ["chars"]
  assert [e["rank"] for e in stats["examples"]["top"]] == [0, 1, 2, 3, 4]
  assert [e["rank"] for e in stats["examples"]["last_selected"]] == [4, 3, 2, 1, 0]
  # A draw's order says nothing of the documents not drawn: no such examples.
  assert stats["examples"]["bottom"] == stats["examples"]["first_not_selected"] == []
  page = open(tmp_path / "b" / "report.html", encoding="utf-8").read()
  assert "The first drawn" in page
  assert "cutoff" not in page.split("id='examples'")[0].lower()


def test_score_columns_are_numbers_or_nan():
  # The usual chunk (floats, ints, None) is converted at once; a bool or a text in a
  # score is not a number, and infinities stay (the statistics drop them with NaN).
  assert np.array_equal(rs._as_numbers([0.5, 2, None, float("inf")]),
                        [0.5, 2.0, np.nan, np.inf], equal_nan=True)
  assert np.array_equal(rs._as_numbers([0.5, True, "12", None]),
                        [0.5, np.nan, np.nan, np.nan], equal_nan=True)
  bundle = rs.ReportTap(["s"], seed=0, sort_key=None).start()
  for i, value in enumerate([0.25, "d0001", None, 3]):
    bundle.add(Document(id=f"d{i}", text="abc", source="f.jsonl:1", scores={"s": value}),
               None)
  summary = bundle.summary()
  assert summary.documents == 4
  assert (summary.low[("s", rs.DROPPED)], summary.high[("s", rs.DROPPED)]) == (0.25, 3.0)


def test_report_is_written_whatever_the_file_names(tmp_path):
  # Dollar signs and backslashes are math to matplotlib unless told otherwise: a file
  # name like these cost the whole page.
  names = ["costs_$5_to_$10.jsonl", "x$\\undefinedcmd$.jsonl"]
  (tmp_path / "in").mkdir()
  for i, name in enumerate(names):
    with open(tmp_path / "in" / name, "w") as f:
      for j in range(3):
        f.write(json.dumps({"id": f"{i}-{j}", "text": f"document {j} of file {i}"}) + "\n")
  out = tmp_path / "out"
  select_data.run([f"--input={tmp_path}/in/*.jsonl", f"--output={out}", "--id_field=id",
                   "--keep_count=2", "--sampler=random", "--cache=none"],
                  test_pipeline=TestPipeline(runner="FnApiRunner"))
  page = open(out / "report.html", encoding="utf-8").read()
  chart = page.split('data-chart="files"', 1)[1].split("</svg>", 1)[0]
  for name in names:
    assert name in chart  # drawn as it is, not as math
  assert "could not be drawn" not in page
