"""The whole job against a real GCS API served on localhost (gcp-storage-emulator):
gs:// input, gs:// output and a model stored in the bucket."""
import json
import os

import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.testing.test_pipeline import TestPipeline

from beam_pipelines import select_data
from tests.gcs_emulator import running_emulator
from tests.test_select_data import GOOD, read_selected

BUCKET = "test-bucket"


@pytest.fixture(scope="module")
def gcs_emulator():
  with running_emulator(BUCKET) as root:
    yield root


def _upload(local_path, uri):
  with open(local_path, "rb") as src, FileSystems.create(uri) as dst:
    dst.write(src.read())


def test_job_reads_writes_and_loads_model_from_gcs(gcs_emulator, tiny_causal_lm_dir, tmp_path):
  root = gcs_emulator
  lines = [json.dumps({"id": f"d{i}", "text": t}) for i, t in enumerate(GOOD)] + ["{bad"]
  with FileSystems.create(f"{root}/in/docs.jsonl") as f:
    f.write(("\n".join(lines) + "\n").encode())
  for name in os.listdir(tiny_causal_lm_dir):
    _upload(os.path.join(tiny_causal_lm_dir, name), f"{root}/models/tiny/{name}")
  # A pickle checkpoint next to the safe weights is never copied.
  with FileSystems.create(f"{root}/models/tiny/pytorch_model.bin") as f:
    f.write(b"not to be loaded")

  metrics = select_data.run(
      [f"--input={root}/in/*.jsonl", f"--output={root}/out",
       f"--scorer_model={root}/models/tiny", "--id_field=id", "--keep_count=5",
       "--max_tokens=128", "--device=cpu"],
      test_pipeline=TestPipeline(runner="FnApiRunner"))
  assert metrics["counts"]["selected"] == 5 and metrics["counts"]["rejected"] == 1

  # Read the outputs back from the emulator.
  found = sorted(m.path for m in FileSystems.match([f"{root}/out/**"])[0].metadata_list)
  selected = [p for p in found if "/selected/" in p]
  local = tmp_path / "copy" / "selected"
  local.mkdir(parents=True)
  for p in selected:
    with FileSystems.open(p) as src:
      (local / p.rsplit("/", 1)[1]).write_bytes(src.read())
  ranked = read_selected(str(tmp_path / "copy"))
  assert [e["rank"] for e in ranked] == list(range(5))
  scores = _scores(found)
  assert len(scores) == len(GOOD)
  with FileSystems.open(f"{root}/out/metrics.json") as f:
    assert json.loads(f.read())["counts"]["accounted"] is True
  # The score cache went to gs://.../out/cache.
  assert metrics["cache"]["dir"] == f"{root}/out/cache"
  assert any(p.startswith(f"{root}/out/cache/ask_llm/") and p.endswith(".parquet")
             for p in found)

  # A second run into the same gs:// output is refused without --resume or --overwrite.
  with pytest.raises(select_data.UsageError, match="--resume.*--overwrite"):
    select_data.run([f"--input={root}/in/*.jsonl", f"--output={root}/out",
                     f"--scorer_model={root}/models/tiny", "--device=cpu"],
                    test_pipeline=TestPipeline(runner="FnApiRunner"))

  # Reselect from the gs:// cache into a new output: no model runs, nested top-k.
  again = select_data.run(
      [f"--input={root}/in/*.jsonl", f"--output={root}/out3",
       f"--cache={root}/out/cache", f"--scorer_model={root}/models/tiny", "--id_field=id",
       "--keep_count=3", "--max_tokens=128", "--device=cpu"],
      test_pipeline=TestPipeline(runner="FnApiRunner"))
  stage = again["cache"]["stages"]["ask_llm"]
  assert (stage["inferred"], stage["model_loads"], stage["from_cache"]) == (0, 0, len(GOOD))
  found3 = [m.path for m in FileSystems.match([f"{root}/out3/**"])[0].metadata_list]
  top3 = sorted((r["rank"], r["id"], r["ask_llm_score"]) for r in _scores(found3)
                if r["selected"])
  assert top3 == sorted((r["rank"], r["id"], r["ask_llm_score"]) for r in scores
                        if r["selected"])[:3]


def _scores(paths):
  """scores/ rows from gs:// (Parquet: the default for gs:// outputs)."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  rows = []
  for p in paths:
    if "/scores/" in p:
      assert p.endswith(".parquet"), p
      with FileSystems.open(p) as f:
        rows += pq.read_table(pa.BufferReader(f.read())).to_pylist()
  return rows


def test_pickle_only_model_on_gcs_is_refused(gcs_emulator):
  from models import loading
  with FileSystems.create(f"{gcs_emulator}/models/pickled/pytorch_model.bin") as f:
    f.write(b"pickle")
  with FileSystems.create(f"{gcs_emulator}/models/pickled/config.json") as f:
    f.write(b"{}")
  with pytest.raises(loading.ModelNotFoundError, match="pickle checkpoints are not"):
    loading.resolve_model(f"{gcs_emulator}/models/pickled", "scorer")
