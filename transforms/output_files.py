"""File primitives for the outputs: listing, deleting and writing without following a
symbolic link (locally; object stores have no links), and atomic small writes."""
from __future__ import annotations

import json
import logging
import os
import uuid
from typing import List, Sequence, Tuple

from apache_beam.io.filesystems import FileSystems

_LOG = logging.getLogger(__name__)


def is_remote(path: str) -> bool:
  return "://" in path


def _walk_local(top: str) -> Tuple[List[str], List[str]]:
  """(files, links) under a local directory, never descending into a link."""
  files, links = [], []
  if os.path.islink(top):
    return [], [top]
  stack = [top]
  while stack:
    directory = stack.pop()
    try:
      entries = list(os.scandir(directory))
    except FileNotFoundError:
      continue
    for entry in entries:
      if entry.is_symlink():
        links.append(entry.path)
      elif entry.is_dir(follow_symlinks=False):
        stack.append(entry.path)
      else:
        files.append(entry.path)
  return sorted(files), sorted(links)


def list_files(directory: str) -> List[str]:
  """Every file under `directory` (recursively); [] when it does not exist. Locally,
  links are neither listed nor followed."""
  if not is_remote(directory):
    return _walk_local(directory)[0]
  try:
    found = FileSystems.match([FileSystems.join(directory, "**")])[0].metadata_list
  except Exception:  # pylint: disable=broad-except
    return []
  return sorted(m.path for m in found if not m.path.endswith("/"))


def links_under(output: str, names: Sequence[str]) -> List[str]:
  """The symbolic links at or under OUTPUT/name for each name (local outputs only)."""
  if is_remote(output):
    return []
  found = []
  for name in names:
    path = os.path.join(output, name)
    if os.path.islink(path):
      found.append(path)
    elif os.path.isdir(path):
      found.extend(_walk_local(path)[1])
  return found


def check_no_links(output: str, names: Sequence[str]) -> None:
  """Raises ValueError naming the first link where a run reads, writes or removes its
  own files: the job never follows a link out of --output, nor removes one."""
  if not is_remote(output) and os.path.islink(output.rstrip("/")) and not os.path.isdir(
      output):
    raise ValueError(f"--output {output} is a symbolic link to something that is not a "
                     "directory")
  links = links_under(output, names)
  if links:
    more = f" (and {len(links) - 1} more)" if len(links) > 1 else ""
    raise ValueError(
        f"{links[0]} is a symbolic link{more} where this job keeps its own files; the job "
        "never follows or removes links in --output: remove the link or choose another "
        "--output")


def _remove_local_file(path: str) -> None:
  try:
    os.unlink(path)
  except FileNotFoundError:
    pass


def delete_tree(directory: str) -> None:
  """Removes a directory this job created and the files under it. Locally it never
  follows a link: a link found there (which the job never makes) is left alone, with a
  warning, and so is the folder holding it."""
  if is_remote(directory):
    files = list_files(directory)
    if files:
      FileSystems.delete(files)
    return
  if not os.path.lexists(directory):
    return
  files, links = _walk_local(directory)
  for link in links:
    _LOG.warning("Left %s alone: a symbolic link where this job keeps its own files", link)
  for path in files:
    _remove_local_file(path)
  for root, dirs, _ in sorted(os.walk(directory, topdown=False, followlinks=False),
                              key=lambda w: -len(w[0])):
    try:
      os.rmdir(root)
    except OSError:  # Not empty (a link left alone) or already gone.
      pass


def write_bytes_atomic(path: str, data: bytes) -> None:
  """Writes under a temporary name, then renames: readers see the old file or the new.
  A failed write (a full disk) removes its temporary file."""
  tmp = f"{path}.tmp-{uuid.uuid4().hex}"
  try:
    with FileSystems.create(tmp) as f:
      f.write(data)
    FileSystems.rename([tmp], [path])
  except BaseException:
    try:
      if is_remote(tmp):
        if FileSystems.exists(tmp):
          FileSystems.delete([tmp])
      else:
        _remove_local_file(tmp)
    except Exception:  # pylint: disable=broad-except
      pass
    raise


def write_json_atomic(path: str, obj) -> None:
  write_bytes_atomic(path, json.dumps(obj, indent=2, sort_keys=True).encode("utf-8"))


def read_json(path: str):
  with FileSystems.open(path) as f:
    return json.loads(f.read().decode("utf-8"))
