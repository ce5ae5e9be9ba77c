"""The README is a short user guide: it fits in 350 lines, links to the option reference
(docs/options.md, generated and checked in tests/test_docs.py), lists every sampler in
one table, and CI runs its test command."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_LINES = 350


def _readme():
  return open(os.path.join(ROOT, "README.md")).read()


def test_readme_is_short():
  lines = _readme().count("\n")
  assert lines <= MAX_LINES, (f"README.md has {lines} lines (at most {MAX_LINES}): move "
                              "reference material to docs/")


def test_readme_links_to_the_option_reference():
  assert "(docs/options.md)" in _readme()


def test_ci_runs_the_readme_test_command():
  readme = _readme()
  assert "bash scripts/test.sh" in readme and "bash scripts/run_example.sh" in readme
  assert "bash scripts/test.sh" in open(os.path.join(ROOT, ".ci", "run")).read()


def test_every_sampler_is_in_the_readme_table():
  from beam_pipelines.samplers import SAMPLERS
  text = _readme()
  section = text[text.index("## Choosing a sampler"):]
  table = re.search(r"^\|.*?(?=\n[^|])", section, flags=re.M | re.S).group(0)
  documented = re.findall(r"^\| `([a-z_]+)`", table, flags=re.M)
  assert documented == list(SAMPLERS), "README's sampler table differs from samplers.py"
