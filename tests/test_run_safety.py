"""The job's own safety end to end: outputs replaced only by a run that succeeded,
`_SUCCESS` last, inputs never inside what a run replaces, models without trained weights
refused."""
import json
import os
import shutil

import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from beam_pipelines import select_data
from tests.test_select_data import FEATURES, GOOD, read_jsonl, read_selected
from tests.test_write import _listing as _all_files


def _listing(out):
  """The run's files: the score cache (OUTPUT/cache) is not part of a run's outputs."""
  return [f for f in _all_files(out) if not f.startswith("cache/")]


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
  # metrics.json is written after every output but the report (which may fail without
  # costing it); the commit's order is tests/test_output_transaction.py's.
  assert os.stat(os.path.join(out, "metrics.json")).st_mtime_ns >= max(
      os.stat(os.path.join(out, f)).st_mtime_ns for f in files
      if f not in ("metrics.json", "_SUCCESS", "report.html", "report.json"))
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
  assert any(f.startswith("cache/ask_llm/") for f in _all_files(out))  # kept as well

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
                               "rejected_by_reason": {}, "selected": 5,
                               "files": {"matched": 1, "read": 1, "not_read": 0,
                                         "duplicate": 0},
                               "duplicates": {"exact": 0}}  # --dedup=exact's funnel
  assert metrics["options"]["sampler"] == "random" and "note" in metrics
  assert len(read_selected(out, {k: v for k, v in FEATURES.items()
                                 if k != "ask_llm_score"})) == 5
  assert len(read_jsonl(os.path.join(out, "scores", "*.jsonl"))) == 12
  # The report too: its statistics were complete before the last step drew it.
  assert json.load(open(os.path.join(out, "report.json")))["documents"] == 12
  page = open(os.path.join(out, "report.html"), encoding="utf-8").read()
  assert "written by the pipeline" in page and "data-chart=\"histogram:chars\"" in page


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
