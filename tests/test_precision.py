"""--precision: parsing, auto's choice from the detected device capabilities, the tiny
models in fp32 and bf16 (close, finite, batch-invariant within each precision's measured
tolerance), and the threads each local worker process uses."""
import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from beam_pipelines import precision_options, select_data
from beam_pipelines.config import JobConfig
from beam_pipelines.options import parse_args
from models import precision, threads
from models.ask_llm import AskLLMConfig, load_scorer
from models.embeddings import EmbeddingConfig, load_embedder
from models.perplexity import PerplexityConfig, load_perplexity_scorer
from tests.test_ask_llm import TEXTS as ASK_LLM_TEXTS

TEXTS = ASK_LLM_TEXTS + ["Inflation is the rate at which prices rise over time. " * 8]
# |score in a batch - score alone|: fp32 is the project's promise (docs/design.md); bf16
# the bound measured on the bundled models (docs/measurements.md#precision) with margin.
BATCH_TOLERANCE = {"fp32": 1e-5, "bf16": 2e-2}


def job(*extra):
  args, _ = parse_args(["--input=a", "--output=b", "--device=cpu", *extra])
  return JobConfig.from_args(args)


@pytest.fixture
def cpu_flags(monkeypatch):
  """Sets the CPU flags the detection reads (not its outcome)."""
  def set_flags(*flags):
    monkeypatch.setattr(precision, "_this_cpu_flags", lambda: frozenset(flags))
  return set_flags


def test_precision_option_parses_and_refuses_other_values(capsys):
  assert job().precision.requested == "auto"
  assert job("--precision=bf16").precision.requested == "bf16"
  config = job("--precision=fp32", "--sampler=density")
  assert config.scorer.precision == config.embedding.precision == "fp32"
  assert config.perplexity.precision == "fp32"
  with pytest.raises(SystemExit) as e:
    parse_args(["--input=a", "--output=b", "--precision=fp8"])
  assert e.value.code == 2 and "--precision" in capsys.readouterr().err


@pytest.mark.parametrize("flags,expected", [
    (("avx512f", "avx512_bf16"), "bf16"), (("amx_bf16", "amx_tile"), "bf16"),
    (("avx512f", "avx2"), "fp32"), ((), "fp32")])
def test_auto_follows_the_cpus_bf16_units(cpu_flags, monkeypatch, flags, expected):
  cpu_flags(*flags)
  monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
  config = job("--sampler=density")
  for role, model_config in (("scorer", config.scorer), ("perplexity", config.perplexity),
                             ("embedding", config.embedding)):
    want = precision.AUTO_ON_BF16_DEVICES["cpu"][role] if expected == "bf16" else "fp32"
    assert model_config.precision == want
  # Measured (docs/measurements.md#precision): on a CPU the embedder and the judge gain
  # from bf16 within their quality intervals; perplexity runs no faster in it.
  if expected == "bf16":
    assert (config.embedding.precision, config.scorer.precision,
            config.perplexity.precision) == ("bf16", "bf16", "fp32")
  # An explicit precision is taken as it is, whatever the CPU.
  assert job("--precision=bf16").scorer.precision == "bf16"


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
  info = tmp_path / "cpuinfo"
  info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512f avx512_bf16\n\nflags : x\n")
  assert precision.cpu_flags(str(info)) == {"fpu", "sse", "avx512f", "avx512_bf16"}
  assert precision.cpu_flags(str(tmp_path / "missing")) == frozenset()
  assert precision.cpu_has_native_bf16(precision.cpu_flags(str(info)))


def test_auto_on_cuda_asks_torch(monkeypatch):
  monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
  monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
  # A GPU without native bf16 (T4): auto stays fp32, an explicit bf16 runs as fp16.
  assert precision.resolve("auto", "embedding", "cuda") == "fp32"
  assert precision.weights_dtype("bf16", "cuda") == torch.float16
  assert precision.applied("bf16", "cuda") == "fp16"
  monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
  assert precision.resolve("auto", "scorer", "auto") == precision.AUTO_ON_BF16_DEVICES[
      "cuda"]["scorer"]
  assert precision.weights_dtype("bf16", "cuda") == torch.bfloat16
  assert precision.weights_dtype("bf16", "cpu") == torch.float32  # autocast on a CPU


def test_precision_is_part_of_the_cache_fingerprint(tiny_causal_lm_dir):
  fp32 = AskLLMConfig(model=tiny_causal_lm_dir, precision="fp32").cache_settings()
  bf16 = AskLLMConfig(model=tiny_causal_lm_dir, precision="bf16").cache_settings()
  assert fp32["precision"] == "fp32" and bf16["precision"] == "bf16"
  assert {k: v for k, v in fp32.items() if k != "precision"} == {
      k: v for k, v in bf16.items() if k != "precision"}


def _models(tiny_causal_lm_dir, tiny_bert_dir, p):
  return {
      "ask_llm": (load_scorer(AskLLMConfig(model=tiny_causal_lm_dir, max_tokens=128,
                                           device="cpu", precision=p)),
                  lambda m, t: m.score(t)[:, 0]),
      "perplexity": (load_perplexity_scorer(PerplexityConfig(
          model=tiny_causal_lm_dir, max_tokens=128, device="cpu", precision=p)),
          lambda m, t: m.score(t)),
      "embedding": (load_embedder(EmbeddingConfig(model=tiny_bert_dir, max_tokens=64,
                                                  device="cpu", precision=p)),
                    lambda m, t: m.embed(t)),
  }


