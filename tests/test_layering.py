"""Dependencies point one way: models < transforms < beam_pipelines. The model layer knows
texts, not Documents; transforms know nothing of the job's options or graph."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
LAYERS = ["models", "transforms", "beam_pipelines"]


def _imported_packages(path: pathlib.Path):
  """(line, top-level package) of every import in the file, at any depth (function-level
  imports count too)."""
  tree = ast.parse(path.read_text(), filename=str(path))
  package = path.parent.name
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name.split(".")[0]
    elif isinstance(node, ast.ImportFrom):
      if node.level:  # relative: `from . import x` stays in this package
        yield node.lineno, package
      elif node.module:
        yield node.lineno, node.module.split(".")[0]


def _files(layer):
  files = sorted((ROOT / layer).rglob("*.py"))
  assert files, f"no .py files under {layer}/"
  return files


@pytest.mark.parametrize("layer", LAYERS[:-1])
def test_a_layer_imports_nothing_above_it(layer):
  above = set(LAYERS[LAYERS.index(layer) + 1:])
  bad = [f"{path.relative_to(ROOT)}:{line} imports {pkg}"
         for path in _files(layer) for line, pkg in _imported_packages(path) if pkg in above]
  assert not bad, "\n".join(bad)


def test_the_check_sees_function_level_imports(tmp_path):
  f = tmp_path / "m.py"
  f.write_text("def f():\n  from transforms.records import Document\n  import beam_pipelines\n")
  assert [pkg for _, pkg in _imported_packages(f)] == ["transforms", "beam_pipelines"]
