"""The tiny offline models load through the Auto* classes and behave like their Hub cousins."""
import os

import pytest
import torch
from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM,
                          AutoTokenizer)

from tests import tiny_models

TEXTS = ["Water boils at one hundred degrees.", "Héllo wörld 🙂 — 日本語 ok?"]


def test_offline_mode_is_set():
  assert os.environ["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize("extra", [(), ("informative", "junk")])
def test_word_tokenizer_yes_no_are_single_tokens(extra):
  tok = tiny_models.build_word_tokenizer(extra_words=extra)
  ids = {}
  for word in ("yes", "Yes", "no", "No") + extra:
    for form in (word, " " + word):
      ids[form] = tok.encode(form, add_special_tokens=False)
      assert len(ids[form]) == 1, form
  assert len(set(map(tuple, ids.values()))) == len(ids)  # all distinct
  assert {tok.pad_token, tok.bos_token, tok.eos_token, tok.unk_token} == {
      "<pad>", "<s>", "</s>", "<unk>"}


def test_word_tokenizer_is_deterministic_and_lossless():
  a, b = tiny_models.build_word_tokenizer(), tiny_models.build_word_tokenizer()
  assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
  for text in TEXTS + ["\x00\ufffd\U0010ffff tabs\tand\nnewlines"]:
    ids = a.encode(text, add_special_tokens=False)
    assert a.unk_token_id not in ids
    assert a.decode(ids) == text


def test_causal_lm(tiny_causal_lm_dir):
  tok = AutoTokenizer.from_pretrained(tiny_causal_lm_dir)
  model = AutoModelForCausalLM.from_pretrained(tiny_causal_lm_dir)
  assert type(model).__name__ == "LlamaForCausalLM"
  assert model.config.vocab_size == len(tok)
  for word in ("yes", "Yes", "no", "No"):
    assert len(tok.encode(word, add_special_tokens=False)) == 1
    assert len(tok.encode(" " + word, add_special_tokens=False)) == 1

  prompt = tok.apply_chat_template([{"role": "user", "content": "Is this useful?"}],
                                   add_generation_prompt=True, tokenize=False)
  assert prompt == "<|im_start|>user\nIs this useful?<|im_end|>\n<|im_start|>assistant\n"
  # The chat markers are single special tokens, never split.
  assert tok.encode("<|im_start|>", add_special_tokens=False) == [
      tok.convert_tokens_to_ids("<|im_start|>")]

  batch = tok(TEXTS + [prompt], padding=True, return_tensors="pt")
  assert (batch["attention_mask"] == 0).any()  # padding really happened
  with torch.no_grad():
    logits = model(**batch).logits
  assert logits.shape == (*batch["input_ids"].shape, len(tok))
  assert torch.isfinite(logits).all()


def test_t5(tiny_t5_dir):
  tok = AutoTokenizer.from_pretrained(tiny_t5_dir)
  model = AutoModelForSeq2SeqLM.from_pretrained(tiny_t5_dir)
  assert type(model).__name__ == "T5ForConditionalGeneration"
  assert tok.chat_template is None
  assert model.config.decoder_start_token_id == tok.pad_token_id
  assert model.config.eos_token_id == tok.eos_token_id
  for word in ("yes", "Yes", "no", "No"):
    assert len(tok.encode(word, add_special_tokens=False)) == 1
    assert len(tok.encode(" " + word, add_special_tokens=False)) == 1
  assert tok.encode("yes")[-1] == tok.eos_token_id  # like real T5, </s> is appended

  batch = tok(TEXTS, padding=True, return_tensors="pt")
  assert (batch["attention_mask"] == 0).any()
  start = torch.full((len(TEXTS), 1), model.config.decoder_start_token_id)
  with torch.no_grad():
    logits = model(**batch, decoder_input_ids=start).logits
  assert logits.shape == (len(TEXTS), 1, len(tok))
  assert torch.isfinite(logits).all()


def test_bert(tiny_bert_dir):
  tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
  model = AutoModel.from_pretrained(tiny_bert_dir)
  assert type(model).__name__ == "BertModel"
  batch = tok(TEXTS, padding=True, return_tensors="pt")
  assert (batch["attention_mask"] == 0).any()
  assert batch["input_ids"][0, 0] == tok.cls_token_id
  with torch.no_grad():
    hidden = model(**batch).last_hidden_state
  assert hidden.shape == (*batch["input_ids"].shape, 32)
  assert torch.isfinite(hidden).all()


def test_builds_are_deterministic(tmp_path):
  a = tiny_models.build_tiny_causal_lm(tmp_path / "a")
  b = tiny_models.build_tiny_causal_lm(tmp_path / "b")
  for name in ("model.safetensors", "tokenizer.json"):
    with open(os.path.join(a, name), "rb") as fa, open(os.path.join(b, name), "rb") as fb:
      assert fa.read() == fb.read(), name
