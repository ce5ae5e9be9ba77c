"""--config=FILE: options from a YAML or JSON file (local, gs:// or any Beam filesystem).

Keys are the options' names without dashes (`text_field: raw_content`); Beam's own
options (`runner`, `project`, `direct_num_workers`, ...) may be keys too. The file's
options come first on the command line, so a flag given there overrides them. A list is
joined with commas (`keep_fields: [url, meta.lang]`), true/false set a flag, null leaves
the default. An unknown key, or a value that is an object, is one error line naming the
key (and the nearest option). metrics.json and the report record the file's path and the
sha256 of its bytes (record()).
"""
from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

OPTION = "--config"
HELP = ("A YAML or JSON file of options (local or gs://): keys are the options' names "
        "without dashes (Beam's options too), lists join with commas; flags given on the "
        "command line override it. Its path and sha256 go into metrics.json and the "
        "report.")


class ConfigError(ValueError):
  """A config file that cannot be used; the message is one line."""


@dataclasses.dataclass(frozen=True)
class Loaded:
  path: str
  sha256: str
  argv: Tuple[str, ...]  # the file's options as command-line arguments


def find_path(argv: Sequence[str]) -> Optional[str]:
  """The --config value on a command line (its last one), or None."""
  path = None
  for i, arg in enumerate(argv):
    if arg.startswith(OPTION + "="):
      path = arg[len(OPTION) + 1:]
    elif arg == OPTION and i + 1 < len(argv):
      path = argv[i + 1]
  return path


def read_bytes(path: str) -> bytes:
  from apache_beam.io.filesystems import FileSystems
  try:
    with FileSystems.open(path, compression_type="uncompressed") as f:
      return f.read()
  except Exception as e:  # pylint: disable=broad-except  (missing file, no access)
    raise ConfigError(f"--config {path}: cannot be read ({type(e).__name__}: "
                      f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None


def parse(path: str, data: bytes) -> Dict[str, Any]:
  """The file's mapping: JSON for a .json file, else YAML (a superset of JSON)."""
  try:
    text = data.decode("utf-8-sig")
    if path.lower().endswith(".json"):
      value = json.loads(text)
    else:
      import yaml
      value = yaml.safe_load(text)
  except (ValueError, UnicodeDecodeError) as e:
    raise ConfigError(f"--config {path}: not valid "
                      f"{'JSON' if path.lower().endswith('.json') else 'YAML'}: "
                      f"{' '.join(str(e).split())[:200]}") from None
  except Exception as e:  # pylint: disable=broad-except  (yaml.YAMLError)
    raise ConfigError(f"--config {path}: not valid YAML: "
                      f"{' '.join(str(e).split())[:200]}") from None
  if value is None:
    return {}
  if not isinstance(value, dict):
    raise ConfigError(f"--config {path}: must hold a mapping of option names to values, "
                      f"not a {type(value).__name__}")
  return value


def _as_text(key: str, value: Any, path: str) -> str:
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (list, tuple)):
    if any(isinstance(v, (dict, list, tuple)) for v in value):
      raise ConfigError(f"--config {path}: {key}: a list of plain values is expected")
    return ",".join(_as_text(key, v, path) for v in value)
  if isinstance(value, dict):
    raise ConfigError(f"--config {path}: {key}: an option value cannot be a mapping")
  return str(value)


def to_argv(path: str, mapping: Dict[str, Any], ours: Dict[str, Any],
            beam_names: Sequence[str]) -> List[str]:
  """The mapping as command-line arguments. `ours`: {name: argparse action} of this job's
  options; `beam_names`: Beam's option names."""
  argv = []
  for key, value in mapping.items():
    name = str(key)
    if name.lstrip("-") == "config":
      raise ConfigError(f"--config {path}: a config file cannot name another (key {name!r})")
    if name.startswith("-") or (name not in ours and name not in beam_names):
      near = difflib.get_close_matches(name.lstrip("-"), list(ours) + list(beam_names),
                                       n=1, cutoff=0.6)
      hint = f"; did you mean {near[0]}?" if near else ""
      raise ConfigError(f"--config {path}: unknown key {name!r} (keys are option names "
                        f"without dashes){hint}")
    if value is None:
      continue
    action = ours.get(name)
    if action is not None and action.nargs == 0:  # store_true/store_const (e.g. --help)
      if value is not True:
        raise ConfigError(f"--config {path}: {name} takes true (or leave it out)")
      argv.append(f"--{name}")
      continue
    if name in beam_names and name not in ours and isinstance(value, bool):
      if value:  # Beam's flags are store_true
        argv.append(f"--{name}")
      continue
    argv.append(f"--{name}={_as_text(name, value, path)}")
  return argv


def load(argv: Sequence[str], ours: Dict[str, Any], beam_names: Sequence[str],
         read: Callable[[str], bytes] = read_bytes) -> Optional[Loaded]:
  """The config file a command line names, read and turned into arguments; None without
  --config."""
  path = find_path(argv)
  if path is None:
    return None
  data = read(path)
  mapping = parse(path, data)
  return Loaded(path, hashlib.sha256(data).hexdigest(),
                tuple(to_argv(path, mapping, ours, beam_names)))


def beam_parser():
  """An argparse parser of Beam's pipeline options (every PipelineOptions subclass's)."""
  from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser
  parser = _BeamArgumentParser(allow_abbrev=False)
  seen = {}
  for cls in PipelineOptions.__subclasses__():
    seen.setdefault(str(cls), cls)
  for cls in seen.values():
    cls._add_argparse_args(parser)  # pylint: disable=protected-access
  return parser


def beam_option_names() -> Tuple[str, ...]:
  """The names of Beam's pipeline options."""
  return tuple(s[2:] for a in beam_parser()._actions  # pylint: disable=protected-access
               for s in a.option_strings if s.startswith("--"))


def expand(parser, argv: Optional[Sequence[str]], beam_names: Callable[[], Sequence[str]]):
  """(argv with the config file's options first, Loaded or None). A bad file ends in
  parser.error: one `error:` line."""
  import sys
  argv = list(sys.argv[1:] if argv is None else argv)
  if find_path(argv) is None:
    return argv, None
  ours = {a.option_strings[0][2:]: a for a in parser._actions  # pylint: disable=protected-access
          if a.option_strings and a.option_strings[0].startswith("--")}
  try:
    loaded = load(argv, ours, beam_names())
  except ConfigError as e:
    parser.error(str(e))
  return list(loaded.argv) + argv, loaded


def record(args, loaded: Optional[Loaded]) -> None:
  """Puts the file's sha256 beside its path on the parsed options (metrics.json's
  options, the report's run card)."""
  args.config_sha256 = loaded.sha256 if loaded is not None else None
