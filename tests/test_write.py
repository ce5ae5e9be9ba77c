"""Staging and finalising a run (transforms/write.py)."""
import json
import os

import pytest

from transforms import write as write_lib


def _listing(out):
  return sorted(os.path.relpath(os.path.join(d, f), out)
                for d, _, files in os.walk(out) for f in files)


def test_finalize_output_resumes_after_a_crash_part_way(tmp_path):
  out = tmp_path / "out"
  (out / "selected").mkdir(parents=True)
  (out / "selected" / "old-0.tfrecord").write_text("old")
  (out / "metrics.json").write_text("{}")
  (out / "_SUCCESS").write_text("{}")
  (out / "mine.txt").write_text("user")
  staging = tmp_path / "out" / "_temporary" / "run1"
  (staging / "selected").mkdir(parents=True)
  (staging / "selected" / "new-0.tfrecord").write_text("new0")
  (staging / "selected" / "new-1.tfrecord").write_text("new1")
  (staging / "scores").mkdir()
  (staging / "scores" / "part-0.jsonl").write_text("{}")
  replaces = ("selected", "scores", "metrics.json")
  # A first attempt dies after fixing its manifest and moving one file.
  real_move = write_lib._move
  calls = []

  def dying_move(src, dst):
    if calls:
      raise OSError("worker lost")
    calls.append(src)
    real_move(src, dst)
  write_lib._move = dying_move
  try:
    with pytest.raises(OSError):
      write_lib.finalize_output(str(out), str(staging), {"counts": {"selected": 2}}, replaces)
  finally:
    write_lib._move = real_move
  assert not (out / "_SUCCESS").exists()  # not a finished run any more
  write_lib.finalize_output(str(out), str(staging), {"counts": {"selected": 2}}, replaces)
  assert _listing(str(out)) == ["_SUCCESS", "metrics.json", "mine.txt", "scores/part-0.jsonl",
                                "selected/new-0.tfrecord", "selected/new-1.tfrecord"]
  assert json.loads((out / "metrics.json").read_text()) == {"counts": {"selected": 2}}


