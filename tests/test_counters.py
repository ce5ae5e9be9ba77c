"""The exact counters of small runs with bad records (namespace select_data), as the
runner reports them: every counter is declared in transforms/metrics.py."""
import pytest
import torch
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline

from beam_pipelines import caching, graph, options
from tests.test_select_data import write_inputs
from models import precision
from transforms import metrics

AUTO_JUDGE = precision.resolve("auto", "scorer", "cpu")


def _counters(tmp_path, *extra):
  args, _ = options.parse_args([f"--input={tmp_path}/in/*", f"--output={tmp_path}/out",
                                "--id_field=id", "--max_doc_bytes=4000", "--device=cpu",
                                "--keep_fraction=0.25", "--seed=3", "--report=false",
                                *extra])
  p = TestPipeline(runner="FnApiRunner")
  job = options.JobConfig.from_args(args)
  graph.build_pipeline(p, job, caches=caching.cache_specs(job))
  result = p.run()
  result.wait_until_finish()
  got = {}
  for c in result.metrics().query(MetricsFilter().with_namespace(metrics.NAMESPACE))[
      "counters"]:
    got[c.key.metric.name] = got.get(c.key.metric.name, 0) + c.committed
  return got


def _expected_rejections(reasons):
  return {metrics.REJECTED_PREFIX + r: n for r, n in reasons.items()}


def test_counters_of_a_random_run(tmp_path):
  n_records, reasons = write_inputs(str(tmp_path / "in"))
  assert _counters(tmp_path, "--sampler=random") == {
      "read": n_records, "valid": 12, "selected": 3, **_expected_rejections(reasons)}
  assert n_records == 22 and sum(reasons.values()) == 10


def test_counters_of_an_ask_llm_run(tmp_path, tiny_causal_lm_dir):
  n_records, reasons = write_inputs(str(tmp_path / "in"))
  got = _counters(tmp_path, "--sampler=ask_llm", f"--scorer_model={tiny_causal_lm_dir}",
                  "--max_tokens=128")
  assert got == {"read": n_records, "valid": 12, "scored": 12, "selected": 3,
                 **_expected_rejections(reasons),
                 # The score cache (OUTPUT/cache) was empty: everything was queued for
                 # the model and inferred (Dataflow's UI shows the two as progress).
                 "queued:ask_llm": 12, "inferred:ask_llm": 12, "model_loads:ask_llm": 1,
                 # The tiny model's tokenizer has a chat template: auto used it.
                 "model_setting:ask_llm:chat_template=on": 1,
                 # --precision=auto: auto's pick for the judge on this CPU (bf16 with
                 # AVX512-BF16 or AMX, else fp32: models/precision.py), with this
                 # process's torch threads (one local worker process).
                 f"model_setting:ask_llm:precision={AUTO_JUDGE}": 1,
                 f"model_setting:ask_llm:threads={torch.get_num_threads()}": 1,
                 "cache_written:ask_llm": 12}
  # Run again: every score comes from the cache and the model is not loaded.
  again = _counters(tmp_path, "--sampler=ask_llm", f"--scorer_model={tiny_causal_lm_dir}",
                    "--max_tokens=128")
  assert {k: v for k, v in again.items() if k not in got or got[k] != v} == {
      "from_cache:ask_llm": 12}
  assert "inferred:ask_llm" not in again and "model_loads:ask_llm" not in again
  assert "queued:ask_llm" not in again


def test_undeclared_counters_are_refused():
  with pytest.raises(ValueError, match="declare it"):
    metrics.counter("made_up")
  assert metrics.counter(metrics.REJECTED_PREFIX + "anything") is not None
