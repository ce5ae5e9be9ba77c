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
  scores = []
  for p in found:
    if "/scores/" in p:
      with FileSystems.open(p) as f:
        scores += [json.loads(l) for l in f.read().decode().splitlines() if l.strip()]
  assert len(scores) == len(GOOD)
  with FileSystems.open(f"{root}/out/metrics.json") as f:
    assert json.loads(f.read())["counts"]["accounted"] is True

  # A second run into the same gs:// output is refused without --overwrite.
  with pytest.raises(select_data.UsageError, match="--overwrite"):
    select_data.run([f"--input={root}/in/*.jsonl", f"--output={root}/out",
                     f"--scorer_model={root}/models/tiny", "--device=cpu"],
                    test_pipeline=TestPipeline(runner="FnApiRunner"))


def test_pickle_only_model_on_gcs_is_refused(gcs_emulator):
  from models import loading
  with FileSystems.create(f"{gcs_emulator}/models/pickled/pytorch_model.bin") as f:
    f.write(b"pickle")
  with FileSystems.create(f"{gcs_emulator}/models/pickled/config.json") as f:
    f.write(b"{}")
  with pytest.raises(loading.ModelNotFoundError, match="pickle checkpoints are not"):
    loading.resolve_model(f"{gcs_emulator}/models/pickled", "scorer")
