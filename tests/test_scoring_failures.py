"""One document that a model fails on never fails the job: it is scored alone, marked
with the reason, and ranked last; a broken model still fails the job."""
import math

import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from beam_pipelines import samplers
from models.ask_llm import AskLLMConfig, load_scorer
from tests.pipeline_helpers import run_handler
from transforms.sampling import density_sampling_key
from transforms.inference import AskLLMModelHandler, error_field
from transforms.records import Document

TEXTS = ["Photosynthesis turns sunlight into sugar.", "POISON page", "Water boils at 100 C.",
         "An atom has a nucleus."]


class _FailsOn:
  """The real tiny scorer, with a fault injected for texts that contain a marker (as a
  tokenizer or kernel error on one odd document would)."""

  def __init__(self, scorer, marker):
    self._scorer, self._marker = scorer, marker

  def run(self, texts):
    if any(self._marker in t for t in texts):
      raise ValueError(f"cannot score {self._marker}")
    return self._scorer.run(texts)


def _load_failing(config):
  return _FailsOn(load_scorer(config), "POISON")


def _load_broken(config):
  return _FailsOn(load_scorer(config), "")  # every document fails


def _handler(model_dir, loader):
  handler = AskLLMModelHandler(AskLLMConfig(model=model_dir, max_tokens=128, device="cpu"))
  handler._loader = loader
  return handler


def test_a_document_the_model_fails_on_is_marked_not_fatal(tiny_causal_lm_dir):
  docs = [Document(id=f"d{i}", text=t, source=f"f:{i}") for i, t in enumerate(TEXTS)]
  p_yes_alone = load_scorer(AskLLMConfig(
      model=tiny_causal_lm_dir, max_tokens=128, device="cpu")).score([docs[0].text])[0, 0]

  def check(out):
    by_id = {d.id: d for d in out}
    assert len(out) == 4
    assert by_id["d1"].scores == {error_field("ask_llm"): "ValueError: cannot score POISON"}
    for i in (0, 2, 3):
      assert 0 < by_id[f"d{i}"].scores["p_yes"] < 1
    assert by_id["d0"].scores["p_yes"] == pytest.approx(p_yes_alone, abs=1e-5)

  with TestPipeline(runner="FnApiRunner") as p:
    out = run_handler(p, docs, _handler(tiny_causal_lm_dir, _load_failing), max_batch_size=4)
    assert_that(out, check)


def test_a_broken_model_fails_the_job(tiny_causal_lm_dir):
  docs = [Document(id=f"d{i}", text=t, source=f"f:{i}") for i, t in enumerate(TEXTS)]
  with pytest.raises(Exception, match="the model is broken"):
    with TestPipeline(runner="FnApiRunner") as p:
      run_handler(p, docs, _handler(tiny_causal_lm_dir, _load_broken), max_batch_size=4)


def test_unscored_and_nan_scores_sort_last():
  def doc(i, **scores):
    return Document(id=f"d{i}", text="t", source="s", scores=scores)
  docs = [doc(0, ask_llm_score=0.2), doc(1), doc(2, ask_llm_score=float("nan")),
          doc(3, ask_llm_score=0.9), doc(4, ask_llm_score=0.0)]
  assert [d.id for d in sorted(docs, key=samplers.ask_llm_key)] == [
      "d3", "d0", "d4", "d1", "d2"]
  ppl = [doc(0, perplexity=5.0), doc(1), doc(2, perplexity=math.inf), doc(3, perplexity=2.0)]
  assert [d.id for d in sorted(ppl, key=samplers.perplexity_key)] == ["d3", "d0", "d2", "d1"]
  key = density_sampling_key(0)
  weighted = [doc(0, sampling_weight=0.5), doc(1), doc(2, sampling_weight=1.0)]
  assert [d.id for d in sorted(weighted, key=key)][-1] == "d1"
