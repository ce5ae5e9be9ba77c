"""Progress lines of a model stage: driven by a timer, so they appear while the model
loads and runs, with the local runner's single bundle and with two workers."""
import json
import logging
import re
import time

import pytest
from apache_beam.testing.test_pipeline import TestPipeline

import models.ask_llm
from beam_pipelines import select_data
from transforms import metrics
from transforms.metrics import ModelProgress, model_progress_line

PROGRESS_LINE = re.compile(r"ask_llm: (\d+)/(\d+) documents \(\d+\.\d%\)")


def test_progress_line_says_done_rates_and_time_left():
  line = model_progress_line("ask_llm", 30, 120, 60.0, 0.75, 30.0)
  assert line.startswith("ask_llm: 30/120 documents (25.0%)")
  assert "0.75 docs/s over the last 30 s" in line and "0.50 docs/s overall" in line
  assert "about 2.0 min left" in line  # 90 left at the recent rate
  assert "loading the model (42 s so far); 7 documents queued" in model_progress_line(
      "ask_llm", 0, 7, 42.0, None, 30.0, loading_s=42.0)


def test_timer_logs_while_loading_and_scoring_and_a_last_line(caplog):
  caplog.set_level(logging.INFO, logger=metrics.__name__)
  progress = ModelProgress("unit_stage", interval_s=0.1)
  progress.queued(4)
  progress.loading(True)
  time.sleep(0.35)  # No batch finishes: lines still come.
  progress.loading(False)
  progress.batch_done(2)
  time.sleep(0.25)
  progress.batch_done(2)
  time.sleep(0.25)  # The queue is done: the timer stops.
  lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("unit_stage")]
  assert sum("loading the model" in l for l in lines) >= 2
  assert any(l.startswith("unit_stage: 2/4 documents (50.0%)") for l in lines)
  assert lines[-1].startswith("unit_stage: 4 documents scored in")
  assert not progress._thread.is_alive()


def _slow_scorer(monkeypatch, delay_s):
  original = models.ask_llm.AskLLMScorer.run

  def slow(self, texts):
    time.sleep(delay_s)
    return original(self, texts)
  monkeypatch.setattr(models.ask_llm.AskLLMScorer, "run", slow)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_slow_stage_prints_progress_from_inside(workers, tmp_path, tiny_causal_lm_dir,
                                                  monkeypatch, caplog):
  caplog.set_level(logging.INFO, logger=metrics.__name__)
  metrics._PROGRESS.clear()
  _slow_scorer(monkeypatch, 0.25)
  (tmp_path / "in.jsonl").write_text("".join(
      json.dumps({"id": f"d{i}", "text": f"Text number {i} about things."}) + "\n"
      for i in range(12)))
  argv = [f"--input={tmp_path}/in.jsonl", f"--output={tmp_path}/out", "--id_field=id",
          f"--scorer_model={tiny_causal_lm_dir}", "--max_tokens=128", "--device=cpu",
          "--max_batch_size=2", "--progress_interval=0.3", "--cache=none"]
  if workers == 1:
    select_data.run(argv, test_pipeline=TestPipeline(runner="FnApiRunner"))
  else:  # Threads share this process, so the slowed-down scorer applies.
    select_data.run(argv + ["--direct_num_workers=2",
                            "--direct_running_mode=multi_threading"])
  messages = [r.getMessage() for r in caplog.records]
  during = [m for m in messages if PROGRESS_LINE.match(m)]
  # 6 batches of 0.25 s with a line every 0.3 s: several lines before the stage ends.
  assert len(during) >= 2, messages
  done = [int(PROGRESS_LINE.match(m).group(1)) for m in during]
  assert min(done) < 12
  assert any(re.match(r"ask_llm: \d+ documents scored in", m) for m in messages)


def test_a_local_run_prints_no_banners_or_progress_bars(tmp_path, tiny_causal_lm_dir,
                                                        tiny_bert_dir):
  import os
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  from tests.test_select_data import GOOD
  (tmp_path / "in.jsonl").write_text("".join(
      json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(GOOD)))
  argv = [f"--input={tmp_path}/in.jsonl", f"--output={tmp_path}/out", "--id_field=id",
          "--sampler=ask_llm_density", f"--scorer_model={tiny_causal_lm_dir}",
          f"--embedding_model={tiny_bert_dir}", "--max_tokens=128", "--device=cpu"]
  env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "TF_CPP_MIN_LOG_LEVEL")}
  env.update(HF_HUB_OFFLINE="1", PYTHONPATH=repo)
  done = subprocess.run([sys.executable, "-m", "beam_pipelines.select_data", *argv],
                        cwd=repo, env=env, capture_output=True, text=True, timeout=300)
  out = done.stdout + done.stderr
  assert done.returncode == 0, out[-3000:]
  assert "Done in" in out
  for noise in ("cudart_stub", "absl::InitializeLog", "cpu_feature_guard", "de-quantizing",
                "Loading weights", "it/s]"):
    assert noise not in out, (noise, out[-3000:])


def test_verbose_brings_back_what_a_run_hides(tmp_path):
  """--verbose: Beam's INFO log (and TensorFlow's start-up lines where it prints them)."""
  import os
  import subprocess
  import sys
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  (tmp_path / "in.jsonl").write_text("".join(
      json.dumps({"id": f"d{i}", "text": f"document {i} about rivers"}) + "\n"
      for i in range(20)))
  env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "TF_CPP_MIN_LOG_LEVEL")}
  env.update(HF_HUB_OFFLINE="1", PYTHONPATH=repo)
  outputs = {}
  for flag in ("--verbose=false", "--verbose"):
    done = subprocess.run(
        [sys.executable, "-m", "beam_pipelines.select_data", f"--input={tmp_path}/in.jsonl",
         f"--output={tmp_path}/{flag[2:]}", "--sampler=random", "--cache=none", flag],
        cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs[flag] = done.stdout + done.stderr
  beam_info = "Converting string literal type hint"  # an INFO line of Beam's own
  assert beam_info in outputs["--verbose"]
  assert beam_info not in outputs["--verbose=false"]
  for noise in ("cudart_stub", "absl::InitializeLog"):
    assert noise not in outputs["--verbose=false"]
