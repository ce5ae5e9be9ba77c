"""Tiny random-weight models and tokenizers, built in-process for offline tests.

Nothing is downloaded: tokenizers are trained on a small built-in English corpus and models are
initialised from a fixed seed, then saved with `save_pretrained(dir)` so the code under test can
load them with `AutoTokenizer` / `AutoModel*.from_pretrained(dir)` exactly like a Hub model.
No pytest here; tests/conftest.py wraps these in session fixtures.
"""
from __future__ import annotations

import itertools

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (BertConfig, BertModel, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration)

SEED = 1234
# Ask-LLM reads the next-token probability of these, so each must be a single token,
# with and without a leading space.
YES_NO = ("yes", "Yes", "no", "No")
CHAT_START, CHAT_END = "<|im_start|>", "<|im_end|>"
# Like SmolLM2's template, minus its default system prompt.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

_SENTENCES = """\
The cell is the basic unit of life, and every living organism is made of one or more cells.
Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.
Water boils at one hundred degrees Celsius at sea level.
The Earth orbits the Sun once every year, and the Moon orbits the Earth about once a month.
Gravity pulls objects toward each other in proportion to their mass.
Light travels faster than sound, which is why we see lightning before we hear thunder.
An atom has a small nucleus of protons and neutrons surrounded by electrons.
DNA carries the genetic instructions that cells use to grow and divide.
Vaccines train the immune system to recognise a virus before an infection.
Doctors measure blood pressure to check the health of the heart and blood vessels.
Regular exercise and a balanced diet lower the risk of many diseases.
Antibiotics treat infections caused by bacteria but do not work against viruses.
The Roman Empire controlled most of Europe and the Mediterranean for centuries.
The printing press made books cheaper and helped ideas spread across Europe.
The Industrial Revolution began in Britain in the eighteenth century.
Ancient Egyptians built the pyramids as tombs for their kings.
The French Revolution changed the government and society of France.
World War Two ended in nineteen forty five.
A prime number has exactly two divisors: one and itself.
The sum of the angles in a triangle is one hundred and eighty degrees.
To solve a linear equation, move every term with the unknown to one side.
The derivative of a function measures how fast its value changes.
A matrix is a rectangular table of numbers that can represent a linear map.
Probability describes how likely an event is, on a scale from zero to one.
A function in Python is defined with the keyword def and a list of arguments.
Programs read input, process data and write output to a file or the screen.
A loop repeats a block of code until a condition becomes false.
Unit tests check that small pieces of a program behave as expected.
A database stores records in tables that can be searched with queries.
Version control lets a team track every change to the source code.
Inflation is the rate at which prices rise over time.
Supply and demand together set the price of goods in a market.
A central bank sets interest rates to keep prices stable.
Trade lets countries specialise in what they produce best.
Taxes pay for roads, schools, hospitals and other public services.
The Nile is one of the longest rivers in the world.
Mountains form when tectonic plates push against each other.
Deserts receive very little rain, and their nights can be cold.
The Pacific Ocean is the largest and deepest ocean on Earth.
Rain forests are home to more than half of the species on land.
To bake bread, mix flour, water, salt and yeast, then let the dough rise.
To plant a tree, dig a hole twice as wide as the roots and water it well.
Before you paint a wall, clean it and cover the floor.
To change a tire, loosen the nuts, lift the car and replace the wheel.
Read the question carefully before you write the answer.
Good writing is clear, short and well organised.
This paragraph explains a fact about the world in plain language.
The text is well written and contains useful knowledge.
The text is spam and contains no useful information.
Click here to buy cheap pills and win money at the online casino.
Home | About | Contact | Login | Sign up | Privacy policy
We use cookies to improve your experience. Accept all cookies to continue.
Page not found. The page you are looking for does not exist.
Share this on Facebook, Twitter and email. Follow us for more.
Lorem ipsum dolor sit amet, consectetur adipiscing elit.
asdf jkl qwerty zxcv uiop hjkl
"""

# The Ask-LLM prompt (Sachdeva et al., 2024), so real prompts tokenise into few tokens.
_PROMPT = (
    "###\n{text}\n###\n\nDoes the previous paragraph demarcated within ### and ### contain "
    "informative signal for pre-training a large-language model? An informative datapoint should "
    "be well-formatted, contain some usable knowledge of the world, and strictly NOT have any "
    "harmful, racist, sexist, etc. content.\n\nOPTIONS:\n- yes\n- no")

