"""Which files --input reads: every path a pattern matches is read once or reported in
rejected/, whatever its name; nothing that is not a regular file is waited on; a record
that repeats an (id, source) never crashes the job nor makes k inexact."""
import glob
import json
import logging
import os
import tempfile
import threading
import time

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from hypothesis import HealthCheck, example, given, settings, strategies as st

from beam_pipelines import select_data
from transforms import read, records
from transforms import report_stats as rs
from transforms.records import Document
from transforms.select import SelectTopK


def _write_docs(path, n, prefix="d"):
  with open(path, "w") as f:
    for i in range(n):
      f.write(json.dumps({"id": f"{prefix}{i}", "text": f"document {prefix}{i} about "
                          f"topic {i * 7 % 13} in plain words"}) + "\n")


def _run(inputs, out, *extra):
  argv = [f"--input={inputs}", f"--output={out}", "--sampler=random", *extra]
  return select_data.run(argv, test_pipeline=TestPipeline(runner="FnApiRunner"))


def _rows(out, name):
  return [json.loads(line) for f in sorted(glob.glob(os.path.join(out, name, "*.jsonl")))
          for line in open(f) if line.strip()]


# --- A path matched twice is read once; k stays exact.

@pytest.mark.parametrize("report", ["false", "true"])
def test_a_file_listed_twice_is_read_once_with_a_warning(tmp_path, caplog, report):
  _write_docs(tmp_path / "A.jsonl", 20)
  a = tmp_path / "A.jsonl"
  with caplog.at_level(logging.WARNING):
    m = _run(f"{a},{a}", tmp_path / "out", "--keep_count=7", f"--report={report}")
  assert m["counts"]["read"] == 20 and m["counts"]["selected"] == 7
  scores = _rows(tmp_path / "out", "scores")
  assert len(scores) == 20 and sum(s["selected"] for s in scores) == 7
  assert "read once" in caplog.text


def test_overlapping_globs_and_a_link_read_each_file_once(tmp_path):
  (tmp_path / "in").mkdir()
  _write_docs(tmp_path / "in" / "a1.jsonl", 6, "a")
  _write_docs(tmp_path / "in" / "b1.jsonl", 4, "b")
  os.symlink("a1.jsonl", tmp_path / "in" / "link.jsonl")
  m = _run(f"{tmp_path}/in/*.jsonl,{tmp_path}/in/a*,./{os.path.relpath(tmp_path)}/in/b1.jsonl",
           tmp_path / "out", "--keep_count=5", "--report=false")
  assert m["counts"]["read"] == 10 and m["counts"]["selected"] == 5
  # 5 matches (3 by the first glob, 1 by the second, 1 named) of 3 names, one a link to
  # another: every matched path is accounted for in metrics.json.
  assert m["counts"]["files"] == {"matched": 5, "read": 2, "not_read": 0, "duplicate": 3}


def test_ordered_sampler_report_survives_a_file_listed_twice(tmp_path, tiny_bert_dir):
  # Was: TypeError '<' not supported between 'function' and 'function' in the report.
  _write_docs(tmp_path / "A.jsonl", 24)
  a = tmp_path / "A.jsonl"
  m = _run(f"{a},{a}", tmp_path / "out", "--sampler=prototypes", "--num_clusters=2",
           f"--embedding_model={tiny_bert_dir}", "--device=cpu", "--keep_count=5",
           "--report=true")
  assert m["counts"]["read"] == 24 and m["counts"]["selected"] == 5
  stats = json.load(open(tmp_path / "out" / "report.json"))
  assert stats["documents"] == 24 and stats["selected"] == 5


def _dup_docs(n, copies):
  """n distinct documents, each `copies` times with the same id and source."""
  return [Document(id=f"d{i:03d}", text=f"t{i}", source=f"in/a.jsonl:{i + 1}",
                   scores={"s": (i * 37 % 11) / 10.0, "tokens": 1 + i % 4})
          for i in range(n) for _ in range(copies)]


def _key(doc):
  return (-doc.scores["s"], doc.id, doc.source)


