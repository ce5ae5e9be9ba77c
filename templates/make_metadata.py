"""Generates templates/metadata.json (the Flex Template's parameters) from the job's parser.

    python templates/make_metadata.py           # (re)writes templates/metadata.json
    python templates/make_metadata.py --check   # exit status 1 when the file is stale

Every user-facing option of `beam_pipelines.options.build_parser()` becomes one
parameter (only --help is left out), so the template never drifts from the job: the
parameter name is the option without its dashes (the launcher passes `--name=value`),
the help text is argparse's help, required options are not optional, and each option
gets a validation regex chosen from what its argparse type accepts (see `kind_of`).
tests/test_templates.py checks that metadata.json equals what this script writes now.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)

METADATA_PATH = os.path.join(HERE, "metadata.json")
TEMPLATE_NAME = "Ask-LLM pre-training data selection"

# A Cloud Storage bucket name: lowercase letters, digits, '-', '_' and '.', starting and
# ending with a letter or digit.
_BUCKET = r"[a-z0-9][-_.a-z0-9]*[a-z0-9]"
_GCS_OBJECT = rf"gs://{_BUCKET}/[^,]+"
from beam_pipelines.options import OUTPUT_FORMATS  # noqa: E402  (after the path set-up)
_FORMAT = "(" + "|".join(OUTPUT_FORMATS) + ")"
from transforms.signals import REGISTRY  # noqa: E402
_SIGNAL = "(" + "|".join(REGISTRY) + ")"

# Regexes by kind of option. Template parameters arrive as strings; these are at least as
# strict as the job's own parsing, and stricter where a template run needs it (paths
# must be on Cloud Storage: the launcher VM and the workers share no disk).
REGEXES: Dict[str, str] = {
    "gcs_input": rf"^{_GCS_OBJECT}(,\s*{_GCS_OBJECT})*$",
    "gcs_output": rf"^gs://{_BUCKET}/.+$",
    "gcs_path": rf"^gs://{_BUCKET}/.+$",
    "head": rf"^(bundled|gs://{_BUCKET}/.+)$",
    # default, a gs:// directory or .gguf file, or a Hugging Face Hub id (owner/name).
    "model": rf"^(default|gs://{_BUCKET}/.+|[A-Za-z0-9][-_.A-Za-z0-9]*/[-_.A-Za-z0-9]+)$",
    "bool": r"^(true|false)$",
    "positive_int": r"^[1-9][0-9]*$",
    "nonnegative_int": r"^[0-9]+$",
    "int": r"^-?[0-9]+$",
    # (0, 1]
    "fraction": r"^(0?\.[0-9]*[1-9][0-9]*|1(\.0*)?)$",
    # [0, 1]
    "unit_interval": r"^(0(\.[0-9]*)?|\.[0-9]+|1(\.0*)?)$",
    # > 0, plain or scientific notation
    "positive_float": r"^(0*[1-9][0-9]*(\.[0-9]*)?|0*\.[0-9]*[1-9][0-9]*)([eE][-+]?[0-9]+)?$",
    "float": r"^-?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?$",
    "csv": r"^[^,]+(,[^,]+)*$",
    "output_formats": rf"^{_FORMAT}(,{_FORMAT})*$",
    "signals": rf"^{_SIGNAL}(,{_SIGNAL})*$",
    "balance_by": r"^(cluster|topic|field:[^.\s]+(\.[^.\s]+)*)$",
}

# Options whose kind follows from their meaning rather than their argparse type.
NAME_KINDS = {
    "input": "gcs_input",
    "output": "gcs_output",
    "prompt": "prompt",
    "sketch_from": "gcs_path",
    "config": "gcs_path",  # a YAML/JSON file of options, read with Beam's FileSystems
    "quality_head": "head",
    "tokenizer": "gcs_path",
    "output_format": "output_formats",
    "signals": "signals",
    "balance_by": "balance_by",
    "topic_head": "head",
}
# Words a numeric option may accept besides numbers (e.g. --bucket_width=auto).
_WORDS = ("auto", "none", "default", "all")

# Nicer labels than the generated ones ("max_doc_bytes" -> "Max doc bytes").
LABELS = {
    "input": "Input files (gs:// glob or comma-separated list)",
    "output": "Output directory (gs://)",
    "scorer_model": "Ask-LLM scorer model",
    "embedding_model": "Embedding model",
    "ask_llm_score": "Ask-LLM score",
    "id_field": "ID field",
}
_ACRONYMS = {"id": "ID", "gpu": "GPU", "llm": "LLM", "gcs": "GCS", "cpu": "CPU"}

# What a template run needs to know beyond the command-line help.
TEMPLATE_NOTES = {
    "input": "In a template run: Cloud Storage only (gs://bucket/path, globs allowed, "
             "comma-separated).",
    "output": "In a template run: a gs:// directory.",
    "sketch_from": "In a template run: a gs:// path.",
    "quality_head": "In a template run: bundled, or a gs:// path.",
}
# Options that are not template parameters: a launch must create a job, and
# --estimate_only creates none (Dataflow reports such a launch as failed); run the
# estimate locally instead.
NOT_PARAMETERS = ("estimate_only",)
_MODEL_NOTE = ("In a template run: default (the model bundled in the image), a gs:// "
               "directory or .gguf file, or a Hugging Face Hub id (the workers must reach "
               "the hub).")


def _probe(fn, value):
  try:
    return True, fn(value)
  except (argparse.ArgumentTypeError, TypeError, ValueError):
    return False, None


def is_bool_flag(action: argparse.Action) -> bool:
  """A flag that accepts --name=true/false (nargs='?' with a boolean type)."""
  if action.nargs == 0 or action.type is None:
    return False
  ok_t, t = _probe(action.type, "true")
  ok_f, f = _probe(action.type, "false")
  return ok_t and ok_f and t is True and f is False


def kind_of(action: argparse.Action) -> str:
  """The kind of value an option takes, which picks its regex (see REGEXES).

  Decided from the option's name for paths and models, else by probing its argparse
  type with sample strings, so renamed or new helper types keep working. 'text' means
  free text (no regex); 'store_flag' means an argparse flag that takes no value, which
  a Flex Template cannot pass (the launcher always sends --name=value).
  """
  name = option_name(action)
  if name in NAME_KINDS:
    return NAME_KINDS[name]
  if action.choices is not None:
    return "choice"
  if action.nargs == 0:
    return "store_flag"
  if name.endswith("_model") and action.default == "default":
    return "model"
  t = action.type
  if is_bool_flag(action):
    return "bool"
  if t is int:
    return "int"
  if t is float:
    return "float"
  if t is None or t is str:
    return "text"
  ok1, one = _probe(t, "1")
  ok0, _ = _probe(t, "0")
  ok_half, half = _probe(t, "0.5")
  ok_big, _ = _probe(t, "1.5")
  if ok1 and type(one) is int and not ok0:
    return "positive_int"
  if ok1 and type(one) is int and ok0 and not _probe(t, "-1")[0]:
    return "nonnegative_int"
  if ok_half and half == 0.5 and ok1 and not ok0 and not ok_big:
    return "fraction"
  if ok_half and half == 0.5 and ok1 and ok0 and not ok_big:
    return "unit_interval"
  if ok_half and half == 0.5 and not ok0:
    return "positive_float"
  ok_csv, parts = _probe(t, "a,b")
  if ok_csv and isinstance(parts, (tuple, list)) and list(parts) == ["a", "b"]:
    return "csv"
  return "text"


def accepted_words(action: argparse.Action) -> List[str]:
  """Words such as 'auto' that a numeric option's type accepts besides numbers."""
  if action.type in (None, str) or kind_of(action) not in (
      "positive_int", "nonnegative_int", "int", "fraction", "unit_interval", "positive_float",
      "float"):
    return []
  return [w for w in _WORDS if _probe(action.type, w)[0]]


