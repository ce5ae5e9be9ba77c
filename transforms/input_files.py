"""Which files --input names: every pattern is matched once, at launch, and every path it
matches is then read once or reported in rejected/ (docs/running.md, "Which files
--input reads").

- --input is split at commas; `\\,` is a comma inside a name.
- A pattern matches what its glob matches, and also the path it names exactly when that
  exists (so `data/a[1].jsonl` names that file); `[[]`, `[*]`, `[?]` match one `[`, `*`, `?`.
- `*` and `?` never cross a `/`, `**` does (files at any depth). As in Beam's matching, and
  unlike a shell, they match names starting with `.` and names with any other character.
- A path matched twice (by two patterns, or through a link to a file already matched) is
  read once.
- A matched path that is not a regular file (a pipe, socket, device, a directory matched
  without `**`, a broken link, a link loop) is passed on, and the reader reports it
  without opening it (`problem`): it is never waited on.

Local paths are listed here (os.scandir), other filesystems (gs://) through Beam's
FileSystems; both are filtered by the same regular expression (`translate`).
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import stat
import threading
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems

from transforms import records

_LOG = logging.getLogger(__name__)
_GLOB = re.compile(r"[*?\[]")
# Listing a pattern longer than this is taken as a hang (no network, no credentials):
# a listing of 100,000 gs:// objects takes well under a minute.
MATCH_TIMEOUT_S = 300.0


class InputError(ValueError):
  """Bad --input / --input_format; the message says what to fix."""


def split_patterns(input_arg: str) -> List[str]:
  """--input's patterns: split at commas, except `\\,` (a comma inside a name)."""
  parts = re.split(r"(?<!\\),", input_arg)
  return [p.replace("\\,", ",").strip() for p in parts if p.strip()]


def has_glob(pattern: str) -> bool:
  return _GLOB.search(pattern) is not None


def is_remote(path: str) -> bool:
  return "://" in path


def translate(pattern: str) -> str:
  """A glob as a regular expression over whole paths: `**` any characters, `*` any but
  `/`, `?` one but `/`, `[...]` a class (`[!...]` negated); the rest is literal, and an
  unclosed `[` too. Beam's own translation skips names holding a backslash."""
  out, i, n = [], 0, len(pattern)
  while i < n:
    c = pattern[i]
    i += 1
    if c == "*" and pattern[i:i + 1] == "*":
      out.append(".*")
      i += 1
    elif c == "*":
      out.append("[^/]*")
    elif c == "?":
      out.append("[^/]")
    elif c == "[" and (end := _class_end(pattern, i)) is not None:
      body, i = pattern[i:end], end + 1
      negate = body.startswith("!")
      body = _class_body(body[1:] if negate else body)
      out.append(f"[^/{body}]" if negate else f"[{body}]" if body else "(?!)")
    else:
      out.append(re.escape(c))
  return "(?s)" + "".join(out) + r"\Z"


def _class_body(body: str) -> str:
  """A glob class's members as a regex class body: `a-z` a range, a reversed range
  (`z-a`) nothing (as fnmatch has it), every other character literal."""
  items, k = [], 0
  while k < len(body):
    if k + 2 < len(body) and body[k + 1] == "-":
      if body[k] <= body[k + 2]:
        items.append(f"{re.escape(body[k])}-{re.escape(body[k + 2])}")
      k += 3
    else:
      items.append(re.escape(body[k]))
      k += 1
  return "".join(items)


def _class_end(pattern: str, i: int) -> Optional[int]:
  """The index of the `]` closing a class opened just before i (None: not a class)."""
  j = i + 1 if pattern[i:i + 1] == "!" else i
  j = j + 1 if pattern[j:j + 1] == "]" else j  # a leading `]` is a member
  end = pattern.find("]", j)
  return end if end >= 0 else None