@pytest.mark.parametrize("how", [dict(keep_count=7), dict(keep_fraction=0.3),
                                 dict(keep_weight=9, weight_fn=lambda d: d.scores["tokens"])])
def test_select_top_k_is_exact_when_records_repeat(how):
  docs = _dup_docs(15, copies=2)
  order = sorted(docs, key=_key)
  if "keep_weight" in how:
    total, k = 0, 0
    while total < how["keep_weight"]:
      total += order[k].scores["tokens"]
      k += 1
  else:
    k = how.get("keep_count") or int(len(docs) * how["keep_fraction"])
  with TestPipeline(runner="FnApiRunner") as p:
    sel = (p | beam.Create(docs) | SelectTopK(_key, num_partitions=4, docs_per_file=4, **how))
    ranks = sel["ranked"] | beam.FlatMap(lambda f: [r for r, _ in f[1]])
    assert_that(ranks, equal_to(list(range(k))), label="ranks")
    kept = sel["ranked"] | beam.FlatMap(lambda f: [_key(d) for _, d in f[1]])
    assert_that(kept, equal_to([_key(d) for d in order[:k]]), label="kept")
    rest = sel["not_selected"] | beam.Map(_key)
    assert_that(rest, equal_to([_key(d) for d in order[k:]]), label="rest")


@settings(max_examples=40, deadline=None)
@given(keys=st.lists(st.integers(0, 4), min_size=1, max_size=40), n=st.integers(1, 6))
def test_report_lists_keep_the_extremes_whatever_the_ties(keys, n):
  smallest, largest = rs._Smallest(n), rs._Largest(n)
  for i, key in enumerate(keys):
    smallest.add((key,), lambda i=i: i)  # items are closures: never compared
    largest.add((key,), lambda i=i: i)
  assert [k for k, _ in smallest.items()] == sorted((k,) for k in keys)[:n]
  assert [k for k, _ in largest.items()] == sorted(((k,) for k in keys), reverse=True)[:n]


# --- Every name a glob matches is read or reported; nothing is waited on.

_ODD_NAMES = ["ok.jsonl", ".hidden.jsonl", "back\\slash.jsonl", "br[a]ck.jsonl",
              "com,ma.jsonl", "sp ace.jsonl", "new\nline.jsonl", "st*r?.jsonl"]


def _unblock_later(fifo, stop: threading.Event, after_s: float):
  """Opens the pipe's write end after a while, so that a reader stuck on it ends (the
  test then fails on what it finds) instead of hanging the suite."""
  def target():
    if stop.wait(after_s):
      return
    try:
      os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:
      pass  # nobody is reading it: good
  threading.Thread(target=target, daemon=True).start()


def test_every_path_a_glob_matches_is_read_or_reported(tmp_path):
  d = tmp_path / "in"
  d.mkdir()
  for i, name in enumerate(_ODD_NAMES):
    (d / name).write_text(json.dumps({"id": f"n{i}", "text": f"text of file {i}"}) + "\n")
  os.symlink("missing.jsonl", d / "broken.jsonl")
  os.symlink("loop.jsonl", d / "loop.jsonl")
  (d / "sub.jsonl").mkdir()
  os.mkfifo(d / "pipe.jsonl")
  stop = threading.Event()
  _unblock_later(str(d / "pipe.jsonl"), stop, after_s=60)
  start = time.monotonic()
  try:
    m = _run(f"{d}/*", tmp_path / "out", "--keep_count=2", "--id_field=id")
  finally:
    stop.set()
  assert time.monotonic() - start < 60
  read_files = {s["source"].rsplit(":", 1)[0] for s in _rows(tmp_path / "out", "scores")}
  assert read_files == {str(d / n) for n in _ODD_NAMES}
  rejected = {r["source"]: r["reason"] for r in _rows(tmp_path / "out", "rejected")}
  assert rejected == {str(d / "broken.jsonl"): records.MISSING_FILE,
                      str(d / "loop.jsonl"): records.NOT_A_REGULAR_FILE,
                      str(d / "sub.jsonl"): records.NOT_A_REGULAR_FILE,
                      str(d / "pipe.jsonl"): records.NOT_A_REGULAR_FILE}
  assert m["counts"]["accounted"] and m["counts"]["rejected"] == 4


