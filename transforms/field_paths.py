"""Field paths: `--text_field`, `--id_field`, `--keep_fields` and `--teacher_field` name a
key of the record or a dotted path into nested objects (`meta.url`, a Parquet struct's
`meta.lang`, `items.0.name` for a list's element). A key that holds the dot itself and
exists wins over the path, so a flat record with a literal "meta.url" key reads as before.
Pure Python: the readers, record_parsing and first_records use it.
"""
from __future__ import annotations

from typing import Any, Iterator, List, Mapping, Sequence, Tuple

_MISSING = object()
# Paths listed for a user (first_records' "fields seen") go no deeper than this.
MAX_LISTED_DEPTH = 4


def lookup(record: Any, path: str) -> Tuple[bool, Any]:
  """(found, value) of `path` in `record`: the literal key first, else the dotted path,
  each part a key of an object (a digit string also indexes a list)."""
  if not isinstance(record, Mapping):
    return False, None
  if path in record:
    return True, record[path]
  if "." not in path:
    return False, None
  value = _walk(record, path.split("."))
  return (False, None) if value is _MISSING else (True, value)


def _walk(value: Any, parts: Sequence[str]) -> Any:
  for i, part in enumerate(parts):
    if isinstance(value, Mapping):
      rest = ".".join(parts[i:])
      if rest in value:  # a literal dotted key deeper down wins too
        return value[rest]
      if part not in value:
        return _MISSING
      value = value[part]
    elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
      value = value[int(part)]
    else:
      return _MISSING
  return value


def get_path(record: Any, path: str, default: Any = None) -> Any:
  """The value at `path` (see lookup), `default` where there is none."""
  found, value = lookup(record, path)
  return value if found else default


def top_level(path: str) -> str:
  """The top-level key a path starts with (the column a columnar reader must read)."""
  return path.split(".", 1)[0]


def columns_for(paths: Sequence[str]) -> List[str]:
  """The columns to read for `paths`: each path as a literal column name (it wins where it
  exists) and the top-level column it starts with; readers keep those that exist."""
  out = []
  for path in paths:
    if path:
      out += [path, top_level(path)]
  return list(dict.fromkeys(out))


def iter_paths(record: Mapping[str, Any], prefix: str = "", depth: int = 0
               ) -> Iterator[Tuple[str, Any]]:
  """(path, value) of every key of `record` and, below it, every key of a nested object
  (not into lists), parents before their children, up to MAX_LISTED_DEPTH levels."""
  for key, value in record.items():
    path = f"{prefix}{key}"
    yield path, value
    if isinstance(value, Mapping) and depth + 1 < MAX_LISTED_DEPTH:
      yield from iter_paths(value, path + ".", depth + 1)
