"""The job's own safety: options checked before anything runs, outputs replaced only by a
run that succeeded, `_SUCCESS` last, inputs never inside what a run replaces, models
without trained weights refused, and density deterministic at any size."""
import json
import os
import shutil
import socket

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline

from beam_pipelines import select_data
from beam_pipelines import options as job_options
from tests.test_select_data import FEATURES, GOOD, read_jsonl, read_selected
from transforms import write as write_lib


def _docs(d, n=len(GOOD)):
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, "docs.jsonl"), "w") as f:
    for i in range(n):
      f.write(json.dumps({"id": f"d{i:04d}", "text": GOOD[i % len(GOOD)] + f" ({i})"}) + "\n")


def _main_error(argv, capsys):
  """Runs the CLI; returns stderr. It must exit 2 with one `error:` line, no traceback."""
  with pytest.raises(SystemExit) as e:
    select_data.main(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if l.strip()]
  assert "Traceback" not in err
  assert lines[-1].startswith("error: ") and len(lines) <= 2, err
  return err


def _closed_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.parametrize("extra,message", [
    (["--sampler=density", "--seed=-1"], "--seed"),
    (["--sampler=density", "--bucket_width=inf"], "--bucket_width"),
    (["--yes_tokens=,"], "--yes_tokens"),
    (["--num_rank_partitions=100000000"], "at most 100,000"),
    (["--runner=NoSuchRunner"], "--runner=NoSuchRunner"),
    (["--keep_fracton=0.2"], "unknown option"),
    (["--max_tokens=10"], "--max_tokens=10"),
    (["--yes_tokens=yes,zebracornucopia"], "'zebracornucopia' is not a single token"),
    (["--prompt=@/dev/zero"], "prompt file"),
])
def test_bad_options_fail_in_one_line_before_the_run(tmp_path, tiny_causal_lm_dir, extra,
                                                     message, capsys):
  _docs(str(tmp_path / "in"))
  out = tmp_path / "out"
  err = _main_error([f"--input={tmp_path}/in/*.jsonl", f"--output={out}",
                     f"--scorer_model={tiny_causal_lm_dir}", "--device=cpu", *extra], capsys)
  assert message in err
  assert not out.exists() or not any(out.iterdir())  # nothing written


def test_output_that_cannot_be_written(tmp_path, capsys):
  _docs(str(tmp_path / "in"))
  (tmp_path / "afile").write_text("x")
  base = [f"--input={tmp_path}/in/*.jsonl", "--sampler=random"]
  assert "is a file" in _main_error(base + [f"--output={tmp_path}/afile"], capsys)
  assert "cannot create --output" in _main_error(
      base + [f"--output={tmp_path}/afile/sub"], capsys)


def test_unreachable_gcs_fails_fast_with_a_hint(tmp_path, monkeypatch, capsys):
  # A GCS endpoint where nothing listens: the client retries for minutes; the check
  # gives up after its timeout and says what to check.
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{_closed_port()}")
  monkeypatch.setattr(job_options, "REMOTE_CHECK_TIMEOUT_S", 3.0)
  _docs(str(tmp_path / "in"))
  err = _main_error([f"--input={tmp_path}/in/*.jsonl", "--output=gs://nobucket/out",
                     "--sampler=random"], capsys)
  assert "--output gs://nobucket/out" in err and "STORAGE_EMULATOR_HOST" in err
  err = _main_error(["--input=gs://nobucket/in/*.jsonl", f"--output={tmp_path}/o",
                     "--sampler=random"], capsys)
  assert "--input" in err and ("did not answer" in err or "credentials" in err.lower()
                               or "nobucket" in err)


def test_input_inside_the_replaced_outputs_is_refused(tmp_path):
  _docs(str(tmp_path / "in"))
  out = str(tmp_path / "out")
  argv = [f"--input={tmp_path}/in/*.jsonl", f"--output={out}", "--sampler=random",
          "--keep_count=3"]
  select_data.run(argv, test_pipeline=TestPipeline(runner="FnApiRunner"))
  before = sorted(os.listdir(os.path.join(out, "selected")))
  for pattern in (f"{out}/selected/*.tfrecord", f"{out}/scores/*"):
    with pytest.raises(select_data.UsageError, match="lies inside"):
      select_data.run([f"--input={pattern}", f"--output={out}", "--overwrite",
                       "--sampler=random", "--input_format=tfrecord"
                       if "selected" in pattern else "--input_format=jsonl"])
  assert sorted(os.listdir(os.path.join(out, "selected"))) == before


