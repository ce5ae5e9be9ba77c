"""Training-ready output: one TFRecord schema for every sampler (the README's reader
works on each), features.json, and --tokenizer's targets equal to what
SentencePiece itself produces."""
import glob
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from apache_beam.testing.test_pipeline import TestPipeline

from beam_pipelines import graph, samplers, select_data
from beam_pipelines.options import JobConfig, parse_args
from tests.test_run_safety import _main_error
from tests.test_select_data import read_jsonl
from transforms import write
from transforms import signals

_WORDS = ("river stone cloud light tree wind history science water energy market city "
          "school health music the a of and to in is was").split()


def _corpus(path, n=30):
  rng = np.random.default_rng(4)
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "d.jsonl"), "w") as f:
    for i in range(n):
      f.write(json.dumps({"id": f"d{i:03d}",
                          "text": " ".join(rng.choice(_WORDS, 5 + 2 * i))}) + "\n")


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
  """A small SentencePiece model trained here (the `sentencepiece` trainer)."""
  import sentencepiece as spm
  d = tmp_path_factory.mktemp("spm")
  rng = np.random.default_rng(0)
  (d / "train.txt").write_text("\n".join(" ".join(rng.choice(_WORDS, 30))
                                         for _ in range(300)))
  spm.SentencePieceTrainer.train(input=str(d / "train.txt"), model_prefix=str(d / "m"),
                                 vocab_size=40, model_type="unigram", minloglevel=2)
  return str(d / "m.model")


def _run(tmp_path, name, *extra):
  out = str(tmp_path / name)
  metrics = select_data.run(
      [f"--input={tmp_path}/in/*.jsonl", f"--output={out}", "--id_field=id",
       "--keep_count=10", "--cache=none", "--report=false", *extra],
      test_pipeline=TestPipeline(runner="FnApiRunner"))
  return out, metrics


def _readme_reader(out):
  """The README's read-back snippet, run as written on `out`."""
  readme = open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "README.md")).read()
  code = readme.split("Reading them back:", 1)[1].split("```python", 1)[1].split("```", 1)[0]
  code = re.sub(r"^  ", "", code, flags=re.M).replace("out/example", out)
  scope = {}
  exec(code, scope)  # pylint: disable=exec-used
  return list(scope["ds"])


def test_every_sampler_writes_the_same_features(tmp_path, tiny_bert_dir):
  _corpus(str(tmp_path / "in"))
  outs = [_run(tmp_path, "random", "--sampler=random")[0],
          _run(tmp_path, "density", "--sampler=density", f"--embedding_model={tiny_bert_dir}",
               "--device=cpu", "--sketch_rows=32", "--sketch_buckets=256")[0]]
  for out in outs:
    rows = _readme_reader(out)
    assert [int(r["rank"]) for r in rows] == list(range(10))
    assert all(np.isnan(r["ask_llm_score"].numpy()) for r in rows)  # not computed: NaN
    spec = json.load(open(os.path.join(out, write.FEATURES_FILE)))
    assert spec == write.features_spec(tokenized=False)
    record = next(iter(tf.data.TFRecordDataset(
        sorted(glob.glob(os.path.join(out, "selected", "*.tfrecord"))))))
    example = tf.train.Example.FromString(record.numpy())
    assert set(example.features.feature) == set(spec)
  density = tf.data.TFRecordDataset(sorted(glob.glob(f"{outs[1]}/selected/*.tfrecord")))
  parsed = tf.io.parse_single_example(next(iter(density)), {
      "density": tf.io.FixedLenFeature([], tf.float32)})
  assert parsed["density"].numpy() >= 1.0  # computed where the sampler computes it


def test_every_score_the_job_computes_is_a_feature():
  for name in samplers.SAMPLERS:
    args, _ = parse_args(["--input=x", "--output=y", f"--sampler={name}",
                          *(["--teacher_fraction=0.1"] if "quality_head" in name else [])])
    names = graph.score_names(JobConfig.from_args(args))
    numeric = {n for n in names if not n.endswith("_error")
               and n not in signals.text_columns()}
    assert numeric <= set(signals.feature_names(signals.FLOAT)
                          + signals.feature_names(signals.INT)), name