_SUBJECTS = ("The student", "A scientist", "My neighbour", "The teacher", "Our team", "The doctor")
_VERBS = ("reads", "writes", "explains", "studies", "checks", "describes")
_OBJECTS = ("a long book", "the new report", "a simple proof", "the old map", "a short program")


def _corpus(extra_words=()):
  """A few hundred deterministic English lines for tokenizer training."""
  lines = _SENTENCES.splitlines()
  # Combinatorial filler sentences, so common words get merged into whole tokens.
  lines += [f"{s} {v} {o} every day." for s, v, o in itertools.product(_SUBJECTS, _VERBS, _OBJECTS)]
  lines += [_PROMPT.format(text=t) for t in lines[:40]]
  # Repeat the must-be-one-token words, at line start (no space) and mid-line (leading space),
  # so BPE learns each as a single merge in both forms.
  for word in tuple(YES_NO) + tuple(extra_words):
    lines += [word, f"Answer: {word}", f"- {word}", f"The answer is {word}."] * 40
  return lines


def build_word_tokenizer(extra_words=()) -> PreTrainedTokenizerFast:
  """A byte-level BPE tokenizer (vocab 800) that encodes any unicode text without <unk>.

  "yes", "Yes", "no", "No" and every word in `extra_words` are single tokens, with and without
  a leading space (checked here). No BOS/EOS is added on encode, like SmolLM2.
  """
  specials = ["<pad>", "<s>", "</s>", "<unk>"]
  tok = Tokenizer(models.BPE(unk_token="<unk>"))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=800, special_tokens=specials, show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(_corpus(extra_words), trainer=trainer)
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>",
                                 eos_token="</s>", unk_token="<unk>")
  for word in tuple(YES_NO) + tuple(extra_words):
    for form in (word, " " + word):
      ids = fast.encode(form, add_special_tokens=False)
      assert len(ids) == 1, f"{form!r} is not a single token: {fast.convert_ids_to_tokens(ids)}"
  return fast


def build_tiny_causal_lm(path) -> str:
  """A tiny random LlamaForCausalLM plus a tokenizer with a SmolLM2-style chat template."""
  tok = build_word_tokenizer()
  tok.add_special_tokens({"extra_special_tokens": [CHAT_START, CHAT_END]})
  tok.chat_template = CHAT_TEMPLATE
  tok.model_max_length = 1024
  torch.manual_seed(SEED)
  config = LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                       max_position_embeddings=1024, pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
  LlamaForCausalLM(config).eval().save_pretrained(path)
  tok.save_pretrained(path)
  return str(path)


def build_tiny_t5(path) -> str:
  """A tiny random T5ForConditionalGeneration; like real T5, encoding appends </s>."""
  tok = build_word_tokenizer()
  tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
      single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tok.eos_token_id)])
  tok.model_max_length = 512
  torch.manual_seed(SEED)
  config = T5Config(vocab_size=len(tok), d_model=32, d_kv=8, d_ff=64, num_layers=2,
                    num_decoder_layers=2, num_heads=4, decoder_start_token_id=tok.pad_token_id,
                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
  T5ForConditionalGeneration(config).eval().save_pretrained(path)
  tok.save_pretrained(path)
  return str(path)


def build_tiny_bert(path) -> str:
  """A tiny random BertModel (for sentence embeddings) with a lower-casing WordPiece tokenizer."""
  specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
  tok.normalizer = normalizers.BertNormalizer(lowercase=True)
  tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tok.decoder = decoders.WordPiece()
  tok.train_from_iterator(_corpus(), trainer=trainers.WordPieceTrainer(
      vocab_size=800, special_tokens=specials, show_progress=False))
  tok.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")])
  fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                 cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                 model_max_length=512)
  torch.manual_seed(SEED)
  config = BertConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, intermediate_size=64,
                      pad_token_id=fast.pad_token_id)
  BertModel(config).eval().save_pretrained(path)
  fast.save_pretrained(path)
  return str(path)
