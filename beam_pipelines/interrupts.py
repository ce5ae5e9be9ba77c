"""SIGINT and SIGTERM: one line that says what state --output is in, never tracebacks.

The main process turns either signal into an exception that the entry point catches
(after removing its staging), except while the commit runs: the commit is short and is
let finish, then the signal is acted on. Local worker processes (Beam's
multi_processing mode) are started with SIGINT blocked, so that a Ctrl-C, which the
terminal sends to the whole process group, reaches only the main process; it stops them
when it exits.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading


class Interrupted(Exception):
  """The run was stopped by a signal; the message says what state --output is in and
  how to go on."""

  def __init__(self, line: str, signal_name: str = "SIGINT"):
    super().__init__(line)
    self.signal_name = signal_name

  @property
  def exit_code(self) -> int:
    return 128 + int(getattr(signal, self.signal_name, signal.SIGINT))


class SignalInterrupt(KeyboardInterrupt):
  """Raised in the main thread by the handler, for SIGINT and SIGTERM alike."""

  def __init__(self, signal_name: str):
    super().__init__(signal_name)
    # A runner may re-raise it with its step appended ("SIGINT [while running ...]").
    self.signal_name = str(signal_name).split()[0] if str(signal_name).strip() else "SIGINT"


_STATE = {"deferred": False, "pending": None, "received": None}


def received():
  """The signal that came during this run (None when none did): a runner may wrap the
  exception the handler raised in one of its own."""
  return _STATE["received"]


def signal_name(e: BaseException) -> str:
  """The signal's name: the one the handler saw, else the exception's."""
  return _STATE["received"] or getattr(e, "signal_name", "SIGINT")


def _on_signal(signum, frame):  # pylint: disable=unused-argument
  name = signal.Signals(signum).name
  _STATE["received"] = name
  if _STATE["deferred"]:
    _STATE["pending"] = name
    return
  # Before raising: the runner's own clean-up (closing its workers) runs first, and would
  # make them print their errors.
  silence_runner()
  raise SignalInterrupt(name)


@contextlib.contextmanager
def handled():
  """Installs the handlers (main thread) and restores the earlier ones after."""
  _STATE["received"] = None
  handlers = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
  try:
    yield
  finally:
    for sig, handler in handlers.items():
      signal.signal(sig, handler)


@contextlib.contextmanager
def deferred():
  """Holds SIGINT/SIGTERM back while the block runs (the commit); raises Interrupted
  after it when one came."""
  _STATE["deferred"], _STATE["pending"] = True, None
  try:
    yield
  finally:
    _STATE["deferred"] = False
  pending, _STATE["pending"] = _STATE["pending"], None
  if pending:
    raise Interrupted(f"interrupted by {pending} after the commit: the run finished and its "
                      "outputs are complete", pending)


class _SubprocessInOwnSession:
  """Beam's `subprocess` as its local job service sees it: the same module, except that
  Popen starts the worker in a session of its own, out of the terminal's process group."""

  def __init__(self, module):
    self._module = module

  def __getattr__(self, name):
    return getattr(self._module, name)

  def Popen(self, *args, **kwargs):  # pylint: disable=invalid-name
    kwargs.setdefault("start_new_session", True)
    return self._module.Popen(*args, **kwargs)


def workers_in_own_session() -> None:
  """Called before a local pipeline starts (not at import: --help imports no Beam)."""
  try:
    from apache_beam.runners.portability import local_job_service
  except ImportError:  # pragma: no cover - another Beam layout: workers just stay noisy
    return
  if not isinstance(local_job_service.subprocess, _SubprocessInOwnSession):
    local_job_service.subprocess = _SubprocessInOwnSession(local_job_service.subprocess)


def _descendants(pid: int):
  """This machine's processes below `pid` (Linux /proc; none elsewhere)."""
  children = {}
  try:
    names = os.listdir("/proc")
  except OSError:
    return []
  for name in names:
    if not name.isdigit():
      continue
    try:
      with open(f"/proc/{name}/stat", "rb") as f:
        ppid = int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
      continue
    children.setdefault(ppid, []).append(int(name))
  found, stack = [], [pid]
  while stack:
    for child in children.get(stack.pop(), []):
      found.append(child)
      stack.append(child)
  return found


def silence_runner() -> None:
  """On an interrupt, before cleaning up: the local worker processes are stopped at once
  (before they notice the runner going away and print their own errors), and the
  runner's threads may die without printing tracebacks."""
  for pid in _descendants(os.getpid()):
    try:
      os.kill(pid, signal.SIGKILL)
    except OSError:
      pass
  threading.excepthook = lambda args: None
  logging.getLogger("apache_beam").setLevel(logging.CRITICAL + 1)


def quiet_exit(line: str, code: int) -> None:
  """Prints `error: line` and exits at once: the worker processes are stopped and the
  runner's threads are not waited on (their shutdown would print tracebacks)."""
  silence_runner()
  logging.shutdown()
  sys.stdout.flush()
  print(f"error: {line}", file=sys.stderr)
  sys.stderr.flush()
  os._exit(code)