def regex_for(action: argparse.Action) -> Optional[str]:
  kind = kind_of(action)
  words = accepted_words(action)
  if words and kind in REGEXES:
    number = REGEXES[kind][1:-1]  # without ^ and $
    return "^(" + "|".join(re.escape(w) for w in words) + "|" + number + ")$"
  if kind == "choice":
    return "^(" + "|".join(re.escape(str(c)) for c in action.choices) + ")$"
  if kind == "prompt":
    from models.prompts import PROMPTS
    names = ["auto"] + sorted(PROMPTS)
    return "^(" + "|".join(re.escape(n) for n in names) + rf"|@gs://{_BUCKET}/.+)$"
  if kind == "store_flag":
    # What the launcher will send; the job's parser must accept it (it does not today
    # for store_true/store_false flags, which tests/test_templates.py reports).
    return REGEXES["bool"]
  return REGEXES.get(kind)


def option_name(action: argparse.Action) -> str:
  """The first long option string without its dashes: --input -> input."""
  longs = [s for s in action.option_strings if s.startswith("--")]
  return (longs or action.option_strings)[0].lstrip("-")


def user_facing_actions(parser: argparse.ArgumentParser) -> List[argparse.Action]:
  """Every option a template user can pass: not --help, options with suppressed help, or
  NOT_PARAMETERS."""
  return [a for a in parser._actions  # pylint: disable=protected-access
          if a.option_strings and not isinstance(a, argparse._HelpAction)  # pylint: disable=protected-access
          and a.help != argparse.SUPPRESS and option_name(a) not in NOT_PARAMETERS]


