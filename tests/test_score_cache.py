"""The score cache: formats and fingerprints as pure functions, then whole runs on the
FnApiRunner with tiny models: reselect without inference, resume after SIGKILL, misses
on a changed setting, corrupt and duplicated files, two workers writing at once."""
import dataclasses
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from beam_pipelines import caching, select_data
from beam_pipelines.options import JobConfig, parse_args
from models.precision import resolve
from transforms import score_cache
from transforms.records import Document
from transforms.score_cache import CODECS, text_key

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORDS = ("rain light cells money maps gravity engines vaccines bridges soil tides music "
         "stars rivers forests metals glass paper salt sugar wind clouds bees ants").split()


def write_corpus(path, n):
  """n distinct documents (JSON Lines with ids)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    for i in range(n):
      words = [WORDS[(i * 7 + j * (i % 5 + 1)) % len(WORDS)] for j in range(6 + i % 9)]
      text = f"Note {i}: how {' and '.join(words)} work, explained plainly."
      f.write(json.dumps({"id": f"d{i:05d}", "text": text}) + "\n")


def argv_for(corpus, out, model_dir, *extra):
  return [f"--input={corpus}", f"--output={out}", f"--scorer_model={model_dir}",
          "--id_field=id", "--max_tokens=128", "--device=cpu",
          "--report=false", *extra]  # the report has its own tests


def run_job(corpus, out, model_dir, *extra):
  return select_data.run(argv_for(corpus, out, model_dir, *extra),
                         test_pipeline=TestPipeline(runner="FnApiRunner"))


def scores_of(out):
  rows = [json.loads(l) for f in sorted(glob.glob(os.path.join(out, "scores", "*.jsonl")))
          for l in open(f) if l.strip()]
  return {r["id"]: r for r in rows}


def selected_of(out):
  """[(rank, id, ask_llm_score)] of selected documents, in rank order."""
  return sorted((r["rank"], i, r.get("ask_llm_score")) for i, r in scores_of(out).items()
                if r["selected"])


def cache_files(cache, namespace="ask_llm"):
  return sorted(glob.glob(os.path.join(cache, namespace, "*", "*.parquet")))


def cached_keys(cache, namespace="ask_llm"):
  keys = set()
  for f in cache_files(cache, namespace):
    keys.update(pq.read_table(f).column("key").to_pylist())
  return keys


# --- Pure parts -------------------------------------------------------------------------

def _doc(text, **scores):
  return Document(id=text[:8], text=text, source="t").with_scores(**scores)


@pytest.mark.parametrize("namespace,row", [
    ("ask_llm", (0.25, 0.5)),
    ("perplexity", 3.5),
    ("embeddings", np.array([0.6, -0.8, 0.0], dtype=np.float32)),
])
def test_codec_round_trip_through_parquet_bytes(namespace, row):
  codec = CODECS[namespace]
  keys = [text_key("a"), text_key("b")]
  data = score_cache.table_bytes(codec.table(keys, [row, row]))
  got = list(codec.rows(score_cache.read_table(data)))
  assert [k for k, _ in got] == keys
  # Embeddings are rounded to float16 in every run (round_embedding): exact after that.
  want = score_cache.round_embedding(row) if namespace == "embeddings" else row
  for _, r in got:
    np.testing.assert_array_equal(np.asarray(r), np.asarray(want))
  if namespace == "embeddings":
    assert not np.array_equal(want, row)  # The rounding is real ...
    np.testing.assert_array_equal(score_cache.round_embedding(want), want)  # ... and stable.


def test_invalid_entries_are_skipped_and_wrong_tables_refused():
  codec = CODECS["ask_llm"]
  table = codec.table([text_key("a"), text_key("b"), text_key("c")],
                      [(0.2, 0.3), (float("nan"), 0.1), (1.5, 0.0)])
  rows = list(codec.rows(table))
  assert rows[0][1] == (0.2, 0.3) and rows[1][1] is None and rows[2][1] is None
  # A perplexity table is not an Ask-LLM table.
  other = CODECS["perplexity"].table([text_key("a")], [1.0])
  with pytest.raises(Exception):
    list(codec.rows(other))


def test_a_failed_document_is_not_cached():
  assert CODECS["ask_llm"].row(_doc("x", ask_llm_error="RuntimeError: boom")) is None
  assert CODECS["ask_llm"].row(_doc("x", p_yes=0.1, p_no=0.2, ask_llm_score=0.1)) == (0.1, 0.2)


def test_zero_and_non_finite_embeddings_are_invalid_entries():
  codec = CODECS["embeddings"]
  good = np.array([0.6, -0.8, 0.0], np.float32)
  bad = [np.zeros(3, np.float32), np.array([np.nan, 0.0, 1.0], np.float32),
         np.array([np.inf, 0.0, 0.0], np.float32), np.array([1e6, 0.0, 0.0], np.float32)]
  table = codec.table([text_key(str(i)) for i in range(5)], [good] + bad)
  # 1e6 is inf in float16.
  assert [r is None for _, r in codec.rows(table)] == [False, True, True, True, True]
  # A vector no reader would take is not written either.
  assert [codec.row(dataclasses.replace(_doc("x"), embedding=v)) is None
          for v in [good] + bad] == [
      False, True, True, True, True]


def test_keys_depend_on_the_text_only():
  assert text_key("same text") == text_key("same text")
  assert text_key("same text") != text_key("same text ")
  assert len(text_key("")) == 16


def _specs(*argv):
  args, _ = parse_args(["--input=x", "--output=/tmp/unused", *argv])
  return caching.cache_specs(JobConfig.from_args(args))


def test_fingerprints_change_with_what_changes_the_scores(tiny_causal_lm_dir, tmp_path):
  base = ["--scorer_model=" + tiny_causal_lm_dir]
  fp = _specs(*base)["ask_llm"].fingerprint
  # Changes that change the model's output: a new fingerprint.
  for change in (["--prompt=educational"], ["--max_tokens=200"],
                 ["--yes_tokens=yes"], ["--chat_template=off"]):
    assert _specs(*base, *change)["ask_llm"].fingerprint != fp, change
  # A copy of the model elsewhere is the same model; a changed file is not.
  copy = str(tmp_path / "copy")
  shutil.copytree(tiny_causal_lm_dir, copy)
  assert _specs("--scorer_model=" + copy)["ask_llm"].fingerprint == fp
  with open(os.path.join(copy, "config.json")) as f:
    config = json.load(f)
  config["rms_norm_eps"] = 1e-5 if config.get("rms_norm_eps") != 1e-5 else 1e-6
  with open(os.path.join(copy, "config.json"), "w") as f:
    json.dump(config, f)
  assert _specs("--scorer_model=" + copy)["ask_llm"].fingerprint != fp
  # Everything after the models: the same fingerprint.
  for same in (["--keep_fraction=0.5"], ["--seed=7"], ["--sampler=random"],
               ["--quality_pool_factor=3"], ["--batch_tokens=999"],
               # The device is not in it; the precision (auto's choice per device) is.
               ["--device=cuda", f"--precision={resolve('auto', 'scorer', 'cpu')}"]):
    specs = _specs(*base, *same)
    assert all(s.fingerprint == fp for n, s in specs.items() if n == "ask_llm"), same
  assert _specs(*base, "--cache=none") == {}
  emb = _specs("--sampler=density", "--embedding_model=default")["embeddings"].fingerprint
  assert _specs("--sampler=density", "--embedding_max_tokens=64")["embeddings"].fingerprint != emb


# --- Whole runs -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("corpus") / "docs.jsonl")
  write_corpus(path, 60)
  return path


@pytest.fixture(scope="module")
def full_run(corpus, tiny_causal_lm_dir, tmp_path_factory):
  """One run that fills its cache (OUTPUT/cache): (output, metrics)."""
  out = str(tmp_path_factory.mktemp("full") / "out")
  return out, run_job(corpus, out, tiny_causal_lm_dir, "--keep_fraction=0.4",
                      "--cache_flush_docs=10")


def test_a_run_fills_its_cache_and_reports_it(full_run):
  out, metrics = full_run
  c = metrics["counts"]
  assert c["inferred"] == {"ask_llm": 60} and c["from_cache"] == {"ask_llm": 0}
  stage = metrics["cache"]["stages"]["ask_llm"]
  assert metrics["cache"]["dir"] == os.path.join(out, "cache")
  assert stage["entries_written"] == 60 and stage["model_loads"] == 1
  assert len(cached_keys(os.path.join(out, "cache"))) == 60
  settings = json.load(open(stage["settings_file"]))
  assert settings["fingerprint"] == stage["fingerprint"]
  assert settings["settings"]["max_tokens"] == 128
  assert os.path.exists(os.path.join(out, "_SUCCESS"))


def test_reselect_from_a_cache_runs_no_model_and_matches_full_runs(
    full_run, corpus, tiny_causal_lm_dir, tmp_path):
  out, _ = full_run
  cache = os.path.join(out, "cache")
  chosen = {}
  for rate in ("0.1", "0.2", "0.4"):
    new = str(tmp_path / f"reselect-{rate}")
    m = run_job(corpus, new, tiny_causal_lm_dir, f"--keep_fraction={rate}", f"--cache={cache}")
    stage = m["cache"]["stages"]["ask_llm"]
    assert stage["model_loads"] == 0 and stage["inferred"] == 0
    assert m["counts"]["from_cache"] == {"ask_llm": 60}
    assert not os.path.exists(os.path.join(new, "cache"))  # Nothing new to keep.
    chosen[rate] = selected_of(new)
  ids = {r: [i for _, i, _ in sel] for r, sel in chosen.items()}
  assert [len(ids[r]) for r in ("0.1", "0.2", "0.4")] == [6, 12, 24]
  # Nested: a smaller rate keeps a prefix of the larger one's ranking.
  assert ids["0.2"][:6] == ids["0.1"] and ids["0.4"][:12] == ids["0.2"]
  # The same selection, ranks and scores as full runs without a cache.
  assert chosen["0.4"] == selected_of(out)
  fresh = str(tmp_path / "fresh-0.2")
  run_job(corpus, fresh, tiny_causal_lm_dir, "--keep_fraction=0.2", "--cache=none")
  assert chosen["0.2"] == selected_of(fresh)
  assert not os.path.exists(os.path.join(fresh, "cache"))


def test_a_changed_setting_misses_and_another_sampler_hits(full_run, corpus,
                                                           tiny_causal_lm_dir, tiny_bert_dir,
                                                           tmp_path):
  cache = str(tmp_path / "cache")  # A copy: the other tests use the original.
  shutil.copytree(os.path.join(full_run[0], "cache"), cache)
  m = run_job(corpus, str(tmp_path / "prompt"), tiny_causal_lm_dir,
              "--prompt=educational", f"--cache={cache}")
  assert m["counts"]["inferred"] == {"ask_llm": 60}
  assert m["counts"]["from_cache"] == {"ask_llm": 0}
  # The first fingerprint is ignored, not deleted.
  stage = m["cache"]["stages"]["ask_llm"]
  assert len(stage["ignored_fingerprints"]) >= 1
  assert len(glob.glob(os.path.join(cache, "ask_llm", "*"))) >= 2
  # Another sampler and seed: Ask-LLM comes from the cache, only embeddings are new.
  m = run_job(corpus, str(tmp_path / "seed"), tiny_causal_lm_dir, "--sampler=ask_llm_density",
              f"--embedding_model={tiny_bert_dir}", "--seed=5", f"--cache={cache}")
  assert m["counts"]["inferred"] == {"ask_llm": 0, "embeddings": 60}
  assert m["counts"]["from_cache"] == {"ask_llm": 60, "embeddings": 0}


def test_resume_replaces_outputs_keeps_cache_and_survives_bad_files(
    full_run, corpus, tiny_causal_lm_dir, tmp_path):
  out = str(tmp_path / "out")
  shutil.copytree(full_run[0], out)
  cache = os.path.join(out, "cache")
  files = cache_files(cache)
  directory = os.path.dirname(files[0])
  assert len(files) == 6 and all(os.path.dirname(f) == directory for f in files)
  # A duplicate (as a retried bundle writes), a corrupt file and a truncated one.
  lost = set(pq.read_table(files[-1]).column("key").to_pylist())
  data = open(files[-1], "rb").read()
  os.remove(files[-1])  # Its documents must be scored again.
  lost -= cached_keys(cache)
  assert lost
  shutil.copy(files[0], os.path.join(directory, "part-dup.parquet"))
  with open(os.path.join(directory, "part-garbage.parquet"), "wb") as f:
    f.write(b"PAR1 this is not parquet")
  with open(os.path.join(directory, "part-truncated.parquet"), "wb") as f:
    f.write(data[:len(data) // 2])
  before = selected_of(out)

  with pytest.raises(select_data.UsageError, match="--resume.*--overwrite"):
    run_job(corpus, out, tiny_causal_lm_dir, "--keep_fraction=0.4")
  m = run_job(corpus, out, tiny_causal_lm_dir, "--keep_fraction=0.4", "--resume")
  stage = m["cache"]["stages"]["ask_llm"]
  assert stage["unreadable_files"] == 2
  inferred = m["counts"]["inferred"]["ask_llm"]
  assert inferred == len(lost) and inferred + m["counts"]["from_cache"]["ask_llm"] == 60
  assert selected_of(out) == before
  assert os.path.exists(os.path.join(out, "_SUCCESS")) and os.path.isdir(cache)
  # --overwrite keeps the cache too: now nothing is inferred.
  m = run_job(corpus, out, tiny_causal_lm_dir, "--keep_fraction=0.4", "--overwrite")
  assert m["counts"]["inferred"] == {"ask_llm": 0}
  assert os.path.exists(os.path.join(directory, "part-garbage.parquet"))  # Never deleted.


def test_cache_that_is_a_file_or_not_writable_is_refused(corpus, tiny_causal_lm_dir,
                                                         tmp_path, capsys):
  a_file = tmp_path / "file"
  a_file.write_text("x")
  with pytest.raises(select_data.UsageError, match="is a file"):
    run_job(corpus, str(tmp_path / "o1"), tiny_causal_lm_dir, f"--cache={a_file}")
  # Not creatable (under a file): even root cannot write there.
  with pytest.raises(select_data.UsageError, match="cannot create --cache"):
    run_job(corpus, str(tmp_path / "o2"), tiny_causal_lm_dir, f"--cache={a_file}/sub")
  assert not os.path.exists(tmp_path / "o1" / "selected")
  main_argv = argv_for(corpus, str(tmp_path / "o3"), tiny_causal_lm_dir, f"--cache={a_file}")
  with pytest.raises(SystemExit) as exit_info:
    select_data.main(main_argv)
  assert exit_info.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and err[0].startswith("error: --cache") and "Traceback" not in err[0]


def test_density_reselect_from_cached_embeddings_matches_a_fresh_run(
    corpus, tiny_bert_dir, tmp_path):
  common = [f"--input={corpus}", "--id_field=id", "--sampler=density",
            f"--embedding_model={tiny_bert_dir}", "--device=cpu", "--keep_fraction=0.3"]

  def run(out, *extra):
    return select_data.run([*common, f"--output={out}", *extra],
                           test_pipeline=TestPipeline(runner="FnApiRunner"))

  first = str(tmp_path / "first")
  m = run(first, "--seed=2")
  assert m["counts"]["inferred"] == {"embeddings": 60}
  assert cache_files(os.path.join(first, "cache"), "embeddings")
  # float16 embeddings from the cache select exactly what the fresh run selected.
  m = run(str(tmp_path / "again"), "--seed=2", f"--cache={first}/cache")
  assert m["counts"]["inferred"] == {"embeddings": 0}
  assert m["cache"]["stages"]["embeddings"]["model_loads"] == 0
  again = scores_of(str(tmp_path / "again"))
  assert again == scores_of(first) and sum(r["selected"] for r in again.values()) == 18


def test_zeroed_cached_embeddings_are_computed_again(corpus, tiny_bert_dir, tmp_path):
  common = [f"--input={corpus}", "--id_field=id", "--sampler=density", "--seed=2",
            f"--embedding_model={tiny_bert_dir}", "--device=cpu", "--keep_fraction=0.3",
            "--report=false"]

  def run(out, *extra):
    return select_data.run([*common, f"--output={out}", *extra],
                           test_pipeline=TestPipeline(runner="FnApiRunner"))

  first = str(tmp_path / "first")
  run(first)
  cache = os.path.join(first, "cache")
  # Zero 10 entries of a cache file in place (a broken writer): they are not trusted.
  path = cache_files(cache, "embeddings")[0]
  codec = CODECS["embeddings"]
  entries = list(codec.rows(pq.read_table(path)))
  rows = [np.zeros_like(r) if i < 10 else r for i, (_, r) in enumerate(entries)]
  with open(path, "wb") as f:
    f.write(score_cache.table_bytes(codec.table([k for k, _ in entries], rows)))
  m = run(str(tmp_path / "again"), f"--cache={cache}")
  assert m["counts"]["inferred"] == {"embeddings": 10}
  assert m["counts"]["from_cache"] == {"embeddings": 50}
  assert m["cache"]["stages"]["embeddings"]["invalid_entries"] == 10
  assert scores_of(str(tmp_path / "again")) == scores_of(first)


@pytest.mark.parametrize("inside", ["scores/cache", "selected", "_temporary/c",
                                    "x/../rejected/c"])
def test_a_cache_inside_what_a_run_replaces_is_refused(corpus, tiny_causal_lm_dir, tmp_path,
                                                       capsys, inside):
  """The run would wipe such a cache when it finishes (and score everything again on every
  run)."""
  out = tmp_path / "out"
  with pytest.raises(SystemExit) as e:
    select_data.main(argv_for(corpus, str(out), tiny_causal_lm_dir, f"--cache={out}/{inside}"))
  err = capsys.readouterr().err.strip().splitlines()
  assert e.value.code == 2 and len(err) == 1, err
  assert err[0].startswith(f"error: --cache {out}/{inside} lies inside {out}/")
  assert not out.exists()


def test_two_worker_processes_write_one_cache(corpus, tiny_causal_lm_dir, tmp_path):
  out = str(tmp_path / "mp")
  argv = argv_for(corpus, out, tiny_causal_lm_dir, "--cache_flush_docs=7",
                  "--direct_num_workers=2", "--direct_running_mode=multi_processing")
  metrics = select_data.run(argv)
  assert metrics["counts"]["valid"] == 60
  cache = os.path.join(out, "cache")
  assert len(cached_keys(cache)) == 60 and len(cache_files(cache)) >= 60 // 7
  m = run_job(corpus, out, tiny_causal_lm_dir, "--resume")
  assert m["counts"]["from_cache"] == {"ask_llm": 60}


def test_sigkill_during_inference_then_resume(tiny_causal_lm_dir, tmp_path):
  n = 600
  corpus = str(tmp_path / "in" / "docs.jsonl")
  write_corpus(corpus, n)
  out = str(tmp_path / "out")
  argv = argv_for(corpus, out, tiny_causal_lm_dir, "--keep_fraction=0.2",
                  "--max_batch_size=4", "--cache_flush_docs=20")
  env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=REPO)
  proc = subprocess.Popen([sys.executable, "-m", "beam_pipelines.select_data", *argv],
                          cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, start_new_session=True)
  cache = os.path.join(out, "cache")
  deadline = time.time() + 240
  try:
    while not cache_files(cache) and proc.poll() is None and time.time() < deadline:
      time.sleep(0.02)
  finally:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  assert cache_files(cache), "no cache file appeared before the run ended"
  assert not os.path.exists(os.path.join(out, "_SUCCESS")), "the run finished before the kill"
  before = cached_keys(cache)
  assert 0 < len(before) < n

  metrics = run_job(corpus, out, tiny_causal_lm_dir, "--keep_fraction=0.2",
                    "--max_batch_size=4", "--cache_flush_docs=20", "--resume")
  c = metrics["counts"]
  assert c["from_cache"]["ask_llm"] == len(before)
  assert c["inferred"]["ask_llm"] == n - len(before)
  fresh = str(tmp_path / "fresh")
  run_job(corpus, fresh, tiny_causal_lm_dir, "--keep_fraction=0.2", "--cache=none")
  assert selected_of(out) == selected_of(fresh)
