"""The Ask-LLM scorer: P("yes") of an instruction-tuned LLM asked whether a document is
informative. Texts in, numbers out; transforms/inference.py attaches them to Documents.

One forward pass per document, no generation: the score is the softmax over the
vocabulary at the first answer position, summed over the tokens that spell "yes".
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, Iterable, List, Sequence, Tuple

import numpy as np

from models import fingerprint, loading, precision as precision_lib
from models.loading import MAX_CHARS_PER_TOKEN, load_pretrained, resolve_device
from models.prompts import neutralize_answer_lines, resolve_prompt, strip_delimiters

_LOG = logging.getLogger(__name__)


# Bump when a code change changes this model's outputs: the score cache then misses.
SCORING_VERSION = 1


@dataclasses.dataclass(frozen=True)
class AskLLMConfig:
  """Everything needed to build the scorer on a worker (small and picklable)."""
  model: str = loading.DEFAULT
  prompt: str = "paper"                 # a template with {text}, or a name / @FILE
  max_tokens: int = 512                 # budget for the whole prompt, document truncated
  yes_tokens: Tuple[str, ...] = ("yes", "Yes")
  no_tokens: Tuple[str, ...] = ("no", "No")
  chat_template: str = "auto"           # auto | on | off (auto: on when the tokenizer has one)
  score: str = "p_yes"                  # p_yes | normalized: P(yes)/(P(yes)+P(no))
  device: str = "auto"                  # auto | cpu | cuda
  padding_side: str = "left"            # left (position_ids) | right (gather last token)
  allow_pickle_weights: bool = False
  trust_remote_code: bool = False
  precision: str = "fp32"               # fp32 | bf16 | auto (the job resolves auto)

  def resolved_precision(self) -> str:
    return precision_lib.resolve(self.precision, "scorer", self.device)

  def template(self) -> str:
    return self.prompt if "{text}" in self.prompt else resolve_prompt(self.prompt)

  def cache_settings(self) -> dict:
    """Everything (P(yes), P(no)) depends on, for the score cache's fingerprint."""
    return {"model": fingerprint.model_identity(self.model, "scorer"),
            "prompt": self.template(), "chat_template": self.chat_template,
            "yes_tokens": list(self.yes_tokens), "no_tokens": list(self.no_tokens),
            "max_tokens": self.max_tokens, "scoring_version": SCORING_VERSION,
            # bf16 moves P(yes) by up to ~1e-2, far beyond the 1e-5 that reuse allows.
            "precision": self.resolved_precision()}


def single_token_ids(tokenizer, words: Iterable[str]) -> List[int]:
  """Token ids that spell each word by themselves, with and without a leading space."""
  ids = set()
  for w in words:
    for variant in (w, " " + w):
      enc = tokenizer.encode(variant, add_special_tokens=False)
      # SentencePiece may give ["▁", "yes"]: the word piece alone is what the model emits.
      if len(enc) == 2 and tokenizer.convert_ids_to_tokens(enc[0]) in ("▁", "Ġ"):
        enc = enc[1:]
      if len(enc) == 1:
        ids.add(enc[0])
  if not ids:
    raise ValueError(f"none of {list(words)} is a single token for this tokenizer; "
                     "choose other --yes_tokens/--no_tokens")
  return sorted(ids)


def special_affixes(tokenizer) -> Tuple[List[int], List[int]]:
  """The special tokens a tokenizer adds before and after any text (BOS for Llama-style
  tokenizers, EOS after for T5), learnt by encoding a probe with and without them."""
  probe = tokenizer.encode("a", add_special_tokens=True)
  bare = tokenizer.encode("a", add_special_tokens=False)
  start = probe.index(bare[0]) if bare and bare[0] in probe else 0
  return probe[:start], probe[start + len(bare):]