@pytest.fixture(scope="module")
def scored(tiny_causal_lm_dir, tiny_bert_dir):
  """{precision: {model: (scores in one batch, scores one by one)}}"""
  out = {}
  for p in ("fp32", "bf16"):
    out[p] = {}
    for name, (model, run) in _models(tiny_causal_lm_dir, tiny_bert_dir, p).items():
      assert model.settings()["precision"] == p
      together = np.asarray(run(model, TEXTS), np.float64)
      alone = np.concatenate([np.asarray(run(model, [t]), np.float64) for t in TEXTS])
      out[p][name] = (together.reshape(alone.shape), alone)
  return out


@pytest.mark.parametrize("name", ["ask_llm", "perplexity", "embedding"])
def test_bf16_scores_are_finite_and_close_to_fp32(scored, name):
  fp32, bf16 = scored["fp32"][name][0], scored["bf16"][name][0]
  assert np.isfinite(bf16).all()
  # bf16 keeps 8 significant bits: close, but not equal (else autocast did not apply).
  assert np.abs(fp32 - bf16).max() > 0
  scale = np.abs(fp32).max()
  assert np.abs(fp32 - bf16).max() <= 0.05 * max(scale, 1.0)
  if name == "embedding":
    assert (np.sum(fp32 * bf16, axis=1) > 0.99).all()


@pytest.mark.parametrize("p", ["fp32", "bf16"])
@pytest.mark.parametrize("name", ["ask_llm", "perplexity", "embedding"])
def test_batch_invariance_per_precision(scored, name, p):
  together, alone = scored[p][name]
  assert np.abs(together - alone).max() <= BATCH_TOLERANCE[p]


@pytest.mark.parametrize("cores,workers,expected", [
    (16, 1, 16), (16, 2, 8), (16, 3, 5), (2, 2, 1), (2, 4, 1), (1, 2, 1), (8, 0, 8)])
def test_threads_per_process(cores, workers, expected):
  assert threads.threads_per_process(cores, workers) == expected


@given(st.integers(1, 512), st.integers(1, 64))
def test_threads_never_oversubscribe(cores, workers):
  n = threads.threads_per_process(cores, workers)
  assert n >= 1 and (n * workers <= cores or n == 1)


def test_worker_processes_learn_their_number_from_the_launcher():
  env = {}
  threads.note_local_workers(3, "multi_processing", env)
  assert threads.local_worker_processes(env) == 1  # the launcher itself runs no model
  worker_env = {threads.ENV: env[threads.ENV].split("@")[0] + "@1"}  # another process
  assert threads.local_worker_processes(worker_env) == 3
  threads.note_local_workers(3, "multi_threading", env)
  assert threads.local_worker_processes({threads.ENV: env[threads.ENV][:1] + "@1"}) == 1
  assert threads.local_worker_processes({}) == 1
  assert threads.local_worker_processes({threads.ENV: "junk"}) == 1
  assert threads.local_worker_processes({threads.ENV: "0@1"}) == threads.available_cores()


def test_metrics_and_report_record_precision_and_threads_of_two_worker_processes(
    tiny_causal_lm_dir, tmp_path):
  corpus = tmp_path / "docs.jsonl"
  corpus.write_text("".join(f'{{"id": "d{i}", "text": "{t[:200]} {i}"}}\n'
                            for i, t in enumerate(TEXTS * 3)))
  argv = [f"--input={corpus}", f"--output={tmp_path / 'out'}", "--id_field=id",
          f"--scorer_model={tiny_causal_lm_dir}", "--max_tokens=128", "--device=cpu",
          "--report=false", "--precision=bf16", "--direct_num_workers=2",
          "--direct_running_mode=multi_processing"]
  metrics = select_data.run(argv)
  stage = metrics["precision"]["stages"]["ask_llm"]
  assert metrics["precision"]["requested"] == "bf16"
  assert stage["precision"] == stage["precision_used"] == "bf16"
  # Each worker process set its own threads from the cores and the two processes.
  assert stage["threads"] == str(threads.threads_per_process(threads.available_cores(), 2))
  line = precision_options.report_line(metrics)
  assert line.startswith("--precision=bf16: ask_llm bf16") and "threads/process" in line


def test_cached_scores_are_reused_only_at_their_precision(tiny_causal_lm_dir, tmp_path):
  from apache_beam.testing.test_pipeline import TestPipeline
  corpus = tmp_path / "docs.jsonl"
  corpus.write_text("".join(f'{{"id": "d{i}", "text": "{t[:200]} {i}"}}\n'
                            for i, t in enumerate(TEXTS * 2)))
  cache = tmp_path / "cache"

  def run(p, name):
    argv = [f"--input={corpus}", f"--output={tmp_path / name}", "--id_field=id",
            f"--scorer_model={tiny_causal_lm_dir}", "--max_tokens=128", "--device=cpu",
            "--report=false", f"--precision={p}", f"--cache={cache}"]
    return select_data.run(argv, test_pipeline=TestPipeline(runner="FnApiRunner"))

  n = len(TEXTS) * 2
  assert run("fp32", "a")["counts"]["inferred"] == {"ask_llm": n}
  second = run("bf16", "b")
  assert second["counts"]["inferred"] == {"ask_llm": n}
  assert second["counts"]["from_cache"] == {"ask_llm": 0}
  assert run("fp32", "c")["counts"]["from_cache"] == {"ask_llm": n}
