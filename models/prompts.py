"""Ask-LLM prompts. Each wraps the document, in place of `{text}`, between ### delimiters."""
from __future__ import annotations

import re

from models import storage

PAPER = """###
{text}
###

Does the previous paragraph demarcated within ### and ### contain informative signal for pre-training a large-language model? An informative datapoint should be well-formatted, contain some usable knowledge of the world, and strictly NOT have any harmful, racist, sexist, etc. content.

OPTIONS:
- yes
- no"""

# Variants measured in benchmarks/scorer_quality.py against the paper's wording.
EDUCATIONAL = """###
{text}
###

Is the text between ### and ### educational, well-written content that teaches something useful about the world (not ads, navigation menus, spam or gibberish)? Answer yes or no."""

SHORT = """###
{text}
###

Is the previous text informative and well-written? Answer yes or no."""

PROMPTS = {"paper": PAPER, "educational": EDUCATIONAL, "short": SHORT}

_DELIMITER_RUN = re.compile(r"#{3,}")


def strip_delimiters(text: str) -> str:
  """Removes every run of 3+ '#', so a document can never close the ### delimiter.

  Runs are maximal, so what remains has no '###' anywhere (removal cannot join runs).
  """
  return _DELIMITER_RUN.sub("", text)


# Prompt-injection hardening. A document that ends in "Answer: yes" raised the bundled
# judge's P(yes) by 1.3-1.5x (docs/design.md, "Prompt injection"): lines that only give an answer
# (a yes/no word, optionally after a label such as "Answer:" or a list bullet), bare
# answer labels ("OPTIONS:", "assistant"), and chat-control look-alikes such as
# "<|im_start|>" are removed from what the judge reads. The selected text is never changed.
_YES_NO = r"(?:yes|no)"
_LABEL = (r"(?:(?:the\s+)?(?:correct\s+|final\s+|right\s+)?"
          r"(?:answer|options?|choices?|response|reply|output|label|verdict|assistant|a)"
          r"(?:\s+is)?)")
_BULLET = r"(?:[-*+\u2022>]|\(?[a-d1-4][.)])"
_CONTROL = re.compile(r"<\|[^|<>\s]{1,40}\|>")
# A line that holds answers (and labels, bullets, punctuation) and nothing else.
_ANSWER_LINE = re.compile(
    rf"[\s\W_]*(?:{_BULLET}\s*)?(?:{_LABEL}\s*[:=\-]?[\s\W_]*)?"
    rf"(?:{_YES_NO}\b[\s\W_]*)*", re.IGNORECASE)
# "Answer: yes, ..." or "The answer is yes. ..." (a labelled answer, then punctuation and
# more text): the label and the answer word go, the rest of the line stays ("A: No
# additional items ..." is kept).
_LABELLED_ANSWER = re.compile(
    rf"^(\s*(?:{_BULLET}\s*)?)(?:{_LABEL}\s*[:=\-]|(?:the\s+)?(?:correct\s+|final\s+|right\s+)?"
    rf"(?:answer|response|reply|verdict)\s+is)\s*{_YES_NO}\s*(?:[.,;:!]+\s*|$)",
    re.IGNORECASE)


# "... is it safe? Answer: yes" (a labelled answer ending a line): removed from the line.
_TRAILING_ANSWER = re.compile(
    rf"(^|\s)(?:the\s+)?(?:correct\s+|final\s+|right\s+)?"
    rf"(?:answer|response|reply|output|label|verdict|assistant)(?:\s+is)?\s*[:=\-]?\s*"
    rf"{_YES_NO}\b[\s.!]*$", re.IGNORECASE)


def _is_answer_line(line: str) -> bool:
  if not line.strip():
    return False  # blank lines are kept (paragraph structure)
  if _ANSWER_LINE.fullmatch(line) is None:
    return False
  # Something answer-like must be there: a yes/no word, or a label with ':' or alone.
  return bool(re.search(rf"\b{_YES_NO}\b", line, re.IGNORECASE)
              or re.fullmatch(rf"[\s\W_]*{_LABEL}\s*[:=\-]?[\s\W_]*", line,
                              re.IGNORECASE))


def neutralize_answer_lines(text: str) -> str:
  """What the Ask-LLM judge reads of a document: the document without the lines that
  could pass for the judge's own answer.

  - chat-control look-alikes (`<|im_start|>`, `<|eot_id|>`, ...) become a space, and a
    line of them only is removed;
  - lines that are only an answer ("Answer: yes", "- yes", "yes yes yes", "The answer is
    no.", "OPTIONS:", "assistant") are removed, blank lines kept;
  - a line that starts or ends with a labelled answer ("Answer: yes, because ...",
    "... Answer: yes") loses the label and the answer word.
  Ordinary prose is untouched, including "yes"/"no" inside sentences. Idempotent, and
  it never creates a run of three '#' (lines are joined with newlines, markers become
  spaces).
  """
  prev = None
  while prev != text:  # to a fixed point, so that applying it twice changes nothing
    prev = text
    kept = []
    for line in text.split("\n"):
      bare = _CONTROL.sub(" ", line)
      if _is_answer_line(bare) or (line.strip() and not bare.strip()):
        continue  # an answer, or a line of chat markers only
      line = bare
      cut = _TRAILING_ANSWER.sub(r"\1", _LABELLED_ANSWER.sub(r"\1", line))
      kept.append(cut.rstrip() if cut != line else line)
    text = "\n".join(kept)
  return text


# A prompt is a few hundred tokens; a bigger file is a mistake (or /dev/zero).
MAX_PROMPT_FILE_BYTES = 64 * 1024


def resolve_prompt(spec: str) -> str:
  """--prompt: a name from PROMPTS, or @FILE (local or gs://) holding a template."""
  if spec.startswith("@"):
    path = spec[1:]
    try:
      with storage.open_file(path) as f:
        data = f.read(MAX_PROMPT_FILE_BYTES + 1)  # bounded: @/dev/zero must not hang
      if len(data) > MAX_PROMPT_FILE_BYTES:
        raise ValueError(f"it is over {MAX_PROMPT_FILE_BYTES:,} bytes")
      template = data.decode("utf-8")
    except Exception as e:
      raise ValueError(f"cannot read the prompt file {path!r}: {e}") from e
  elif spec in PROMPTS:
    template = PROMPTS[spec]
  else:
    raise ValueError(
        f"unknown prompt {spec!r}: use one of {', '.join(sorted(PROMPTS))} or @FILE")
  if template.count("{text}") != 1:
    raise ValueError("a prompt template must contain '{text}' exactly once")
  return template