class PromptEncoder:
  """Builds the prompt's token ids for a document: the frame (prompt, chat template,
  special tokens) around the document, truncated inside the delimiters."""

  def __init__(self, tokenizer, config: AskLLMConfig, is_encoder_decoder: bool = False,
               harden: bool = True):
    self.tokenizer = tokenizer
    self.config = config
    # harden=False (benchmarks/prompt_injection.py only): the document as it is, without
    # neutralize_answer_lines, to measure what the hardening changes.
    self.harden = harden
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if config.chat_template == "on" and not has_template:
      raise ValueError("--chat_template=on but the scorer's tokenizer has no chat template")
    self.uses_chat_template = (not is_encoder_decoder and has_template
                               and config.chat_template in ("auto", "on"))
    self.head_ids, self.tail_ids = self._frame_ids(config.template())
    self.doc_budget = config.max_tokens - len(self.head_ids) - len(self.tail_ids)
    if self.doc_budget < 16:
      raise ValueError(
          f"--max_tokens={config.max_tokens} leaves {self.doc_budget} tokens for the document "
          f"after the prompt's {len(self.head_ids) + len(self.tail_ids)} tokens; raise it")

  def _frame_ids(self, template: str):
    """Token ids of the prompt before and after the document.

    The document is tokenised on its own and truncated between them, so the question is
    never cut off however long the document is.
    """
    tok = self.tokenizer
    placeholder = "\u0000DOCUMENT\u0000"
    filled = template.replace("{text}", placeholder)
    if self.uses_chat_template:
      rendered = tok.apply_chat_template([{"role": "user", "content": filled}],
                                         add_generation_prompt=True, tokenize=False)
      head, tail = rendered.split(placeholder)
      # The rendered template already holds every special token it needs.
      return (tok.encode(head, add_special_tokens=False),
              tok.encode(tail, add_special_tokens=False))
    head, tail = filled.split(placeholder)
    prefix, suffix = special_affixes(tok)
    return (prefix + tok.encode(head, add_special_tokens=False),
            tok.encode(tail, add_special_tokens=False) + suffix)

  def encode(self, text: str) -> List[int]:
    """The full prompt's token ids for one document."""
    clean = strip_delimiters(text)[: self.doc_budget * MAX_CHARS_PER_TOKEN]
    if self.harden:
      # Lines that could pass for the judge's answer ("Answer: yes", "- yes", a fake
      # assistant turn) are removed from what the judge reads (docs/design.md, "Prompt injection").
      clean = neutralize_answer_lines(clean)
    # split_special_tokens: a document containing "<|im_end|>" is text, not a control token.
    doc_ids = self.tokenizer(clean, add_special_tokens=False, split_special_tokens=True,
                             return_attention_mask=False)["input_ids"][: self.doc_budget]
    return self.head_ids + doc_ids + self.tail_ids