@dataclasses.dataclass(frozen=True)
class Match:
  """One matched path; `reason` (a records.* rejection) when it will not be opened."""
  path: str
  size: int = 0
  reason: str = ""
  detail: str = ""


def _file_kind(mode: int) -> str:
  for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
                     (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                     (stat.S_ISBLK, "a block device")):
    if test(mode):
      return kind
  return "not a regular file"


def problem(path: str) -> Optional[Tuple[str, str]]:
  """(reason, detail) when `path` must not be opened as an input file (one os.stat, no
  open: a pipe would block); None for a regular file, or any remote object."""
  if is_remote(path):
    return (records.NOT_A_REGULAR_FILE, "a directory") if path.endswith("/") else None
  try:
    mode = os.stat(path).st_mode
  except (FileNotFoundError, NotADirectoryError):
    if os.path.islink(path):
      return records.MISSING_FILE, f"a broken symbolic link (to {os.readlink(path)})"
    return records.MISSING_FILE, "no such file (deleted or moved after the job started)"
  except OSError as e:
    if e.errno == errno.ELOOP:
      return records.NOT_A_REGULAR_FILE, "a symbolic link loop"
    return records.UNREADABLE_FILE, f"{type(e).__name__}: {e.strerror or e}"
  if stat.S_ISREG(mode):
    return None
  return records.NOT_A_REGULAR_FILE, _file_kind(mode)


def _local_match(path: str) -> Match:
  found = problem(path)
  if found:
    return Match(path, 0, *found)
  try:
    return Match(path, os.path.getsize(path))
  except OSError as e:  # gone since the os.stat above
    return Match(path, 0, records.MISSING_FILE, f"{type(e).__name__}: {e.strerror or e}")


def _scan(root: str, levels: Optional[int]):
  """(path, is_directory) of every entry under `root` ("" = the working directory),
  `levels` deep (None: all); links are listed, not followed."""
  stack = [(root, 1)]
  while stack:
    directory, level = stack.pop()
    try:
      with os.scandir(directory or ".") as it:
        entries = list(it)
    except (FileNotFoundError, NotADirectoryError):
      if directory != root:
        _LOG.warning("--input: %s vanished while it was listed", directory)
      continue
    except OSError as e:
      if directory == root:
        raise
      _LOG.warning("--input: cannot list %s (%s); what it holds is not read", directory,
                   e.strerror or e)
      continue
    for entry in entries:
      path = os.path.join(directory, entry.name) if directory else entry.name
      is_dir = entry.is_dir(follow_symlinks=False)
      yield path, is_dir
      if is_dir and (levels is None or level < levels):
        stack.append((path, level + 1))


def _match_local(pattern: str) -> List[Match]:
  paths = {pattern} if os.path.lexists(pattern) else set()
  if has_glob(pattern):
    regex = re.compile(translate(pattern))
    root = os.path.dirname(_GLOB.split(pattern, 1)[0])
    recursive = "**" in pattern
    levels = None if recursive else pattern[len(root):].lstrip("/").count("/") + 1
    for path, is_dir in _scan(root, levels):
      # Under `**` directories are the way to the files, not matches.
      if regex.match(path) and not (recursive and (is_dir or os.path.isdir(path))):
        paths.add(path)
  return [_local_match(p) for p in sorted(paths)]


def _match_remote(pattern: str) -> List[Match]:
  """Through Beam's FileSystems: every object under the pattern's fixed prefix, filtered
  here (Beam's own filter skips names holding a backslash)."""
  if not has_glob(pattern):
    listed = FileSystems.match([pattern])[0].metadata_list
    regex = None
  else:
    prefix = _GLOB.split(pattern, 1)[0]
    listed = FileSystems.match([prefix + "**"])[0].metadata_list
    regex = re.compile(translate(pattern))
  out = []
  for m in listed:
    if m.path.endswith("/"):
      continue  # a folder placeholder object, like the directories a listing walks through
    if regex is None or m.path == pattern or regex.match(m.path):
      out.append(Match(m.path, m.size_in_bytes))
  return sorted(out, key=lambda m: m.path)