def test_tokenizer_targets_are_sentencepieces_own(tmp_path, spm_model):
  import sentencepiece as spm
  sp = spm.SentencePieceProcessor(model_file=spm_model)
  _corpus(str(tmp_path / "in"))
  out, metrics = _run(tmp_path, "tok", "--sampler=random", f"--tokenizer={spm_model}",
                      "--append_eos")
  spec = {"text": tf.io.FixedLenFeature([], tf.string),
          "rank": tf.io.FixedLenFeature([], tf.int64),
          "num_tokens": tf.io.FixedLenFeature([], tf.int64),
          "targets": tf.io.RaggedFeature(tf.int64)}
  files = sorted(glob.glob(os.path.join(out, "selected", "*.tfrecord")))
  rows = list(tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(r, spec)))
  assert [int(r["rank"]) for r in rows] == list(range(10))
  total = 0
  for r in rows:
    text = r["text"].numpy().decode()
    targets = r["targets"].numpy().tolist()
    assert targets == sp.encode(text) + [sp.eos_id()]
    assert sp.decode(targets[:-1]) == text  # whole: nothing truncated
    assert int(r["num_tokens"]) == len(targets)
    total += len(targets)
  assert metrics["counts"]["selected_tokens"] == total
  scores = read_jsonl(os.path.join(out, "scores", "*.jsonl"))
  assert sum(s["num_tokens"] for s in scores if s["selected"]) == total
  assert all("num_tokens" not in s for s in scores if not s["selected"])
  spec_file = json.load(open(os.path.join(out, write.FEATURES_FILE)))
  assert spec_file["targets"] == {"dtype": "int64", "shape": [None]}


@pytest.mark.parametrize("make, message", [
    (lambda d: str(d / "missing.model"), "cannot be read"),
    (lambda d: (d / "words.txt").write_text("not a model\n") and str(d / "words.txt"),
     "is not a SentencePiece model file"),
])
def test_a_bad_tokenizer_is_one_error_line(tmp_path, capsys, make, message):
  err = _refused(tmp_path, capsys, f"--tokenizer={make(tmp_path)}")
  assert message in err and not (tmp_path / "o").exists()


def _refused(tmp_path, capsys, *extra) -> str:
  """The one error line of a random-sampler run refused before it starts."""
  _corpus(str(tmp_path / "in"))
  return _main_error([f"--input={tmp_path}/in/*.jsonl", f"--output={tmp_path}/o",
                      "--sampler=random", *extra], capsys)


def test_append_eos_needs_a_tokenizer(tmp_path, capsys):
  assert "--append_eos needs --tokenizer" in _refused(tmp_path, capsys, "--append_eos")


def test_keep_fields_are_copied_to_every_output(tmp_path):
  import pyarrow.parquet as pq
  os.makedirs(tmp_path / "in")
  rows = []
  for i in range(12):
    row = {"id": f"k{i:02d}", "text": f"document {i} on rivers and stones", "url": f"u/{i}",
           "edu": i % 4, "flag": i % 2 == 0, "meta": {"lang": "en", "n": [i]}}
    if i % 3 == 0:
      del row["url"]  # missing: empty, not an error
    rows.append(row)
  (tmp_path / "in" / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
  by_id = {r["id"]: r for r in rows}
  fields = ["url", "edu", "flag", "meta", "absent"]
  out, _ = _run(tmp_path, "kf", "--sampler=random", f"--keep_fields={','.join(fields)}",
                "--scores_format=parquet")
  spec = json.load(open(os.path.join(out, write.FEATURES_FILE)))
  # Each kept field keeps its type (tests/test_typed_fields.py has every kind).
  assert {f: spec[f]["kind"] for f in fields} == {
      "url": "string", "edu": "int", "flag": "bool", "meta": "nested", "absent": "string"}
  dtypes = {"string": tf.string, "int64": tf.int64}
  parse = {"id": tf.io.FixedLenFeature([], tf.string),
           **{f: tf.io.FixedLenFeature([], dtypes[spec[f]["dtype"]]) for f in fields}}
  files = sorted(glob.glob(os.path.join(out, "selected", "*.tfrecord")))
  got = [{k: v.numpy() for k, v in ex.items()} for ex in
         tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(r, parse))]
  assert len(got) == 10
  for ex in got:
    src = by_id[ex["id"].decode()]
    assert ex["url"].decode() == src.get("url", "") and ex["absent"] == b""
    assert ex["edu"] == src["edu"] and ex["flag"] == int(src["flag"])
    assert json.loads(ex["meta"]) == src["meta"]
  table = pq.read_table(os.path.join(out, "scores")).to_pylist()
  assert len(table) == 12
  for row in table:
    src = by_id[row["id"]]
    assert row["url"] == src.get("url") and row["edu"] == src["edu"]
    assert row["flag"] is src["flag"]
    assert row["meta"] == src["meta"] and row["absent"] is None
    assert row["other_scores"] is None


def test_keep_fields_cannot_take_an_output_columns_name(tmp_path, capsys):
  _corpus(str(tmp_path / "in"))
  with pytest.raises(SystemExit) as e:
    select_data.main([f"--input={tmp_path}/in/*.jsonl", f"--output={tmp_path}/o",
                      "--keep_fields=url,rank"])
  assert e.value.code == 2
  assert "rank: the outputs already have a column of that name" in capsys.readouterr().err