def label_for(name: str) -> str:
  if name in LABELS:
    return LABELS[name]
  words = [_ACRONYMS.get(w, w) for w in name.split("_")]
  return " ".join([words[0][:1].upper() + words[0][1:]] + words[1:])


def _exclusive_with(parser: argparse.ArgumentParser, action: argparse.Action) -> List[str]:
  others = []
  for group in parser._mutually_exclusive_groups:  # pylint: disable=protected-access
    if action in group._group_actions:  # pylint: disable=protected-access
      others += [option_name(a) for a in group._group_actions if a is not action]  # pylint: disable=protected-access
  return others


def help_for(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
  text = action.help or ""
  if "%(" in text:
    params = dict(vars(action), prog=parser.prog)
    text = text % params
  parts = [" ".join(text.split())]
  others = _exclusive_with(parser, action)
  if others:
    parts.append("Do not combine with " + ", ".join(others) + ".")
  name = option_name(action)
  note = TEMPLATE_NOTES.get(name) or (_MODEL_NOTE if kind_of(action) == "model" else None)
  if note:
    parts.append(note)
  return " ".join(p for p in parts if p)


def _description(parser: argparse.ArgumentParser) -> str:
  first = (parser.description or "").strip().splitlines()[0].strip()
  return (first + " Runs the Ask-LLM scorer with RunInference on Dataflow GPU workers; "
          "the same image is the launcher and the worker (sdk_container_image).")


def build_metadata(parser: Optional[argparse.ArgumentParser] = None) -> dict:
  if parser is None:
    from beam_pipelines.options import build_parser
    parser = build_parser()
  params = []
  for action in user_facing_actions(parser):
    name = option_name(action)
    param = {
        "name": name,
        "label": label_for(name),
        "helpText": help_for(parser, action),
        "isOptional": not action.required,
    }
    regex = regex_for(action)
    if regex:
      param["regexes"] = [regex]
    params.append(param)
  return {"name": TEMPLATE_NAME, "description": _description(parser), "parameters": params}


def render(metadata: Optional[dict] = None) -> str:
  return json.dumps(metadata or build_metadata(), indent=2, ensure_ascii=False) + "\n"


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--check", action="store_true",
                 help="Do not write; exit 1 when metadata.json differs from the parser.")
  p.add_argument("--output", default=METADATA_PATH, help="Where to write metadata.json.")
  args = p.parse_args(argv)
  text = render()
  if args.check:
    try:
      with open(args.output, encoding="utf-8") as f:
        current = f.read()
    except FileNotFoundError:
      current = None
    if current != text:
      print(f"{args.output} is stale: run python templates/make_metadata.py",
            file=sys.stderr)
      return 1
    return 0
  with open(args.output, "w", encoding="utf-8") as f:
    f.write(text)
  print(f"Wrote {args.output} ({len(json.loads(text)['parameters'])} parameters)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
