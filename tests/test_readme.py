"""The README documents every option, and CI runs the README's test command."""
import os
import re

from beam_pipelines.options import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme():
  return open(os.path.join(ROOT, "README.md")).read()


def test_every_option_is_in_the_readme_table():
  table = "\n".join(l for l in _readme().splitlines() if l.startswith("| `--"))
  documented = set(re.findall(r"`(--[a-z0-9_]+)`", table))
  options = {a.option_strings[0] for a in build_parser()._actions
             if a.option_strings and a.option_strings[0] != "-h"}
  assert options - documented == set(), "options missing from README"
  assert documented - options == set(), "README documents options that do not exist"


def test_ci_runs_the_readme_test_command():
  readme = _readme()
  assert "bash scripts/test.sh" in readme and "bash scripts/run_example.sh" in readme
  assert "bash scripts/test.sh" in open(os.path.join(ROOT, ".ci", "run")).read()


def test_every_sampler_is_in_the_readme_table():
  from beam_pipelines.samplers import SAMPLERS
  text = _readme()
  table = text[text.index("### Samplers"):].split("\n\n", 2)[1]
  documented = re.findall(r"^\| `([a-z_]+)`", table, flags=re.M)
  assert documented == list(SAMPLERS), "README's sampler table differs from samplers.py"
