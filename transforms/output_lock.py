"""One run holds an output directory: a lock file that names its holder.

OUTPUT/_LOCK holds a JSON record (run id, host, process, start time, last heartbeat).
Locally it is held with flock(2) for the process's life, so a holder that died (killed,
crashed, machine restarted) frees it by itself and the next run takes it over with a
warning. On gs:// it is an object created with the generation precondition 0 (it must
not exist), refreshed every HEARTBEAT_S with the precondition of its own generation; a
holder whose heartbeat is older than STALE_AFTER_S (or a dead process on this host) is
gone, and a takeover is again a write conditional on the stale generation, so of two
runs taking over only one wins.

A Flex Template launch hands the lock to the pipeline (it has no process to beat): the
record says so, it never goes stale by time, and the pipeline's last step releases it.
"""
from __future__ import annotations

import calendar
import json
import logging
import os
import socket
import threading
import time
from typing import Any, Dict, Optional

_LOG = logging.getLogger(__name__)

LOCK_FILE = "_LOCK"
HEARTBEAT_S = 30.0
STALE_AFTER_S = 600.0


class LockHeld(RuntimeError):
  """Another run holds the output; the message names it."""


def _now() -> str:
  return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _age_s(stamp: Optional[str]) -> float:
  try:
    return time.time() - calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
  except (TypeError, ValueError):
    return float("inf")


def holder_record(run_id: str, held_by: str = "process") -> Dict[str, Any]:
  now = _now()
  return {"run_id": run_id, "host": socket.gethostname(), "pid": os.getpid(),
          "started": now, "heartbeat": now, "held_by": held_by}


def describe(record: Optional[Dict[str, Any]]) -> str:
  if not record:
    return "a run that is starting (its lock is not written yet)"
  if record.get("held_by") == "pipeline":
    return (f"run {record.get('run_id')} (a pipeline launched from host "
            f"{record.get('host')} at {record.get('started')}, which releases it when it "
            "finishes)")
  return (f"run {record.get('run_id')} (host {record.get('host')}, process "
          f"{record.get('pid')}, started {record.get('started')}, last heartbeat "
          f"{record.get('heartbeat')})")


def _process_alive(pid) -> bool:
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, TypeError, ValueError):
    return True
  return True


def is_stale(record: Dict[str, Any]) -> bool:
  """Whether a lock's holder is gone (gs:// locks; local ones use flock)."""
  if record.get("held_by") == "pipeline":
    return False
  if record.get("host") == socket.gethostname() and not _process_alive(record.get("pid")):
    return True
  return _age_s(record.get("heartbeat")) > STALE_AFTER_S


def _refusal(output: str, record) -> LockHeld:
  hint = (f"if that job is no longer running, delete {output.rstrip('/')}/{LOCK_FILE}"
          if record and record.get("held_by") == "pipeline" else
          "wait for it to finish, or stop it")
  return LockHeld(f"--output {output} is in use by {describe(record)}; {hint}")


