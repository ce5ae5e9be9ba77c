"""docs/: the option reference is what scripts/make_options_doc.py writes from the parser
now, every relative link of the README and docs/ leads somewhere, and no page holds a
path of the machine it was written on."""
import glob
import importlib.util
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")
PAGES = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(DOCS, "*.md")))


def _make_options_doc():
  spec = importlib.util.spec_from_file_location(
      "make_options_doc", os.path.join(ROOT, "scripts", "make_options_doc.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_options_doc_is_up_to_date():
  """Fails when an option, a default or a help text changed: run
  `python scripts/make_options_doc.py` and commit docs/options.md."""
  with open(os.path.join(DOCS, "options.md"), encoding="utf-8") as f:
    current = f.read()
  assert current == _make_options_doc().render(), (
      "docs/options.md is stale: run python scripts/make_options_doc.py")


def test_options_doc_lists_every_option_once():
  from beam_pipelines.options import build_parser
  text = open(os.path.join(DOCS, "options.md"), encoding="utf-8").read()
  documented = re.findall(r"^\| `(--[a-z0-9_]+)` \|", text, flags=re.M)
  options = [a.option_strings[0] for a in build_parser()._actions  # pylint: disable=protected-access
             if a.option_strings and a.option_strings[0] != "-h"]
  assert sorted(documented) == sorted(options)


def test_options_doc_check_mode(tmp_path):
  module = _make_options_doc()
  path = tmp_path / "options.md"
  assert module.main(["--output", str(path)]) == 0
  assert module.main(["--check", "--output", str(path)]) == 0
  path.write_text(path.read_text() + "stale\n")
  assert module.main(["--check", "--output", str(path)]) == 1


def _without_code(text):
  return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def _slug(heading):
  """GitHub's anchor for a heading."""
  text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
  return text.replace(" ", "-")


def _anchors(path):
  text = _without_code(open(path, encoding="utf-8").read())
  return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_relative_links_resolve(page):
  text = _without_code(open(page, encoding="utf-8").read())
  broken = []
  for target in re.findall(r"\]\(([^)\s]+)\)", text):
    if re.match(r"[a-z]+:", target):
      continue
    path, _, anchor = target.partition("#")
    full = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
    if not os.path.exists(full):
      broken.append(target)
    elif anchor and full.endswith(".md") and anchor not in _anchors(full):
      broken.append(target)
  assert broken == []


@pytest.mark.parametrize("page", PAGES, ids=os.path.basename)
def test_no_machine_paths(page):
  text = open(page, encoding="utf-8").read()
  found = re.findall(r"(?<![\w.])/(?:work|home|tmp|root|Users|mnt|scratch)/\S*", text)
  assert found == [], "use paths relative to the repository or placeholders"


def test_docs_dataflow_passes_only_template_parameters_or_beam_options():
  """The same check as tests/test_templates.py makes on templates/README.md."""
  import json

  from apache_beam.options.pipeline_options import PipelineOptions
  text = open(os.path.join(DOCS, "dataflow.md"), encoding="utf-8").read()
  metadata = json.load(open(os.path.join(ROOT, "templates", "metadata.json")))
  params = {p["name"] for p in metadata["parameters"]}
  beam_options = set(PipelineOptions([]).get_all_options())
  used = set()
  for value in re.findall(r"--parameters[= ](.*)", text):
    value = value.strip().rstrip("\\`").strip().strip("'\"")
    for part in value.split(","):
      key = part.split("=", 1)[0].strip("'\"")
      if "=" in part and re.fullmatch(r"[a-z_]+", key):
        used.add(key)
  assert {"input", "output", "scorer_model", "sdk_container_image"} <= used
  assert used - params - beam_options == set()