def bounded(fn: Callable, pattern: str, timeout_s: float):
  """fn() in a daemon thread (a listing stuck on the network cannot keep the job alive);
  a failure or a hang becomes an InputError naming the pattern."""
  box = {}

  def target():
    try:
      box["value"] = fn()
    except Exception as e:  # pylint: disable=broad-except
      box["error"] = e

  thread = threading.Thread(target=target, name="match-input", daemon=True)
  thread.start()
  thread.join(timeout_s)
  if thread.is_alive():
    raise InputError(f"listing --input pattern {pattern!r} took over {timeout_s:.0f} s; "
                     "check the path, the network and the credentials")
  if "error" in box:
    e = box["error"]
    raise InputError(f"cannot list --input pattern {pattern!r}: "
                     f"{type(e).__name__}: {str(e)[:500]}")
  return box["value"]


def match_pattern(pattern: str, timeout_s: float = MATCH_TIMEOUT_S) -> List[Match]:
  """Every path one pattern matches, sorted; a pattern ending in `/` is `DIR/*`."""
  if pattern.endswith("/"):
    pattern += "*"
  match = _match_remote if is_remote(pattern) else _match_local
  return bounded(lambda: match(pattern), pattern, timeout_s)


def _identity(path: str) -> str:
  """Two spellings of one file (./a, a link to it) have one identity."""
  return path if is_remote(path) else os.path.realpath(path)


@dataclasses.dataclass(frozen=True)
class InputFiles:
  """What --input matched: `matches` each path once (the first pattern's spelling) in
  pattern order; `by_pattern` every pattern's own matches; `duplicates` paths dropped
  because an earlier match names the same file."""
  matches: Tuple[Match, ...]
  by_pattern: Tuple[Tuple[str, Tuple[Match, ...]], ...]
  duplicates: int

  @property
  def paths(self) -> List[str]:
    return [m.path for m in self.matches]

  @property
  def total_bytes(self) -> int:
    return sum(m.size for m in self.matches if not m.reason)

  @property
  def problems(self) -> List[Match]:
    return [m for m in self.matches if m.reason]

  def counts(self) -> Dict[str, int]:
    """Every matched path: read, reported as not readable, or a duplicate read once."""
    problems = len(self.problems)
    return {"matched": len(self.matches) + self.duplicates,
            "read": len(self.matches) - problems, "not_read": problems,
            "duplicate": self.duplicates}


def find_inputs(patterns: Sequence[str], timeout_s: float = MATCH_TIMEOUT_S) -> InputFiles:
  """Matches every pattern once; a path matched again is kept once, at its first place."""
  seen, kept, by_pattern, duplicates = set(), [], [], 0
  for pattern in patterns:
    matches = tuple(match_pattern(pattern, timeout_s))
    by_pattern.append((pattern, matches))
    for m in matches:
      key = _identity(m.path)
      if key in seen:
        duplicates += 1
        continue
      seen.add(key)
      kept.append(m)
  return InputFiles(tuple(kept), tuple(by_pattern), duplicates)


def log_warnings(inputs: InputFiles) -> None:
  """Says once what the job will not read as given: duplicates, and paths it reports."""
  _LOG.info("--input: %(matched)d paths matched: %(read)d files to read, %(not_read)d "
            "reported as not readable, %(duplicate)d duplicates read once", inputs.counts())
  if inputs.duplicates:
    _LOG.warning("--input: %d matched paths name a file matched already (by several "
                 "patterns, or through a link) and are read once", inputs.duplicates)
  problems = inputs.problems
  if problems:
    first = problems[0]
    _LOG.warning("--input: %d matched paths are not readable files and are reported in "
                 "rejected/ (e.g. %s: %s, %s)", len(problems), first.path, first.reason,
                 first.detail)