def _listing(out):
  return sorted(os.path.relpath(os.path.join(d, f), out)
                for d, _, files in os.walk(out) for f in files)


def test_success_marker_and_failed_rerun_keeps_the_previous_results(tmp_path,
                                                                    tiny_causal_lm_dir):
  _docs(str(tmp_path / "in"))
  out = str(tmp_path / "out")
  base = [f"--input={tmp_path}/in/*.jsonl", f"--output={out}", "--id_field=id",
          "--device=cpu", "--max_tokens=128", "--keep_count=4"]
  metrics = select_data.run(base + [f"--scorer_model={tiny_causal_lm_dir}"],
                            test_pipeline=TestPipeline(runner="FnApiRunner"))
  files = _listing(out)
  assert "_SUCCESS" in files and "metrics.json" in files
  assert not any(f.startswith("_temporary") or ".tmp-" in f for f in files)
  success = json.load(open(os.path.join(out, "_SUCCESS")))
  assert success["files"] == len(files) - 1
  assert json.load(open(os.path.join(out, "metrics.json")))["counts"] == metrics["counts"]
  # metrics.json is moved in after every other output.
  assert os.stat(os.path.join(out, "metrics.json")).st_mtime_ns >= max(
      os.stat(os.path.join(out, f)).st_mtime_ns for f in files
      if f not in ("metrics.json", "_SUCCESS"))
  before = {f: open(os.path.join(out, f), "rb").read() for f in files}

  # A rerun with --overwrite whose model fails to load on the worker: the earlier
  # results must be exactly as they were, and nothing of the failed run is left.
  broken = tmp_path / "broken_model"
  shutil.copytree(tiny_causal_lm_dir, broken)
  for name in os.listdir(broken):
    if name.endswith(".safetensors"):
      (broken / name).write_bytes(b"not a safetensors file")
  with pytest.raises(Exception):
    select_data.run(base + [f"--scorer_model={broken}", "--overwrite", "--keep_count=2"],
                    test_pipeline=TestPipeline(runner="FnApiRunner"))
  assert _listing(out) == files
  assert {f: open(os.path.join(out, f), "rb").read() for f in files} == before

  # A successful rerun replaces them, keeping a file of the user's.
  (tmp_path / "out" / "notes.txt").write_text("mine")
  metrics = select_data.run(base + [f"--scorer_model={tiny_causal_lm_dir}", "--overwrite",
                                    "--keep_count=2"],
                            test_pipeline=TestPipeline(runner="FnApiRunner"))
  assert len(read_selected(out)) == 2 and metrics["counts"]["selected"] == 2
  assert os.path.exists(os.path.join(out, "_SUCCESS"))
  assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
  assert not os.path.exists(os.path.join(out, "_temporary"))


def test_finalize_in_the_pipeline_when_nobody_waits(tmp_path):
  """A Flex Template launch returns at once: the pipeline's last step must write
  metrics.json and _SUCCESS itself, after every other output."""
  _docs(str(tmp_path / "in"))
  out = str(tmp_path / "out")
  got = select_data.run([f"--input={tmp_path}/in/*.jsonl", f"--output={out}",
                         "--sampler=random", "--keep_count=5", "--id_field=id",
                         f"--template_location={tmp_path}/template.json"],
                        test_pipeline=TestPipeline(runner="FnApiRunner"))
  assert got is None
  files = _listing(out)
  assert "_SUCCESS" in files and not any(f.startswith("_temporary") for f in files)
  metrics = json.load(open(os.path.join(out, "metrics.json")))
  assert metrics["counts"] == {"read": 12, "valid": 12, "rejected": 0, "accounted": True,
                               "rejected_by_reason": {}, "selected": 5}
  assert metrics["options"]["sampler"] == "random" and "note" in metrics
  assert len(read_selected(out, {k: v for k, v in FEATURES.items()
                                 if k != "ask_llm_score"})) == 5
  assert len(read_jsonl(os.path.join(out, "scores", "*.jsonl"))) == 12