def test_kept_fields_of_each_input_format():
  from transforms.records import RawRecord, parse_record
  example = tf.train.Example(features=tf.train.Features(feature={
      "text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"some text"])),
      "url": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"u/1"])),
      "edu": tf.train.Feature(float_list=tf.train.FloatList(value=[2.5])),
      "tags": tf.train.Feature(int64_list=tf.train.Int64List(value=[1, 2])),
  })).SerializeToString()
  names = ("url", "edu", "tags", "absent")
  doc = parse_record(RawRecord("f:#0", example, "tfrecord"), copy_fields=names)
  assert doc.extra == {"url": "u/1", "edu": 2.5, "tags": [1, 2], "absent": None}
  doc = parse_record(RawRecord("f:1", b'{"text": "t", "url": null, "edu": 3}', "jsonl"),
                     copy_fields=names)
  assert doc.extra == {"url": None, "edu": 3, "tags": None, "absent": None}
  doc = parse_record(RawRecord("f:1", b"plain text line", "text"), copy_fields=names)
  assert doc.extra == dict.fromkeys(names)
  assert write.kept_field_text(None) == "" and write.kept_field_text([1, "a"]) == '[1, "a"]'


def test_every_output_format_is_ranked_the_same(tmp_path, spm_model):
  import gzip
  import pyarrow.parquet as pq
  _corpus(str(tmp_path / "in"))
  out, _ = _run(tmp_path, "fmt", "--sampler=random", "--docs_per_file=4",
                "--output_format=tfrecord,parquet,jsonl", f"--tokenizer={spm_model}")
  folders = {".tfrecord": "selected", ".parquet": "selected_parquet",
             ".jsonl.gz": "selected_jsonl"}  # one folder per format, the first selected/

  def files(ext):
    found = sorted(glob.glob(os.path.join(out, folders[ext], "*")))
    assert len(found) == 3 and all(f.endswith(ext) for f in found)  # >= 4 per file
    return found
  spec = {"id": tf.io.FixedLenFeature([], tf.string),
          "rank": tf.io.FixedLenFeature([], tf.int64),
          "targets": tf.io.RaggedFeature(tf.int64)}
  tfr = [(r["id"].numpy().decode(), int(r["rank"]), r["targets"].numpy().tolist())
         for r in tf.data.TFRecordDataset(files(".tfrecord")).map(
             lambda r: tf.io.parse_single_example(r, spec))]
  table = pq.read_table(files(".parquet")[0]).schema
  assert table.field("targets").type == write.selected_schema(tokenized=True).field(
      "targets").type
  par = [(r["id"], r["rank"], r["targets"]) for f in files(".parquet")
         for r in pq.read_table(f).to_pylist()]
  jsl = [(r["id"], r["rank"], r["targets"]) for f in files(".jsonl.gz")
         for r in map(json.loads, gzip.open(f, "rt", encoding="utf-8"))]
  assert [r[1] for r in tfr] == list(range(10))
  assert tfr == par == jsl
  row = json.loads(gzip.open(files(".jsonl.gz")[0], "rt").readline())
  assert row["ask_llm_score"] is None and set(row) == set(write.features_spec(True))


def test_output_formats_agree_and_bad_ones_are_refused(tmp_path, capsys):
  from beam_pipelines import options
  assert options.OUTPUT_FORMATS == write.OUTPUT_FORMATS
  with pytest.raises(SystemExit):
    select_data.main([f"--input={tmp_path}/x", f"--output={tmp_path}/o",
                      "--output_format=tfrecord,csv"])
  assert "csv: choose from tfrecord, parquet, jsonl" in capsys.readouterr().err


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(weights=st.lists(st.integers(0, 50), min_size=1, max_size=60),
       parts=st.integers(1, 8), budget=st.integers(1, 1500))
def test_a_token_budget_takes_the_shortest_prefix_that_reaches_it(weights, parts, budget):
  from transforms import select
  keys = list(range(len(weights)))  # already in key order
  bounds = [keys[int(i * len(keys) / parts)] for i in range(1, parts)]
  hist = {}
  for key, w in zip(keys, weights):
    p = select.partition_of(key, bounds)
    d, t = hist.get(p, (0, 0))
    hist[p] = (d + 1, t + w)
  draft = select.make_budget_plan(len(keys), hist, budget, docs_per_file=10)
  boundary = [(k, w) for k, w in zip(keys, weights)
              if select.partition_of(k, bounds) == draft.boundary]
  cutoff, plan = select.budget_cutoff(boundary, draft)
  chosen = [k for k in keys if select.partition_of(k, bounds) < plan.boundary
            or (select.partition_of(k, bounds) == plan.boundary and k <= cutoff)]
  # Brute force: the shortest prefix whose weight reaches the budget (else everything).
  total, expect = 0, len(keys)
  for i, w in enumerate(weights):
    total += w
    if total >= budget:
      expect = i + 1
      break
  assert chosen == keys[:expect] and plan.k == expect


