"""The perplexity scorer on a tiny causal model built in the test, plus one smoke test with
the bundled SmolLM2."""
import math

import apache_beam as beam
import numpy as np
import pytest
import torch
from tests.pipeline_helpers import run_handler
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from models import perplexity
from models.perplexity import PerplexityConfig, load_perplexity_scorer, perplexity_scores
from transforms.inference import PerplexityModelHandler, attach_perplexity
from transforms.records import Document

MAX_TOKENS = 64
TEXTS = [
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
    "Home | About | Contact",
    "The cell is the basic unit of life " * 30,  # truncated to MAX_TOKENS
    "yes",
    "An atom has a small nucleus of protons and neutrons surrounded by electrons.",
]


@pytest.fixture(scope="module")
def scorer(tiny_causal_lm_dir):
  return load_perplexity_scorer(PerplexityConfig(model=tiny_causal_lm_dir,
                                                 max_tokens=MAX_TOKENS, device="cpu"))


def test_batch_scores_equal_single_scores(scorer):
  batched = scorer.score(TEXTS)
  alone = np.array([scorer.score([t])[0] for t in TEXTS])
  assert np.all(np.isfinite(batched))
  assert np.abs(batched - alone).max() < 1e-5
  # Real right padding happened: the texts have different lengths.
  assert len({len(scorer.encode(t)) for t in TEXTS}) == len(TEXTS)


def test_chunked_batch_equals_one_batch(scorer, monkeypatch):
  whole = scorer.score(TEXTS)
  # A logits budget of one row: every document runs in its own chunk.
  monkeypatch.setattr(perplexity, "_MAX_LOGITS_PER_CHUNK", 1)
  assert np.abs(scorer.score(TEXTS) - whole).max() < 1e-5


def test_value_is_mean_cross_entropy_of_next_tokens(scorer):
  for text in TEXTS[:2]:
    ids = scorer.encode(text)
    with torch.no_grad():
      logits = scorer.model(input_ids=torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    nll = -logp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])]
    expected = float(nll.mean())
    doc = attach_perplexity(Document(id="d", text=text, source="s"), scorer.run([text])[0])
    assert doc.scores["mean_nll"] == pytest.approx(expected, abs=1e-5)
    assert doc.scores["perplexity"] == pytest.approx(math.exp(expected), rel=1e-5)
    assert doc.text == text and doc.id == "d"


def test_encoding_context_truncation_and_special_tokens(scorer):
  tok = scorer.tokenizer
  # The tiny tokenizer adds no BOS on encode: its BOS is put in front as context.
  assert tok("a", add_special_tokens=True)["input_ids"] == tok("a", add_special_tokens=False)[
      "input_ids"]
  assert scorer.context_ids == [tok.bos_token_id]
  short = scorer.encode("The cell")
  assert short[0] == tok.bos_token_id and 2 <= len(short) < MAX_TOKENS
  # Every token of a one-token document is still predicted from the context.
  assert len(scorer.encode("yes")) == 2
  # A 1.5 MB text: the result is exactly max_tokens (context included), and a prefix of
  # the full tokenisation.
  long_text = "The cell is the basic unit of life. " * 40_000
  ids = scorer.encode(long_text)
  assert len(ids) == MAX_TOKENS
  assert ids[1:] == tok(long_text[:5000], add_special_tokens=False)["input_ids"][:MAX_TOKENS - 1]
  # Special-token strings in a document are text, not control tokens.
  ids = scorer.encode("ok <|im_end|>\n<|im_start|>assistant\n</s>")
  special = {tok.convert_tokens_to_ids(t) for t in ["<|im_start|>", "<|im_end|>", "</s>"]}
  assert not special & set(ids[1:])


def test_nothing_to_predict_is_infinite_perplexity(scorer):
  one_token = scorer.encode("yes")[1:]  # as a tokenizer without BOS/EOS would give it
  nlls = scorer.score_ids([one_token, [], scorer.encode(TEXTS[0])])
  assert nlls[0] == math.inf and nlls[1] == math.inf and np.isfinite(nlls[2])
  assert perplexity_scores(math.inf) == {"perplexity": math.inf, "mean_nll": math.inf}
  assert scorer.score_ids([]).shape == (0,)


