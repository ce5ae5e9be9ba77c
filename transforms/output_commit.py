"""The output directory as a transaction: staging, an all-or-nothing commit, recovery.

A run writes everything under OUTPUT/_temporary/RUN_ID/ and touches the outputs only in
commit(), the Hadoop/Spark output-committer protocol:

1. The staged run is complete (metrics.json included).
2. A journal (RUN_ID/_COMMIT.json) is written atomically: the previous run's files to
   move aside and the new files to move in. This is the commit point: from here on the
   commit is carried forward, by this process or, after a kill, by the next run.
3. The previous `_SUCCESS`, then the previous outputs are moved aside (into
   RUN_ID/_previous/); the journal is marked `moving`; the new files are moved in
   (metrics.json last) and `_SUCCESS` is written; the staging directory is removed.

Every step is a rename checked for existence first, so replaying the journal is
idempotent. A step that fails rolls the commit back (new files out, previous ones back,
their `_SUCCESS` last): `--output` then holds the whole previous run again. A reader
never takes a mix for a finished run: `_SUCCESS` is absent while files move.

Locally nothing here follows a symbolic link (output_files walks with lstat); the entry
point refuses a link where the job keeps its files before the run (check_no_links).
"""
from __future__ import annotations

import logging
import os
import re
import time
import uuid
from typing import Any, Dict, List, Optional, Sequence

from apache_beam.io.filesystems import FileSystems

from transforms.output_files import (delete_tree, is_remote, list_files, read_json,
                                     write_json_atomic)

_LOG = logging.getLogger(__name__)

STAGING_ROOT = "_temporary"
SUCCESS_FILE = "_SUCCESS"
METRICS_FILE = "metrics.json"
JOURNAL_FILE = "_COMMIT.json"
PREVIOUS_DIR = "_previous"
# Run ids (new_run_id) are the only staging folders a run ever removes.
_RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{8}$")


class CommitError(RuntimeError):
  """A commit that could not complete; the message says what state --output is in."""


def new_run_id() -> str:
  return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:8]


def is_run_id(name: str) -> bool:
  return bool(_RUN_ID.match(name))


def staging_dir(output: str, run_id: str) -> str:
  return FileSystems.join(output, STAGING_ROOT, run_id)


def _exists(path: str) -> bool:
  return FileSystems.exists(path) if is_remote(path) else os.path.lexists(path)


def _move(src: str, dst: str) -> None:
  if not is_remote(dst):
    os.makedirs(os.path.dirname(dst), exist_ok=True)  # A local rename needs the parent.
    os.replace(src, dst)
    return
  FileSystems.rename([src], [dst])


def _relative(path: str, directory: str) -> str:
  return path[len(directory.rstrip("/")) + 1:]


def _previous_outputs(output: str, replaces: Sequence[str]) -> List[str]:
  """The files of the outputs this run replaces (relative to `output`)."""
  found = []
  for name in replaces:
    path = FileSystems.join(output, name)
    if is_remote(path):
      if FileSystems.exists(path):
        found.append(name)
      found.extend(_relative(p, output) for p in list_files(path))
    elif os.path.isfile(path) and not os.path.islink(path):
      found.append(name)
    elif os.path.isdir(path) and not os.path.islink(path):
      found.extend(_relative(p, output) for p in list_files(path))
  return sorted(set(found))


