"""Ask-LLM prompts. Each wraps the document, in place of `{text}`, between ### delimiters."""
from __future__ import annotations

import re

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


def resolve_prompt(spec: str) -> str:
  """--prompt: a name from PROMPTS, or @FILE (local or gs://) holding a template."""
  if spec.startswith("@"):
    from apache_beam.io.filesystems import FileSystems
    path = spec[1:]
    try:
      with FileSystems.open(path) as f:
        template = f.read().decode("utf-8")
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


def split_template(template: str):
  """Returns the text before and after `{text}`."""
  head, tail = template.split("{text}")
  return head, tail