def test_finalize_output_resumes_after_a_crash_part_way(tmp_path):
  out = tmp_path / "out"
  (out / "selected").mkdir(parents=True)
  (out / "selected" / "old-0.tfrecord").write_text("old")
  (out / "metrics.json").write_text("{}")
  (out / "_SUCCESS").write_text("{}")
  (out / "mine.txt").write_text("user")
  staging = tmp_path / "out" / "_temporary" / "run1"
  (staging / "selected").mkdir(parents=True)
  (staging / "selected" / "new-0.tfrecord").write_text("new0")
  (staging / "selected" / "new-1.tfrecord").write_text("new1")
  (staging / "scores").mkdir()
  (staging / "scores" / "part-0.jsonl").write_text("{}")
  replaces = ("selected", "scores", "metrics.json")
  # A first attempt dies after fixing its manifest and moving one file.
  real_move = write_lib._move
  calls = []

  def dying_move(src, dst):
    if calls:
      raise OSError("worker lost")
    calls.append(src)
    real_move(src, dst)
  write_lib._move = dying_move
  try:
    with pytest.raises(OSError):
      write_lib.finalize_output(str(out), str(staging), {"counts": {"selected": 2}}, replaces)
  finally:
    write_lib._move = real_move
  assert not (out / "_SUCCESS").exists()  # not a finished run any more
  write_lib.finalize_output(str(out), str(staging), {"counts": {"selected": 2}}, replaces)
  assert _listing(str(out)) == ["_SUCCESS", "metrics.json", "mine.txt", "scores/part-0.jsonl",
                                "selected/new-0.tfrecord", "selected/new-1.tfrecord"]
  assert json.loads((out / "metrics.json").read_text()) == {"counts": {"selected": 2}}


def test_perplexity_refuses_a_model_without_its_lm_head(tmp_path, tiny_bert_dir, capsys):
  """An encoder-only checkpoint loaded as a causal LM gets a random head: refused, with
  the model and the missing weights named, in one line."""
  _docs(str(tmp_path / "in"))
  out = tmp_path / "out"
  err = _main_error([f"--input={tmp_path}/in/*.jsonl", f"--output={out}",
                     "--sampler=perplexity", f"--scorer_model={tiny_bert_dir}",
                     "--device=cpu"], capsys)
  assert "no trained weights" in err and tiny_bert_dir in err and "cls." in err
  assert not os.path.exists(out / "_SUCCESS") and not os.path.exists(out / "_temporary")


def _many_docs(d, n):
  rng = np.random.default_rng(3)
  words = ("river mountain cell energy market vote poem engine orbit fever harvest bridge "
           "museum glacier protein ledger violin desert tide circuit").split()
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, "docs.jsonl"), "w") as f:
    for i in range(n):
      f.write(json.dumps({"id": f"u{i:05d}", "text": " ".join(rng.choice(words, 10))}) + "\n")


def test_density_is_deterministic_above_the_width_sample(tmp_path, tiny_bert_dir):
  """2,000 documents: more than the 500 the auto width is computed from, so a random
  sample would change the width and the ranks between runs and worker counts."""
  _many_docs(str(tmp_path / "in"), 2000)
  runs = []
  for name, extra in (("a", []), ("b", []),
                      ("c", ["--direct_num_workers=2",
                             "--direct_running_mode=multi_threading"])):
    out = str(tmp_path / name)
    metrics = select_data.run(
        [f"--input={tmp_path}/in/*.jsonl", f"--output={out}", "--id_field=id",
         "--sampler=density", f"--embedding_model={tiny_bert_dir}", "--device=cpu",
         "--keep_fraction=0.1", "--sketch_rows=64", "--sketch_buckets=512", "--seed=5",
         "--embedding_max_tokens=16", *extra],
        test_pipeline=TestPipeline(runner="FnApiRunner", options=PipelineOptions(extra)))
    ranks = {s["id"]: s["rank"] for s in read_jsonl(os.path.join(out, "scores", "*.jsonl"))
             if s["selected"]}
    runs.append((metrics["sketch"]["bucket_width"], ranks))
  assert len(runs[0][1]) == 200
  assert runs[0] == runs[1] == runs[2]