def test_keep_tokens_selects_by_the_token_budget(tmp_path, spm_model):
  import sentencepiece as spm
  from transforms.sampling import random_key
  from transforms.records import Document
  sp = spm.SentencePieceProcessor(model_file=spm_model)
  _corpus(str(tmp_path / "in"))
  rows = [json.loads(l) for l in open(tmp_path / "in" / "d.jsonl")]
  key = random_key(0)
  ordered = sorted(rows, key=lambda r: key(Document(r["id"], r["text"], ""))[:2])
  budget = 400
  metrics = select_data.run(
      [f"--input={tmp_path}/in/*.jsonl", f"--output={tmp_path}/kt", "--id_field=id",
       "--sampler=random", f"--tokenizer={spm_model}", f"--keep_tokens={budget}",
       "--cache=none", "--num_rank_partitions=4"],
      test_pipeline=TestPipeline(runner="FnApiRunner"))
  total, expect = 0, []
  for r in ordered:
    expect.append(r["id"])
    total += len(sp.encode(r["text"]))
    if total >= budget:
      break
  scores = read_jsonl(os.path.join(tmp_path, "kt", "scores", "*.jsonl"))
  chosen = [s["id"] for s in sorted((s for s in scores if s["selected"]),
                                    key=lambda s: s["rank"])]
  assert chosen == expect and metrics["counts"]["selected_tokens"] == total
  # A budget beyond the corpus selects everything.
  metrics = select_data.run(
      [f"--input={tmp_path}/in/*.jsonl", f"--output={tmp_path}/all", "--id_field=id",
       "--sampler=random", f"--tokenizer={spm_model}", "--keep_tokens=100000000",
       "--cache=none"], test_pipeline=TestPipeline(runner="FnApiRunner"))
  assert metrics["counts"]["selected"] == len(rows)
  assert "more than the corpus holds" in metrics["note"]


def test_keep_tokens_needs_a_tokenizer(tmp_path, capsys):
  err = _refused(tmp_path, capsys, "--keep_tokens=1000")
  assert "--keep_tokens counts tokens with --tokenizer" in err


def test_a_hugging_face_tokenizer_directory(tmp_path):
  from tokenizers import Tokenizer, models, pre_tokenizers, trainers
  tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
  tok.pre_tokenizer = pre_tokenizers.Whitespace()
  tok.train_from_iterator([" ".join(_WORDS)] * 3, trainers.WordLevelTrainer(
      special_tokens=["[UNK]", "</s>"]))
  d = tmp_path / "hf"
  d.mkdir()
  tok.save(str(d / "tokenizer.json"))
  (d / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>"}))
  _corpus(str(tmp_path / "in"))
  out, _ = _run(tmp_path, "hf_out", "--sampler=random", f"--tokenizer={d}", "--append_eos")
  spec = {"text": tf.io.FixedLenFeature([], tf.string),
          "targets": tf.io.RaggedFeature(tf.int64)}
  files = sorted(glob.glob(os.path.join(out, "selected", "*.tfrecord")))
  rows = list(tf.data.TFRecordDataset(files).map(lambda r: tf.io.parse_single_example(r, spec)))
  assert len(rows) == 10
  eos = tok.token_to_id("</s>")
  for r in rows:
    text = r["text"].numpy().decode()
    assert r["targets"].numpy().tolist() == tok.encode(text, add_special_tokens=False).ids + [eos]


def test_a_bad_hugging_face_tokenizer_is_one_error_line(tmp_path, capsys):
  from tokenizers import Tokenizer, models
  _corpus(str(tmp_path / "in"))
  (tmp_path / "bad.json").write_text('{"not": "a tokenizer"}')
  base = [f"--input={tmp_path}/in/*.jsonl", "--sampler=random"]
  err = _main_error(base + [f"--output={tmp_path}/o1", f"--tokenizer={tmp_path}/bad.json"],
                    capsys)
  assert "is not a Hugging Face tokenizer.json" in err
  d = tmp_path / "noeos"
  d.mkdir()
  Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(
      str(d / "tokenizer.json"))
  err = _main_error(base + [f"--output={tmp_path}/o2", f"--tokenizer={d}", "--append_eos"],
                    capsys)
  assert "no eos_token" in err
