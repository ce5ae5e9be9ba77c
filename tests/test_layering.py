"""Dependencies point one way: models < transforms < beam_pipelines. The model layer knows
texts, not Documents (and Beam only through models/storage.py); transforms know nothing of
the job's options or graph; transforms/algorithms/ is the math without Beam."""
import ast
import pathlib
import subprocess
import sys

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


# --- Beam ---------------------------------------------------------------------------
# models/ knows texts and arrays, not pipelines: Beam only through the one storage seam
# (gs:// and local files). transforms/algorithms/ is the job's math without Beam, so a
# script or benchmark can import it without importing Beam.

STORAGE_SEAM = "models/storage.py"
ALGORITHMS = ROOT / "transforms" / "algorithms"
# What the pure algorithms may import besides themselves: no Beam, and nothing of the job
# (no Documents, metrics or files), so that they stay math.
ALGORITHMS_MAY_IMPORT = set(sys.stdlib_module_names) | {"__future__", "numpy", "scipy"}


def _imported_modules(path: pathlib.Path):
  """(line, full dotted name) of every absolute import in the file, at any depth; a
  relative import gives its package path ("." for `from . import x`)."""
  for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom):
      yield node.lineno, "." * node.level + (node.module or "")


def test_models_import_beam_only_in_the_storage_seam():
  bad = [f"{path.relative_to(ROOT)}:{line} imports apache_beam"
         for path in _files("models") if str(path.relative_to(ROOT)) != STORAGE_SEAM
         for line, pkg in _imported_packages(path) if pkg == "apache_beam"]
  assert not bad, ("only models/storage.py may import apache_beam (use its match/open_file/"
                   "checksum):\n" + "\n".join(bad))


def test_the_storage_seam_imports_beam_inside_its_functions():
  tree = ast.parse((ROOT / STORAGE_SEAM).read_text())
  top_level = [alias.name for n in tree.body if isinstance(n, ast.Import) for alias in n.names]
  top_level += [n.module or "" for n in tree.body if isinstance(n, ast.ImportFrom)]
  assert not [m for m in top_level if m.split(".")[0] == "apache_beam"], (
      "models/storage.py imports Beam inside its functions: importing models/ must not "
      "import Beam")


def _algorithm_files():
  files = sorted(ALGORITHMS.rglob("*.py"))
  assert len(files) > 1, "no transforms/algorithms/ modules"
  return files


def test_the_algorithms_import_no_beam():
  bad = [f"{path.relative_to(ROOT)}:{line} imports apache_beam"
         for path in _algorithm_files()
         for line, pkg in _imported_packages(path) if pkg == "apache_beam"]
  assert not bad, ("transforms/algorithms/ is the math without Beam: its Beam wrappers "
                   "live in transforms/:\n" + "\n".join(bad))


def test_the_algorithms_import_nothing_of_the_job_outside_them():
  bad = [f"{path.relative_to(ROOT)}:{line} imports {name}"
         for path in _algorithm_files() for line, name in _imported_modules(path)
         if not (name.startswith(".") or name == "transforms.algorithms"
                 or name.startswith("transforms.algorithms.")
                 or name.split(".")[0] in ALGORITHMS_MAY_IMPORT)]
  assert not bad, ("transforms/algorithms/ imports only itself, the standard library, "
                   "numpy and scipy:\n" + "\n".join(bad))


def test_the_module_check_sees_function_level_imports(tmp_path):
  f = tmp_path / "m.py"
  f.write_text("def f():\n  import apache_beam as beam\n  from transforms.records import x\n"
               "  from . import y\n")
  assert [name for _, name in _imported_modules(f)] == ["apache_beam", "transforms.records",
                                                        "."]


def test_importing_the_algorithms_and_models_does_not_import_beam():
  # In a fresh interpreter: this one has Beam loaded already by other tests.
  modules = sorted(f"transforms.algorithms.{p.stem}" for p in ALGORITHMS.glob("*.py")
                   if p.stem != "__init__")
  modules += [f"models.{p.stem}" for p in sorted((ROOT / "models").glob("*.py"))
              if p.stem != "__init__"]
  code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
          + "print(sorted(m for m in sys.modules if m.split('.')[0] == 'apache_beam'))")
  out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=300, check=True).stdout.strip()
  assert out == "[]", f"importing {', '.join(modules)} imported Beam: {out[:500]}"
