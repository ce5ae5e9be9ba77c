"""Tokenising the selected documents for training (--tokenizer): a SentencePiece model
applied with tensorflow-text, or a Hugging Face tokenizer (tokenizer.json) applied with
`tokenizers`; the ids become the `targets` feature (the seqio / T5X name) and
`num_tokens`. Text is never truncated here.

The model file is read once per worker process (local or gs://) and kept as bytes;
tensorflow-text's op tokenizes a batch of texts in one call.
"""
from __future__ import annotations

import re
from typing import Any, List, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems

# Texts per tensorflow-text call: large enough to amortise the op's overhead, small
# enough that one call's ragged result stays small.
_BATCH = 256
# A SentencePiece model is a few hundred KB to a few MB; anything past this is not one.
_MAX_MODEL_BYTES = 64 * 1024 * 1024


class TokenizerError(ValueError):
  """--tokenizer cannot be used (missing, unreadable, not a SentencePiece model)."""


def _reason(e: BaseException) -> str:
  """An error in one short line; TensorFlow's op errors start with the op's internal
  name ({{function_node ...}}) and end with its node name, neither of use here."""
  text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", str(e)).strip()
  text = re.sub(r"\s*\[Op:\w+\].*$", "", text.splitlines()[0] if text else "")
  return f"{type(e).__name__}: {text[:200]}"


def read_model(path: str) -> bytes:
  try:
    with FileSystems.open(path) as f:
      data = f.read(_MAX_MODEL_BYTES + 1)
  except Exception as e:  # pylint: disable=broad-except
    raise TokenizerError(f"--tokenizer {path} cannot be read: {_reason(e)}") from e
  if len(data) > _MAX_MODEL_BYTES:
    raise TokenizerError(f"--tokenizer {path} is over {_MAX_MODEL_BYTES >> 20} MB: not a "
                         "SentencePiece model file")
  return data


class SentencePieceTokenizer:
  """Texts in, token id arrays out (int64), with the model's end-of-sequence id appended
  when `append_eos`."""

  def __init__(self, model: bytes, append_eos: bool = False):
    import tensorflow_text as tf_text
    self._tokenizer = tf_text.SentencepieceTokenizer(model=model, out_type="int32",
                                                     add_eos=append_eos)

  def tokenize(self, texts: Sequence[str]) -> List[np.ndarray]:
    out: List[np.ndarray] = []
    for i in range(0, len(texts), _BATCH):
      ragged = self._tokenizer.tokenize(list(texts[i:i + _BATCH]))
      values = ragged.flat_values.numpy().astype(np.int64)
      splits = ragged.row_splits.numpy()
      out.extend(values[a:b] for a, b in zip(splits[:-1], splits[1:]))
    return out

  def vocab_size(self) -> int:
    return int(self._tokenizer.vocab_size().numpy())


class HuggingFaceTokenizer:
  """A `tokenizers` tokenizer.json (no special tokens added), with the end-of-sequence id
  of its tokenizer_config.json's eos_token appended when `append_eos`."""

  def __init__(self, tokenizer_json: bytes, eos_token: Optional[str]):
    from tokenizers import Tokenizer
    self._tokenizer = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
    self.eos_id = self._tokenizer.token_to_id(eos_token) if eos_token else None
    self._eos = [self.eos_id] if self.eos_id is not None else []

  def tokenize(self, texts: Sequence[str]) -> List[np.ndarray]:
    out: List[np.ndarray] = []
    for i in range(0, len(texts), _BATCH):
      for enc in self._tokenizer.encode_batch(list(texts[i:i + _BATCH]),
                                              add_special_tokens=False):
        out.append(np.asarray(enc.ids + self._eos, dtype=np.int64))
    return out


def _huggingface_files(path: str) -> Optional[tuple]:
  """(tokenizer.json, tokenizer_config.json or None) when `path` is a tokenizer.json or a
  directory holding one; None for anything else (a SentencePiece model)."""
  if path.rstrip("/").endswith(".json"):
    return path, FileSystems.join(path.rstrip("/").rsplit("/", 1)[0], "tokenizer_config.json")
  candidate = FileSystems.join(path, "tokenizer.json")
  if FileSystems.exists(candidate):
    return candidate, FileSystems.join(path, "tokenizer_config.json")
  return None


def _eos_token(config_path: str) -> Optional[str]:
  """The eos_token of a tokenizer_config.json (None when there is none)."""
  import json
  if not FileSystems.exists(config_path):
    return None
  config = json.loads(read_model(config_path).decode("utf-8"))
  eos = config.get("eos_token")
  if isinstance(eos, dict):
    eos = eos.get("content")
  return eos if isinstance(eos, str) else None


def load_tokenizer(path: str, append_eos: bool = False):
  """The tokenizer at `path` (a SentencePiece model file, or a Hugging Face tokenizer.json
  or a directory holding one), checked on a short text; raises TokenizerError with a
  one-line reason."""
  hf = _huggingface_files(path)
  if hf is not None:
    data = read_model(hf[0])
    try:
      tokenizer = HuggingFaceTokenizer(data, _eos_token(hf[1]) if append_eos else None)
      tokenizer.tokenize(["a check"])
    except Exception as e:  # pylint: disable=broad-except
      raise TokenizerError(f"--tokenizer {hf[0]} is not a Hugging Face tokenizer.json "
                           f"({_reason(e)})") from e
    if append_eos and tokenizer.eos_id is None:
      raise TokenizerError(f"--tokenizer {path}: no eos_token in a tokenizer_config.json "
                           "beside tokenizer.json (or not in its vocabulary); drop "
                           "--append_eos or add one")
    return tokenizer
  model = read_model(path)
  try:
    tokenizer = SentencePieceTokenizer(model, append_eos)
    ids = tokenizer.tokenize(["a check"])[0]
  except Exception as e:  # pylint: disable=broad-except
    raise TokenizerError(f"--tokenizer {path} is not a SentencePiece model file "
                         f"({_reason(e)})") from e
  if append_eos and (ids.size == 0 or ids[-1] < 0):
    raise TokenizerError(f"--tokenizer {path} has no end-of-sequence id: drop "
                         "--append_eos or use a model trained with one")
  return tokenizer


@beam.typehints.with_output_types(Any)  # Beam would guess an int from num_tokens=len(ids)
class _CountTokensInBatch(beam.DoFn):
  """Adds num_tokens to each document of a batch (one tensorflow-text call per batch)."""

  def __init__(self, path: str, append_eos: bool):
    self._path, self._append_eos = path, append_eos

  def setup(self):
    self._tokenizer = load_tokenizer(self._path, self._append_eos)

  def process(self, batch):
    for doc, ids in zip(batch, self._tokenizer.tokenize([d.text for d in batch])):
      yield doc.with_scores(num_tokens=len(ids))


class CountTokens(beam.PTransform):
  """Documents -> the same documents with `num_tokens` (for --keep_tokens: the budget is
  counted before selecting; the selected documents are tokenized again when written,
  which keeps no token list in memory between the two)."""

  def __init__(self, path: str, append_eos: bool = False):
    super().__init__()
    self._path, self._append_eos = path, append_eos

  def expand(self, docs):
    return (docs
            | "Batch" >> beam.BatchElements(min_batch_size=1, max_batch_size=_BATCH)
            | "Count" >> beam.ParDo(_CountTokensInBatch(self._path, self._append_eos)))
