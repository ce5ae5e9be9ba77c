"""--estimate_only follows the sampler (beam_pipelines/estimate.py): a stage per model or
CPU step the run would run, documents, tokens (each model's tokenizer) and GPU-hours,
measured or assumed rates said; the cascade priced with and without it."""
import json
import os

import pytest

from beam_pipelines import estimate, select_data
from tests.test_select_data import GOOD

_N = 40


@pytest.fixture
def corpus(tmp_path):
  os.makedirs(tmp_path / "in")
  with open(tmp_path / "in" / "x.jsonl", "w") as f:
    for i in range(_N):
      f.write(json.dumps({"text": GOOD[i % len(GOOD)] + f" copy {i}"}) + "\n")
  return str(tmp_path / "in" / "x.jsonl")


def _estimate(tmp_path, corpus, lm, bert, *extra):
  embedder = [f"--embedding_model={bert}"] if bert else []  # None: the bundled one
  return select_data.run([f"--input={corpus}", f"--output={tmp_path}/out",
                          f"--scorer_model={lm}", *embedder,
                          "--estimate_only", f"--estimate_sample={_N}", *extra])


def _stages(result):
  return {s["stage"]: s for s in result["stages"]}


def test_the_judge_alone_for_ask_llm_with_a_measured_rate_and_a_table(
    tmp_path, corpus, tiny_causal_lm_dir, tiny_bert_dir, capsys):
  result = _estimate(tmp_path, corpus, tiny_causal_lm_dir, tiny_bert_dir,
                     "--gpu_tokens_per_second=1000", "--gpu_price_per_hour=2")
  stages = _stages(result)
  assert list(stages) == ["judge (Ask-LLM)"]
  judge = stages["judge (Ask-LLM)"]
  assert judge["documents"] == _N and judge["tokens"] == result["sample_tokens"]
  assert judge["rate"] == "measured (--gpu_tokens_per_second)"
  assert judge["gpu_hours"] == pytest.approx(judge["tokens"] / 1000 / 3600, rel=1e-3)
  assert result["estimated_gpu_cost"] == pytest.approx(2 * result["estimated_gpu_hours"],
                                                       rel=1e-3)
  out = capsys.readouterr().out
  assert "judge (Ask-LLM)" in out and "measured (--gpu_tokens_per_second)" in out
  assert out.splitlines()[2].split()[:3] == ["stage", "documents", "tokens"]
  assert not os.path.exists(tmp_path / "out")


def test_cluster_and_density_samplers_price_embeddings_and_their_cpu_passes(
    tmp_path, corpus, tiny_causal_lm_dir, tiny_bert_dir, capsys):
  result = _estimate(tmp_path, corpus, tiny_causal_lm_dir, tiny_bert_dir,
                     "--sampler=balanced", "--estimate_format=json")
  stages = _stages(result)
  assert list(stages) == ["embeddings", "k-means"]
  assert stages["embeddings"]["rate"].startswith("assumed: one NVIDIA L4")
  assert stages["embeddings"]["tokens"] > 0 and stages["k-means"]["gpu_hours"] is None
  assert "k = " in stages["k-means"]["detail"]
  assert json.loads(capsys.readouterr().out)["stages"] == result["stages"]
  result = _estimate(tmp_path, corpus, tiny_causal_lm_dir, tiny_bert_dir,
                     "--sampler=ask_llm_density", "--estimate_format=json")
  assert list(_stages(result)) == ["judge (Ask-LLM)", "embeddings", "density sketch"]
  assert result["estimated_gpu_hours"] == pytest.approx(
      sum(s["gpu_hours"] for s in result["stages"] if s["gpu_hours"]), rel=1e-3)


def test_a_head_with_a_teacher_fraction_judges_only_that_fraction(
    tmp_path, corpus, tiny_causal_lm_dir, tiny_bert_dir):
  result = _estimate(tmp_path, corpus, tiny_causal_lm_dir, tiny_bert_dir,
                     "--sampler=quality_head", "--teacher_fraction=0.25",
                     "--estimate_format=json")
  stages = _stages(result)
  assert list(stages) == ["judge (Ask-LLM)", "embeddings", "quality head"]
  assert stages["judge (Ask-LLM)"]["documents"] == 10
  result = _estimate(tmp_path, corpus, tiny_causal_lm_dir, tiny_bert_dir,
                     "--sampler=perplexity", "--estimate_format=json")
  assert list(_stages(result)) == ["perplexity"]


def test_the_cascade_is_priced_with_and_without_it(tmp_path, corpus, tiny_causal_lm_dir,
                                                   capsys):
  # The cheap signal: the bundled quality head on the bundled embedding model's vectors.
  result = _estimate(tmp_path, corpus, tiny_causal_lm_dir, None,
                     "--judge_fraction=0.25", "--audit_fraction=0.2", "--max_tokens=128")
  stages = _stages(result)
  # N * (F + a * (1 - F)) = 40 * (0.25 + 0.2 * 0.75) = 16 judged; the cheap signal on all.
  assert list(stages) == ["judge (Ask-LLM)", "embeddings", "quality head"]
  assert stages["judge (Ask-LLM)"]["documents"] == 16
  assert stages["embeddings"]["documents"] == stages["quality head"]["documents"] == _N
  assert "cascade" in stages["embeddings"]["detail"]
  without = {s["stage"]: s for s in result["without_cascade"]["stages"]}
  assert list(without) == ["judge (Ask-LLM)"] and without["judge (Ask-LLM)"]["documents"] == _N
  assert "without the cascade" in capsys.readouterr().out


def test_judge_share_reads_the_cascade_fields_with_defaults():
  class Job:
    class sampler:  # noqa: N801
      uses = staticmethod(lambda stage: stage == "ask_llm")
    teacher_fraction = None
    cascade = type("C", (), {"judge_fraction": 0.1})()  # no audit_fraction, no signal yet

  assert estimate.judge_share(Job, 1000)[0] == 100
  Job.cascade.audit_fraction = 0.05
  assert estimate.judge_share(Job, 1000)[0] == round(1000 * (0.1 + 0.05 * 0.9))
  assert estimate.judge_share(Job, 1000, cascade_on=False) == (1000, "every document")