def test_a_file_deleted_after_the_check_is_reported(tmp_path, monkeypatch):
  (tmp_path / "in").mkdir()
  _write_docs(tmp_path / "in" / "a.jsonl", 5, "a")
  _write_docs(tmp_path / "in" / "b.jsonl", 5, "b")
  check_job = select_data.check_job

  def check_then_delete(*args, **kwargs):
    out = check_job(*args, **kwargs)
    os.remove(tmp_path / "in" / "b.jsonl")
    return out

  monkeypatch.setattr(select_data, "check_job", check_then_delete)
  m = _run(f"{tmp_path}/in/*.jsonl", tmp_path / "out", "--keep_count=2", "--report=false")
  assert m["counts"]["valid"] == 5
  assert m["counts"]["rejected_by_reason"] == {records.MISSING_FILE: 1}
  [row] = _rows(tmp_path / "out", "rejected")
  assert row["source"] == str(tmp_path / "in" / "b.jsonl")


def test_names_with_glob_characters_and_commas_can_be_given(tmp_path):
  d = tmp_path / "in"
  d.mkdir()
  for name in ("br[a]ck.jsonl", "brack.jsonl", "com,ma.jsonl", "q?.jsonl"):
    _write_docs(d / name, 2, name[:2])
  m = _run(f"{d}/br[a]ck.jsonl,{d}/com\\,ma.jsonl,{d}/q[?].jsonl", tmp_path / "out",
           "--keep_count=1", "--report=false")
  sources = {s["source"].rsplit(":", 1)[0] for s in _rows(tmp_path / "out", "scores")}
  # The exact name and what its glob matches (brack.jsonl); the escaped `?`; the comma.
  assert sources == {str(d / n) for n in ("br[a]ck.jsonl", "brack.jsonl", "com,ma.jsonl",
                                          "q?.jsonl")}
  assert m["counts"]["read"] == 8
  assert read.check_inputs([f"{d}/br[[]a]ck.jsonl"], "auto") == os.path.getsize(
      d / "br[a]ck.jsonl")


# --- Properties of the matching, through the launcher's check.

_NAME = st.text(st.sampled_from("ab.,[]*?! -_\\'\n"), min_size=1, max_size=8).map(
    lambda s: s + ".jsonl")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(names=st.sets(_NAME, min_size=1, max_size=6))
@example(names={"[?-.].jsonl", "[b-a!].jsonl", "[a-b-].jsonl"})  # reversed ranges
def test_a_star_matches_every_name_and_each_name_matches_itself(names):
  with tempfile.TemporaryDirectory() as tmp:
    sizes = {}
    for i, name in enumerate(sorted(names)):
      with open(os.path.join(tmp, name), "w") as f:
        f.write("x" * (i + 1) + "\n")
      sizes[name] = i + 2
    assert read.check_inputs([os.path.join(tmp, "*")], "jsonl") == sum(sizes.values())
    for name, size in sizes.items():
      # Exactly named: that file (with whatever else its glob matches).
      assert read.check_inputs([os.path.join(tmp, name)], "jsonl") >= size


@given(paths=st.lists(st.text(st.characters(blacklist_characters="\\\x00",
                                            blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc")),
                              min_size=1, max_size=10), min_size=1, max_size=5))
def test_split_patterns_takes_escaped_commas_as_part_of_a_name(paths):
  given_arg = ",".join(p.replace(",", "\\,") for p in paths)
  assert read.split_patterns(given_arg) == paths


@given(pattern=st.text(st.sampled_from("ab-z[]!*?."), min_size=1, max_size=8),
       name=st.text(st.sampled_from("abz-.!"), min_size=0, max_size=6))
def test_a_glob_matches_a_name_as_fnmatch_does(pattern, name):
  """Classes, negation, ranges (a reversed one matches nothing) as in Python's fnmatch,
  for names without `/` (where this glob's `*` and fnmatch's differ)."""
  import fnmatch
  import re
  from transforms.input_files import translate
  assert bool(re.match(translate(pattern), name)) == fnmatch.fnmatchcase(name, pattern)