def test_model_handler_in_run_inference(tiny_causal_lm_dir, scorer):
  docs = [Document(id=f"d{i}", text=t, source=f"s:{i}") for i, t in enumerate(TEXTS)]
  expected = scorer.score(TEXTS)
  handler = PerplexityModelHandler(PerplexityConfig(model=tiny_causal_lm_dir,
                                                    max_tokens=MAX_TOKENS, device="cpu"))
  assert handler.get_metrics_namespace() == "perplexity"
  with TestPipeline(runner="FnApiRunner") as p:
    out = (run_handler(p, docs, handler)
           | beam.Map(lambda d: (d.id, round(d.scores["mean_nll"], 4),
                                 round(math.log(d.scores["perplexity"]), 4))))
    assert_that(out, equal_to([(f"d{i}", round(float(v), 4), round(float(v), 4))
                               for i, v in enumerate(expected)]))


def test_encoder_decoder_model_is_refused(tiny_t5_dir):
  with pytest.raises(ValueError, match="causal .*encoder-decoder model"):
    load_perplexity_scorer(PerplexityConfig(model=tiny_t5_dir, device="cpu"))


def test_bundled_model_smoke():
  """The real bundled SmolLM2-135M-Instruct: clean English is less perplexing than mash."""
  scorer = load_perplexity_scorer(PerplexityConfig(device="cpu"))
  english = "The Silk Road was a network of trade routes that connected China with the West."
  mash = "asdf qwer zxcv jkl; uiop ghjk vbnm tyru"
  repeated_mash = "asdf qwer zxcv jkl; " * 10
  ppl = [perplexity_scores(nll)["perplexity"]
         for nll in scorer.run([english, mash, repeated_mash])]
  assert all(1 < p < math.inf for p in ppl)
  assert ppl[0] < ppl[1] / 10
  # A known weakness of perplexity filtering: a repeated string becomes predictable after
  # its first occurrence (the model copies it), so repeated mash scores low.
  assert ppl[2] < ppl[1] / 10


def test_perplexity_sampler_keeps_the_lowest(tmp_path, tiny_causal_lm_dir):
  """--sampler=perplexity end to end: the selected are the lowest perplexities, ranked."""
  import glob
  import json as _json
  import os as _os
  from apache_beam.testing.test_pipeline import TestPipeline as _TP
  from beam_pipelines import select_data
  _os.makedirs(tmp_path / "in")
  texts = ["the cell is the basic unit of life " * (i % 4 + 1) + f"number {i}" for i in range(12)]
  with open(tmp_path / "in" / "d.jsonl", "w") as f:
    for i, t in enumerate(texts):
      f.write(_json.dumps({"id": f"p{i:02d}", "text": t}) + "\n")
  out = tmp_path / "out"
  m = select_data.run([f"--input={tmp_path}/in/d.jsonl", f"--output={out}", "--id_field=id",
                       "--sampler=perplexity", f"--scorer_model={tiny_causal_lm_dir}",
                       "--keep_count=4", "--max_tokens=64", "--device=cpu"],
                      test_pipeline=_TP(runner="FnApiRunner"))
  rows = [_json.loads(l) for p in glob.glob(str(out / "scores" / "*.jsonl")) for l in open(p)]
  assert m["counts"]["selected"] == 4 and m["counts"]["perplexity"] == 12
  # No Ask-LLM or embedding stage ran: no `scored: 0` / `embedded: 0` to mislead.
  assert "scored" not in m["counts"] and "embedded" not in m["counts"]
  assert m["counts"]["inferred"] == {"perplexity": 12}
  best = sorted(rows, key=lambda r: (r["perplexity"], r["id"]))[:4]
  chosen = sorted((r for r in rows if r["selected"]), key=lambda r: r["rank"])
  assert [r["id"] for r in chosen] == [r["id"] for r in best]
