"""benchmarks/ is a package of modules run as `python -m benchmarks.NAME`: every module
imports (none is run here), none edits the import path, none defaults a data argument to
a file outside the repository, and none takes the name of a product module. Plus the
shared harness's orders and AUC."""
import importlib
import pathlib
import re
import tempfile

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"
MODULES = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem != "__init__")
# The arguments that name a dev data file: required, never defaulted.
DATA_ARGUMENTS = {"data", "weborganizer", "fineweb"}


def test_benchmarks_is_a_package():
  assert (BENCHMARKS / "__init__.py").is_file()
  assert "harness" in MODULES and len(MODULES) > 10


@pytest.mark.parametrize("name", MODULES)
def test_every_benchmark_module_imports(name):
  module = importlib.import_module(f"benchmarks.{name}")
  if hasattr(module, "main"):  # a runnable benchmark exposes its parser (checked below)
    assert callable(getattr(module, "build_parser", None)), f"{name}: no build_parser()"


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_no_benchmark_edits_the_import_path(path):
  source = path.read_text()
  assert not re.search(r"\bsys\s*\.\s*path\b", source), f"{path.name} edits sys.path"
  # Benchmarks import each other as benchmarks.NAME, never as top-level modules.
  flat = [m for m in MODULES
          if re.search(rf"^\s*(from|import)\s+{m}\b", source, flags=re.M)]
  assert not flat, f"{path.name} imports {flat} as top-level modules"


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_no_benchmark_names_the_shared_data_directory(path):
  source = path.read_text()
  assert not re.search(r"shared[\"'/\\]|[\"']shared[\"']", source), \
      f"{path.name} points at a data directory outside the repository"


def _inside(path: str, directory: str) -> bool:
  path, directory = pathlib.Path(path).resolve(), pathlib.Path(directory).resolve()
  return path == directory or directory in path.parents


def _parsers():
  for name in MODULES:
    module = importlib.import_module(f"benchmarks.{name}")
    if hasattr(module, "build_parser"):
      yield name, module.build_parser()


def test_data_arguments_are_required_and_no_default_leaves_the_repository():
  scratch = {tempfile.gettempdir(), "/tmp"}
  seen = set()
  for name, parser in _parsers():
    for action in parser._actions:  # pylint: disable=protected-access
      if action.dest in DATA_ARGUMENTS:
        seen.add(action.dest)
        assert action.required and action.default is None, \
            f"{name}: --{action.dest} must be a required argument without a default"
      default = action.default
      if isinstance(default, str) and ("/" in default or default.startswith(".")):
        # A path default: in the repository, or scratch space (caches, outputs).
        resolved = str((ROOT / default).resolve())
        assert _inside(resolved, str(ROOT)) or any(_inside(resolved, s) for s in scratch), \
            f"{name}: --{action.dest} defaults to {default}, outside the repository"
  assert seen == DATA_ARGUMENTS


def test_data_arguments_have_no_default_on_the_command_line():
  from benchmarks import scorer_quality
  with pytest.raises(SystemExit):
    scorer_quality.build_parser().parse_args([])


def test_no_benchmark_shares_a_name_with_a_product_module():
  product = {p.stem for d in ("beam_pipelines", "transforms", "models", "scripts")
             for p in (ROOT / d).rglob("*.py") if p.stem != "__init__"}
  assert not set(MODULES) & product, "rename the benchmark to NAME_bench.py"


# --- the harness -----------------------------------------------------------------------

def test_interleaved_and_abba_orders():
  from benchmarks.harness import abba_order, interleaved_order
  assert [n for _, n in interleaved_order("AB", 3)] == list("ABBAAB")
  assert [n for _, n in interleaved_order("ABC", 2)] == list("ABCBCA")
  assert [r for r, _ in interleaved_order("AB", 2)] == [0, 0, 1, 1]
  assert [n for _, n in abba_order("AB", 2)] == list("ABBABAAB")


def test_run_interleaved_keys_and_orders_the_results():
  from benchmarks.harness import abba_order, median_ratio, ratios, run_interleaved
  seen = []
  counter = iter(range(1, 100))
  out = run_interleaved({"b": lambda: next(counter), "a": lambda: next(counter)},
                        abba_order(["a", "b"], 1), after=lambda r, n, v: seen.append((r, n, v)))
  assert list(out) == ["b", "a"]  # keyed in the order of the runs given
  assert seen == [(0, "a", 1), (0, "b", 2), (0, "b", 3), (0, "a", 4)]
  assert out == {"a": [1, 4], "b": [2, 3]}
  assert ratios([2.0, 6.0], [1.0, 2.0]) == [2.0, 3.0]
  assert median_ratio([2.0, 6.0, 1.0], [1.0, 2.0, 1.0]) == 2.0


def test_auc_counts_pairs_with_ties_as_half():
  from benchmarks.harness import auc, auc_pos_neg
  rng = np.random.default_rng(0)
  pos, neg = rng.integers(0, 5, 30).astype(float), rng.integers(0, 4, 40).astype(float)
  pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
  assert auc_pos_neg(pos, neg) == pytest.approx(pairs, abs=1e-12)
  scores = np.concatenate([neg, pos])
  labels = np.array([False] * len(neg) + [True] * len(pos))
  assert auc(scores, labels) == pytest.approx(pairs, abs=1e-12)
  assert np.isnan(auc([0.1, 0.2], [True, True]))


def test_auc_bootstrap_interval_is_reproducible_and_paired():
  from benchmarks.harness import auc_with_ci, bootstrap_aucs, ci95, stratified_resamples
  rng = np.random.default_rng(1)
  labels = rng.random(60) < 0.4
  scores = labels + rng.normal(0, 1, 60)
  a, b = auc_with_ci(scores, labels, 200, 7), auc_with_ci(scores, labels, 200, 7)
  assert a["ci95"] == b["ci95"] and a["ci95"][0] <= a["auc"] <= a["ci95"][1]
  draws = stratified_resamples(labels, 50, 3)
  assert all(labels[p].all() and not labels[n].any() for p, n in draws)
  assert all(len(p) == labels.sum() and len(n) == (~labels).sum() for p, n in draws)
  same = bootstrap_aucs(scores, draws) - bootstrap_aucs(scores, draws)
  assert ci95(same) == [0.0, 0.0]