class Commit:
  """One run's commit: its journal, and the steps that carry it forward or back."""

  def __init__(self, output: str, staging: str):
    self.output, self.staging = output, staging
    self.run_id = staging.rstrip("/").rsplit("/", 1)[-1]
    self.journal_path = FileSystems.join(staging, JOURNAL_FILE)

  def _out(self, rel):
    return FileSystems.join(self.output, rel)

  def _staged(self, rel):
    return FileSystems.join(self.staging, rel)

  def _aside(self, rel):
    return FileSystems.join(self.staging, PREVIOUS_DIR, rel)

  def plan(self, replaces: Sequence[str]) -> Dict[str, Any]:
    """The journal: what moves aside (the previous run's files, `_SUCCESS` first) and
    what moves in (the staged files, metrics.json last)."""
    moves = [_relative(p, self.staging) for p in list_files(self.staging)]
    moves = [rel for rel in moves if rel != JOURNAL_FILE
             and not rel.startswith(PREVIOUS_DIR + "/") and ".tmp-" not in rel]
    moves.sort(key=lambda rel: (rel == METRICS_FILE, rel))
    aside = _previous_outputs(self.output, replaces)
    if _exists(self._out(SUCCESS_FILE)):
      aside.insert(0, SUCCESS_FILE)
    return {"run_id": self.run_id, "phase": "aside", "aside": aside, "moves": moves}

  def write_journal(self, journal: Dict[str, Any]) -> None:
    write_json_atomic(self.journal_path, journal)

  def forward(self, journal: Dict[str, Any], step=None) -> None:
    """Carries the commit forward from wherever it stopped. `step` (tests) is called
    before each step with its name."""
    step = step or (lambda name: None)
    if journal["phase"] == "aside":
      for rel in journal["aside"]:
        if _exists(self._out(rel)):
          step(f"aside:{rel}")
          _move(self._out(rel), self._aside(rel))
      journal = dict(journal, phase="moving")
      step("journal:moving")
      self.write_journal(journal)
    for rel in journal["moves"]:
      if _exists(self._staged(rel)):
        step(f"move:{rel}")
        _move(self._staged(rel), self._out(rel))
    step("success")
    write_json_atomic(self._out(SUCCESS_FILE), {
        "run_id": self.run_id, "files": len(journal["moves"]),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    step("cleanup")
    discard_staging(self.output, self.staging)

  def backward(self, journal: Dict[str, Any], step=None) -> None:
    """Rolls the commit back: the new files out, the previous ones in, their
    `_SUCCESS` last; then the staging directory (the new run) is removed."""
    step = step or (lambda name: None)
    if journal["phase"] != "rolling_back":
      moved_in = journal["phase"] == "moving"
      journal = dict(journal, phase="rolling_back", moved_in=moved_in)
      step("journal:rolling_back")
      self.write_journal(journal)
    if journal.get("moved_in"):
      success = self._out(SUCCESS_FILE)
      if _exists(success) and _success_run(success) == self.run_id:
        step("unsuccess")
        FileSystems.delete([success])
      for rel in journal["moves"]:
        if _exists(self._out(rel)) and not _exists(self._staged(rel)):
          step(f"unmove:{rel}")
          _move(self._out(rel), self._staged(rel))
    for rel in reversed(journal["aside"]):
      if _exists(self._aside(rel)):
        step(f"restore:{rel}")
        _move(self._aside(rel), self._out(rel))
    step("cleanup")
    discard_staging(self.output, self.staging)


def _success_run(path: str) -> Optional[str]:
  try:
    return read_json(path).get("run_id")
  except Exception:  # pylint: disable=broad-except
    return None


def commit(output: str, staging: str, metrics: Optional[Dict[str, Any]],
           replaces: Sequence[str],
           step=None) -> None:
  """Moves a finished run from `staging` into `output` as one transaction (see the
  module's docstring): the previous outputs among the top-level names in `replaces` are
  replaced whole. Raises CommitError, with --output holding the whole previous run,
  when a step fails. Safe to call again for the same staging (a retried bundle).
  `metrics` (metrics.json) is written into the staged run first unless it is None (the
  caller wrote it)."""
  transaction = Commit(output, staging)
  if _exists(transaction.journal_path):
    journal = read_json(transaction.journal_path)
  else:
    try:
      if metrics is not None:
        write_json_atomic(FileSystems.join(staging, METRICS_FILE), metrics)
      journal = transaction.plan(replaces)
      (step or (lambda name: None))("journal")
      transaction.write_journal(journal)
    except Exception as e:  # pylint: disable=broad-except
      discard_staging(output, staging)
      raise CommitError(f"could not stage the run's last files ({_one_line(e)}); "
                        f"{output} is as it was before the run") from e
  try:
    if journal["phase"] == "rolling_back":
      transaction.backward(journal, step)
      raise CommitError(f"the commit was rolled back; {output} is as it was before the run")
    transaction.forward(journal, step)
  except CommitError:
    raise
  except Exception as e:  # pylint: disable=broad-except
    _roll_back_after(transaction, e)


def _roll_back_after(transaction: Commit, error: BaseException) -> None:
  output = transaction.output
  try:
    transaction.backward(read_json(transaction.journal_path))
  except Exception as again:  # pylint: disable=broad-except
    raise CommitError(
        f"the commit failed ({_one_line(error)}) and so did rolling it back "
        f"({_one_line(again)}); {output} has no _SUCCESS. The next run on it with "
        "--resume or --overwrite finishes the roll-back") from error
  raise CommitError(f"the commit failed ({_one_line(error)}); it was rolled back and "
                    f"{output} holds the previous run as it was") from error


def recover(output: str) -> List[str]:
  """Finishes the commits that a killed run left part-way (the journals under the
  staging root): forward, or back when it was rolling back or forward fails. Returns a
  line per commit recovered. Call it only while holding the output's lock."""
  root = FileSystems.join(output, STAGING_ROOT)
  done = []
  for run_id in _staged_runs(output):
    transaction = Commit(output, FileSystems.join(root, run_id))
    if not _exists(transaction.journal_path):
      continue
    journal = read_json(transaction.journal_path)
    if journal["phase"] == "rolling_back":
      transaction.backward(journal)
      done.append(f"rolled back the interrupted commit of run {run_id}")
      continue
    try:
      transaction.forward(journal)
      done.append(f"completed the interrupted commit of run {run_id}")
    except Exception as e:  # pylint: disable=broad-except
      _LOG.warning("Completing the commit of run %s failed (%s); rolling it back", run_id,
                   _one_line(e))
      transaction.backward(read_json(transaction.journal_path))
      done.append(f"rolled back the interrupted commit of run {run_id}")
  return done


def _staged_runs(output: str) -> List[str]:
  """The run ids with a staging folder (other names there are not the job's)."""
  root = FileSystems.join(output, STAGING_ROOT)
  if is_remote(root):
    names = {_relative(p, root).split("/", 1)[0] for p in list_files(root)}
  else:
    try:
      names = {e.name for e in os.scandir(root)
               if e.is_dir(follow_symlinks=False) and not e.is_symlink()}
    except (FileNotFoundError, NotADirectoryError):
      names = set()
  return sorted(n for n in names if is_run_id(n))


def discard_staging(output: str, staging: str) -> None:
  """Removes a run's staging directory, and the staging root once nothing is left."""
  delete_tree(staging)
  root = FileSystems.join(output, STAGING_ROOT)
  if is_remote(root):
    return
  try:
    os.rmdir(root)
  except OSError:  # Another run's staging or a file that is not ours is still there.
    pass


def discard_dead_runs(output: str, keep: str) -> List[str]:
  """Removes the staging folders of earlier runs that ended without committing (their
  run ids; any other name there is left alone). Call it only while holding the lock."""
  removed = []
  for run_id in _staged_runs(output):
    if run_id != keep:
      discard_staging(output, FileSystems.join(output, STAGING_ROOT, run_id))
      removed.append(run_id)
  return removed


def _one_line(e: BaseException) -> str:
  text = " ".join(str(e).split()) or type(e).__name__
  return text[:300]