class AskLLMScorer:
  """A loaded model + tokenizer that turns document texts into (P(yes), P(no)).

  A plain class (not a tuple) so that RunInference can hold a weak reference to it, with
  methods (`run`) so it also works when the model lives in another process
  (large_model / model_copies).
  """

  def __init__(self, model, tokenizer, config: AskLLMConfig, device: str,
               precision: str = "fp32"):
    import torch
    self.precision = precision
    self.model = model
    self.tokenizer = tokenizer
    self.config = config
    self.device = device
    self.is_encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    self.prompt = PromptEncoder(tokenizer, config, self.is_encoder_decoder)
    self.encode = self.prompt.encode
    self.uses_chat_template = self.prompt.uses_chat_template
    self.head_ids, self.tail_ids = self.prompt.head_ids, self.prompt.tail_ids
    self.yes_ids = torch.tensor(single_token_ids(tokenizer, config.yes_tokens))
    self.no_ids = torch.tensor(single_token_ids(tokenizer, config.no_tokens))
    pad = tokenizer.pad_token_id
    if pad is None:
      pad = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
    self.pad_id = int(pad)
    if self.is_encoder_decoder:
      start = model.config.decoder_start_token_id
      self.decoder_start_id = int(start if start is not None else self.pad_id)

  # -- scoring --------------------------------------------------------------------------
  def score_ids(self, batch: Sequence[List[int]]) -> np.ndarray:
    """Returns [B, 2] float64 (P(yes), P(no)) for already-encoded prompts."""
    import torch
    if not batch:
      return np.zeros((0, 2))
    lengths = [len(ids) for ids in batch]
    width = max(lengths)
    n = len(batch)
    input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    left = self.config.padding_side == "left" and not self.is_encoder_decoder
    for i, ids in enumerate(batch):
      if left:
        input_ids[i, width - len(ids):] = torch.tensor(ids)
        mask[i, width - len(ids):] = 1
      else:
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
    input_ids, mask = input_ids.to(self.device), mask.to(self.device)
    with torch.inference_mode(), precision_lib.autocast(self.precision, self.device):
      if self.is_encoder_decoder:
        dec = torch.full((n, 1), self.decoder_start_id, dtype=torch.long, device=self.device)
        logits = self.model(input_ids=input_ids, attention_mask=mask,
                            decoder_input_ids=dec).logits[:, 0, :]
      elif left:
        # Left padding shifts real tokens right: explicit position ids keep every
        # document's positions (and so its score) the same as when scored alone.
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=input_ids, attention_mask=mask,
                            position_ids=position_ids, logits_to_keep=1).logits[:, -1, :]
      else:
        last = torch.tensor(lengths, device=self.device) - 1
        out = self.model(input_ids=input_ids, attention_mask=mask).logits
        logits = out[torch.arange(n, device=self.device), last]
    with torch.inference_mode():  # fp32, outside autocast: the score itself
      logp = torch.log_softmax(logits.float(), dim=-1)
      p_yes = torch.logsumexp(logp[:, self.yes_ids.to(self.device)], dim=-1).exp()
      p_no = torch.logsumexp(logp[:, self.no_ids.to(self.device)], dim=-1).exp()
    return torch.stack([p_yes, p_no], dim=-1).double().cpu().numpy()

  def score(self, texts: Sequence[str]) -> np.ndarray:
    """(P(yes), P(no)) for each text; batched internally by the caller's batch."""
    return self.score_ids([self.encode(t) for t in texts])

  def settings(self) -> Dict[str, str]:
    """Settings decided when the model loaded (for metrics.json): `auto` resolved."""
    return {"chat_template": "on" if self.uses_chat_template else "off",
            "precision": precision_lib.applied(self.precision, self.device)}

  def run(self, texts: Sequence[str]) -> np.ndarray:
    """The interface every model of the job offers its RunInference handler
    (transforms/inference.py): texts -> one row per text, here [N, 2] (P(yes), P(no))."""
    return self.score(texts)


def scores_from_probs(p_yes: float, p_no: float, mode: str) -> Dict[str, float]:
  """A document's Ask-LLM scores from its (P(yes), P(no)); `mode` is AskLLMConfig.score."""
  normalized = p_yes / (p_yes + p_no) if (p_yes + p_no) > 0 else 0.5
  main = normalized if mode == "normalized" else p_yes
  return {"ask_llm_score": float(main), "p_yes": float(p_yes), "p_no": float(p_no)}


def load_scorer(config: AskLLMConfig) -> AskLLMScorer:
  """Loads the scorer model once (called by the ModelHandler on each worker process)."""
  from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM
  device = resolve_device(config.device)
  precision = config.resolved_precision()
  precision_lib.warn_if_emulated(precision, device)
  model, tokenizer, resolved = load_pretrained(
      config.model, "scorer", device, (AutoModelForCausalLM, AutoModelForSeq2SeqLM),
      allow_pickle=config.allow_pickle_weights, trust_remote_code=config.trust_remote_code,
      precision=precision)
  scorer = AskLLMScorer(model, tokenizer, config, device, precision)
  scorer.model_name = resolved.name
  return scorer
