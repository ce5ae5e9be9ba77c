"""--config=FILE (beam_pipelines/config_file.py): options from YAML or JSON, local or
gs://, the command line overriding them, unknown keys refused in one line; metrics.json
and the report record the file's path and sha256."""
import hashlib
import json

import pytest
from apache_beam.options.pipeline_options import DirectOptions
from apache_beam.testing.test_pipeline import TestPipeline

from beam_pipelines import config_file, select_data
from beam_pipelines.options import parse_args
from tests.test_run_safety import _main_error


def _write(path, text):
  with open(path, "w") as f:
    f.write(text)
  return str(path)


def test_yaml_options_with_the_command_line_overriding(tmp_path):
  path = _write(tmp_path / "c.yaml", "input: a.jsonl\noutput: o\nsampler: random\n"
                "keep_fields: [url, meta.lang]\nreport: false\nkeep_count: 5\n"
                "id_field: null\ndirect_num_workers: 2\n")
  args, options = parse_args([f"--config={path}", "--keep_count=7"])
  assert (args.input, args.output, args.sampler) == ("a.jsonl", "o", "random")
  assert args.keep_fields == ("url", "meta.lang") and args.report is False
  assert args.keep_count == 7 and args.id_field is None  # the flag wins; null: default
  assert options.view_as(DirectOptions).direct_num_workers == 2  # a Beam option
  assert args.config == path
  assert args.config_sha256 == hashlib.sha256(open(path, "rb").read()).hexdigest()
  args, _ = parse_args(["--config", path, "--output=elsewhere"])
  assert args.output == "elsewhere" and args.keep_count == 5


def test_json_config_and_no_config(tmp_path):
  path = _write(tmp_path / "c.json", json.dumps({"input": "a", "output": "o",
                                                 "overwrite": True, "seed": 3}))
  args, _ = parse_args([f"--config={path}"])
  assert args.overwrite is True and args.seed == 3
  args, _ = parse_args(["--input=a", "--output=o"])
  assert args.config is None and args.config_sha256 is None


@pytest.mark.parametrize("text, message", [
    ("input: a\noutput: o\ntxt_field: body\n",
     "unknown key 'txt_field' (keys are option names without dashes); did you mean "
     "text_field?"),
    ("input: a\noutput: o\n--sampler: random\n", "unknown key '--sampler'"),
    ("- input\n- output\n", "must hold a mapping of option names to values, not a list"),
    ("input: [a\n", "not valid YAML"),
    ("input: a\noutput: o\nkeep_fields: {a: 1}\n", "keep_fields: an option value cannot be "
     "a mapping"),
    ("input: a\noutput: o\nconfig: other.yaml\n", "a config file cannot name another"),
])
def test_a_bad_config_is_one_error_line(tmp_path, capsys, text, message):
  path = _write(tmp_path / "c.yaml", text)
  err = _main_error([f"--config={path}"], capsys).strip().splitlines()
  assert err[-1].startswith(f"error: --config {path}: ") and message in err[-1], err
  assert not any("Traceback" in line for line in err)


def test_a_missing_config_is_one_error_line(tmp_path, capsys):
  err = _main_error([f"--config={tmp_path}/nope.yaml"], capsys).strip().splitlines()[-1]
  assert err.startswith(f"error: --config {tmp_path}/nope.yaml: cannot be read")


def test_a_run_records_the_config_in_metrics_and_report(tmp_path):
  with open(tmp_path / "d.jsonl", "w") as f:
    for i in range(12):
      f.write(json.dumps({"doc_id": f"d{i}", "body": f"text number {i} on rivers"}) + "\n")
  path = _write(tmp_path / "run.yaml", f"input: {tmp_path}/d.jsonl\noutput: {tmp_path}/o\n"
                "text_field: body\nid_field: doc_id\nsampler: random\nkeep_count: 4\n"
                "cache: none\n")
  metrics = select_data.run([f"--config={path}"],
                            test_pipeline=TestPipeline(runner="FnApiRunner"))
  digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
  assert metrics["counts"]["selected"] == 4
  saved = json.load(open(tmp_path / "o" / "metrics.json"))
  assert saved["config_file"] == {"path": path, "sha256": digest}
  assert saved["options"]["config"] == path
  html = open(tmp_path / "o" / "report.html").read()
  assert "config file" in html and digest in html


def test_a_gs_config_is_read_with_beams_filesystems(tmp_path):
  from apache_beam.io.filesystems import FileSystems
  from tests.gcs_emulator import running_emulator
  from templates import main as launcher
  with running_emulator("config-bucket") as root:
    data = b"sampler: random\nkeep_fields: [url]\nseed: 11\n"
    with FileSystems.create(f"{root}/configs/run.yaml") as f:
      f.write(data)
    # As the Flex Template launcher passes it: parameters as --name=value.
    argv = launcher.launcher_argv([f"--input={root}/in/*.jsonl", f"--output={root}/out",
                                   f"--config={root}/configs/run.yaml"], {})
    args, _ = parse_args(argv)
  assert (args.sampler, args.keep_fields, args.seed) == ("random", ("url",), 11)
  assert args.config_sha256 == hashlib.sha256(data).hexdigest()


def test_flags_and_beam_flags_from_a_file():
  ours = {"overwrite": type("A", (), {"nargs": "?"})()}
  argv = config_file.to_argv("c", {"overwrite": False, "save_main_session": True,
                                   "streaming": False}, ours, config_file.beam_option_names())
  assert argv == ["--overwrite=false", "--save_main_session"]
