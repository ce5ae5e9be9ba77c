"""A real GCS API on localhost (gcp-storage-emulator) for tests: Beam's gs:// filesystem
talks to it through STORAGE_EMULATOR_HOST."""
import contextlib
import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def running_emulator(bucket: str):
  """Starts the emulator with `bucket`, points STORAGE_EMULATOR_HOST at it, yields
  gs://bucket, and stops it (restoring the variable) afterwards."""
  port = free_port()
  proc = subprocess.Popen(
      [sys.executable, "-m", "gcp_storage_emulator", "start", "--host=127.0.0.1",
       f"--port={port}", "--in-memory", f"--default-bucket={bucket}"],
      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  old = os.environ.get("STORAGE_EMULATOR_HOST")
  os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
  try:
    deadline = time.time() + 30
    while True:  # Wait until it accepts connections.
      try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        break
      except OSError:
        if time.time() > deadline or proc.poll() is not None:
          raise RuntimeError("the GCS emulator did not start")
        time.sleep(0.2)
    yield f"gs://{bucket}"
  finally:
    proc.terminate()
    proc.wait(timeout=10)
    if old is None:
      os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
      os.environ["STORAGE_EMULATOR_HOST"] = old