class OutputLock:
  """Holds OUTPUT/_LOCK for one run: acquire(), then release() (also on failure)."""

  def __init__(self, output: str, run_id: str):
    self.output, self.run_id = output, run_id
    self.path = output.rstrip("/") + "/" + LOCK_FILE
    self.record = holder_record(run_id)
    self._remote = "://" in output
    self._fd: Optional[int] = None
    self._generation: Optional[int] = None
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    self.lost = False
    self._handed = False

  # --- acquire / release -----------------------------------------------------------------
  def acquire(self) -> Optional[str]:
    """Takes the lock; returns a warning line when a dead holder's lock was taken over.
    Raises LockHeld when a live run holds it."""
    return self._acquire_remote() if self._remote else self._acquire_local()

  def start_heartbeat(self) -> None:
    self._thread = threading.Thread(target=self._beat, name="output-lock-heartbeat",
                                    daemon=True)
    self._thread.start()

  def hand_to_pipeline(self) -> None:
    """For a launch that does not wait: the lock stays until the pipeline releases it."""
    self._stop_heartbeat()
    self.record = dict(self.record, held_by="pipeline", heartbeat=_now())
    self._write(self.record)
    self._handed = True
    if self._fd is not None:
      os.close(self._fd)  # The record stays; the next local run may take it over.
      self._fd = None

  def release(self) -> None:
    self._stop_heartbeat()
    if self._handed:  # The pipeline releases it (release_for_pipeline).
      return
    try:
      if self._remote:
        if self._generation is not None:
          _blob(self.path).delete(if_generation_match=self._generation)
      elif self._fd is not None:
        if _same_file(self._fd, self.path):
          os.unlink(self.path)
    except Exception as e:  # pylint: disable=broad-except
      _LOG.warning("Could not remove the lock %s: %s", self.path, e)
    finally:
      if self._fd is not None:
        os.close(self._fd)
        self._fd = None
      self._generation = None

  def still_held(self) -> bool:
    """Whether this run still holds the lock (checked before the commit)."""
    if self.lost:
      return False
    if not self._remote:
      return self._fd is not None and _same_file(self._fd, self.path)
    blob = _current(self.path)
    return blob is not None and blob.generation == self._generation

  # --- local: flock ----------------------------------------------------------------------
  def _acquire_local(self) -> Optional[str]:
    import fcntl
    if os.path.islink(self.path):
      raise LockHeld(f"{self.path} is a symbolic link; the job never follows links in "
                     "--output: remove it")
    while True:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
      try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      except BlockingIOError:
        record = _parse(os.pread(fd, 1 << 16, 0))
        os.close(fd)
        raise _refusal(self.output, record) from None
      if not _same_file(fd, self.path):  # Its holder removed it as we opened it.
        os.close(fd)
        continue
      old = _parse(os.pread(fd, 1 << 16, 0))
      self._fd = fd
      self._write(self.record)
      if old:
        return (f"took over the lock of {describe(old)} on {self.output}: that process "
                "is gone")
      return None

  # --- gs://: generation preconditions ---------------------------------------------------
  def _acquire_remote(self) -> Optional[str]:
    from google.api_core import exceptions
    data = json.dumps(self.record).encode("utf-8")
    for _ in range(5):
      blob = _blob(self.path)
      try:
        blob.upload_from_string(data, if_generation_match=0)
        self._generation = blob.generation
        return None
      except exceptions.PreconditionFailed:
        pass
      current = _current(self.path)
      if current is None:
        continue  # Released meanwhile: try again.
      old = _parse(current.download_as_bytes())
      if not (old and is_stale(old)):
        raise _refusal(self.output, old)
      try:
        blob.upload_from_string(data, if_generation_match=current.generation)
      except exceptions.PreconditionFailed:
        continue  # Another run took it over first; look again.
      self._generation = blob.generation
      return (f"took over the lock of {describe(old)} on {self.output}: no heartbeat for "
              f"over {STALE_AFTER_S:.0f} s or its process is gone")
    raise LockHeld(f"--output {self.output}: could not take its lock {self.path} (it kept "
                   "changing); try again")

  # --- heartbeat -------------------------------------------------------------------------
  def _write(self, record: Dict[str, Any]) -> None:
    data = json.dumps(record).encode("utf-8")
    if self._remote:
      from google.api_core import exceptions
      blob = _blob(self.path)
      try:
        blob.upload_from_string(data, if_generation_match=self._generation)
      except exceptions.PreconditionFailed:
        self.lost = True
        _LOG.error("This run lost the lock on %s to another run; it will not commit",
                   self.output)
        return
      self._generation = blob.generation
    elif self._fd is not None:
      os.ftruncate(self._fd, 0)
      os.pwrite(self._fd, data, 0)

  def _beat(self) -> None:
    while not self._stop.wait(HEARTBEAT_S):
      try:
        self.record = dict(self.record, heartbeat=_now())
        self._write(self.record)
      except Exception as e:  # pylint: disable=broad-except
        _LOG.warning("Lock heartbeat on %s failed: %s", self.path, e)

  def _stop_heartbeat(self) -> None:
    self._stop.set()
    if self._thread is not None:
      self._thread.join(timeout=10)
      self._thread = None


def release_for_pipeline(output: str, run_id: str) -> None:
  """The pipeline's last step: removes the lock a launch handed over, if still its own."""
  path = output.rstrip("/") + "/" + LOCK_FILE
  try:
    if "://" in path:
      blob = _current(path)
      if blob is not None and (_parse(blob.download_as_bytes()) or {}).get("run_id") == run_id:
        _blob(path).delete(if_generation_match=blob.generation)
    elif os.path.isfile(path) and not os.path.islink(path):
      with open(path, "rb") as f:
        if (_parse(f.read()) or {}).get("run_id") == run_id:
          os.unlink(path)
  except Exception as e:  # pylint: disable=broad-except
    _LOG.warning("Could not remove the lock %s: %s", path, e)


def read_holder(output: str) -> Optional[Dict[str, Any]]:
  """The lock's record, or None when the output is not locked."""
  path = output.rstrip("/") + "/" + LOCK_FILE
  if "://" in path:
    blob = _current(path)
    return _parse(blob.download_as_bytes()) if blob is not None else None
  try:
    with open(path, "rb") as f:
      return _parse(f.read())
  except FileNotFoundError:
    return None


def _parse(data: bytes) -> Optional[Dict[str, Any]]:
  try:
    record = json.loads(data.decode("utf-8"))
  except (ValueError, UnicodeDecodeError):
    return None
  return record if isinstance(record, dict) else None


def _same_file(fd: int, path: str) -> bool:
  try:
    st, cur = os.fstat(fd), os.stat(path, follow_symlinks=False)
  except FileNotFoundError:
    return False
  return (st.st_ino, st.st_dev) == (cur.st_ino, cur.st_dev)


_CLIENT = None


def _client():
  global _CLIENT
  if _CLIENT is None:
    from apache_beam.io.gcp import gcsio
    _CLIENT = gcsio.GcsIO().client
  return _CLIENT


def _split(path: str):
  bucket, _, name = path[len("gs://"):].partition("/")
  return bucket, name


def _blob(path: str):
  bucket, name = _split(path)
  return _client().bucket(bucket).blob(name)


def _current(path: str):
  """The object as stored now (with its generation), or None."""
  bucket, name = _split(path)
  return _client().bucket(bucket).get_blob(name)
