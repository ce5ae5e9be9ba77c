"""Option checks before the run (beam_pipelines/checks.py): each bad option is one
`error:` line and exit code 2, before any model is loaded or anything is written."""
import os
import socket

import pytest

from beam_pipelines import checks
from tests.test_run_safety import _docs, _main_error


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
  monkeypatch.setattr(checks, "REMOTE_CHECK_TIMEOUT_S", 3.0)
  _docs(str(tmp_path / "in"))
  err = _main_error([f"--input={tmp_path}/in/*.jsonl", "--output=gs://nobucket/out",
                     "--sampler=random"], capsys)
  assert "--output gs://nobucket/out" in err and "STORAGE_EMULATOR_HOST" in err
  err = _main_error(["--input=gs://nobucket/in/*.jsonl", f"--output={tmp_path}/o",
                     "--sampler=random"], capsys)
  assert "--input" in err and ("did not answer" in err or "credentials" in err.lower()
                               or "nobucket" in err)
  for extra, option in ((["--sampler=density", "--sketch_from=gs://nobucket/sketch.npz"],
                         "--sketch_from"),
                        (["--prompt=@gs://nobucket/prompt.txt"], "--prompt")):
    err = _main_error([f"--input={tmp_path}/in/*.jsonl", f"--output={tmp_path}/o2",
                       *extra], capsys)
    assert option in err and not (tmp_path / "o2").exists()




def test_help_imports_neither_beam_nor_torch_nor_tensorflow():
  """--help must not pay for Beam's (about 2 s) or the model stages' imports."""
  import subprocess
  import sys
  out = subprocess.run([sys.executable, "-X", "importtime", "-m", "beam_pipelines.select_data",
                        "--help"], capture_output=True, text=True, timeout=120,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert out.returncode == 0 and "--sampler" in out.stdout
  imported = {line.split("|")[-1].strip().split(".")[0]
              for line in out.stderr.splitlines() if line.startswith("import time:")}
  assert not {"torch", "tensorflow", "apache_beam", "matplotlib"} & imported, imported


def test_the_parsers_cache_defaults_are_the_caches():
  from beam_pipelines import options
  from transforms import score_cache
  assert options.CACHE_FLUSH_DOCS == score_cache.DEFAULT_FLUSH_DOCS
  assert options.CACHE_FLUSH_SECONDS == score_cache.DEFAULT_FLUSH_SECONDS
