"""Saved artifacts and model directories are opened before the run
(beam_pipelines/artifact_checks.py): a wrong kind, shape or embedding model, or a model
that needs code of its own, is one `error:` line and exit code 2, and neither --output nor
--cache is created."""
import json
import os
import pathlib
import shutil

import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from beam_pipelines import select_data
from models import loading
from tests.test_run_safety import _docs, _main_error
from transforms import kmeans, quality_head, sketch_io
from transforms.sketch_counts import Sketch, sketch_from_embeddings
from transforms.sketch_hashing import SketchParams

TINY_DIM = 32  # tests/tiny_models.py: the tiny BERT's hidden size


def _sketch(path, dim=TINY_DIM, counts=None):
  params = SketchParams(dim, rows=4, buckets=16, hashes_per_row=2, bucket_width=1.0, seed=1)
  sketch = sketch_from_embeddings([np.eye(3, dim, dtype=np.float32)], params)
  if counts is not None:
    sketch = Sketch(params, counts, sketch.n)
  sketch_io.save_sketch(sketch, path)


def _head(path, model, weights):
  quality_head.save_head(quality_head.QualityHead(
      weights=np.asarray(weights, np.float64), bias=0.0, l2=0.1, n_train=3,
      embedding_model=model, teacher="t"), path)


def _artifacts(d, bert):
  """{name: path} of broken artifacts, written once per test."""
  paths = {n: str(d / f"{n}.npz") for n in ("not_npz", "truncated", "other_npz", "sketch7",
                                   "sketch_counts", "head7", "head_nan", "clusters7",
                                   "clusters_1d")}
  open(paths["not_npz"], "wb").write(b"\x80 a pickle, or anything but a zip")
  _head(str(d / "good_head"), bert, np.ones(TINY_DIM))
  open(paths["truncated"], "wb").write(open(d / "good_head", "rb").read()[:100])
  np.savez(paths["other_npz"], foo=np.zeros(3))
  _sketch(paths["sketch7"], dim=7)
  _sketch(paths["sketch_counts"], counts=np.zeros((2, 3), np.int32))
  _head(paths["head7"], bert, np.ones(7))
  _head(paths["head_nan"], bert, np.full(TINY_DIM, np.nan))
  kmeans.save_clusters(np.ones((3, 7), np.float32), {"embedding_model": bert},
                       paths["clusters7"])
  kmeans.save_clusters(np.ones(TINY_DIM, np.float32), {"embedding_model": bert},
                       paths["clusters_1d"])
  return paths


@pytest.mark.parametrize("sampler,option,artifact,message", [
    ("density", "sketch_from", "other_npz", "is not a sketch.npz: it has no counts, n, params"),
    ("density", "sketch_from", "not_npz", "not an .npz file"),
    ("density", "sketch_from", "sketch7", "holds a sketch of 7-dimensional embeddings"),
    ("density", "sketch_from", "sketch_counts", "its counts are int32 [2, 3]"),
    ("quality_head", "quality_head", "not_npz", "is not a quality_head.npz: not an .npz"),
    ("quality_head", "quality_head", "truncated", "is not a quality_head.npz"),
    ("quality_head", "quality_head", "other_npz", "it has no weights, meta"),
    ("quality_head", "quality_head", "head7", "holds a head of 7-dimensional embeddings"),
    ("quality_head", "quality_head", "head_nan", "not finite"),
    ("balanced", "clusters_from", "clusters7", "holds centroids of 7-dimensional"),
    ("balanced", "clusters_from", "clusters_1d", "not [k, d] floats"),
    ("balanced", "clusters_from", "not_npz", "is not a clusters.npz: not an .npz"),
])
def test_a_wrong_artifact_is_one_line_and_writes_nothing(tmp_path, tiny_bert_dir, capsys,
                                                         sampler, option, artifact, message):
  _docs(str(tmp_path / "in"))
  path = _artifacts(tmp_path, tiny_bert_dir)[artifact]
  out, cache = tmp_path / "out", tmp_path / "cache"
  err = _main_error([f"--input={tmp_path}/in/*.jsonl", f"--output={out}", f"--cache={cache}",
                     f"--sampler={sampler}", f"--embedding_model={tiny_bert_dir}",
                     "--device=cpu", f"--{option}={path}"], capsys)
  assert f"--{option}" in err and message in err and path in err, err
  assert not out.exists() and not cache.exists()


def _remote_code_model(src, dst, marker, where="config"):
  """A copy of a tiny model that needs code of its own; importing that code would write
  `marker`."""
  shutil.copytree(src, dst)
  code = f"open({str(marker)!r}, 'w').write('ran')\n"
  for name in ("configuration_custom.py", "modeling_custom.py", "tokenization_custom.py"):
    (dst / name).write_text(code)
  name = "config.json" if where != "tokenizer" else "tokenizer_config.json"
  config = json.loads((dst / name).read_text())
  if where == "unknown_type":
    config["model_type"] = "custom_unknown"
  elif where == "tokenizer":
    config["auto_map"] = {"AutoTokenizer": ["tokenization_custom.CustomTokenizer", None]}
  else:
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig",
                          "AutoModel": "modeling_custom.CustomModel"}
  (dst / name).write_text(json.dumps(config))
  return str(dst)


@pytest.mark.parametrize("where,reason", [
    ("config", "its config.json maps classes to its own code"),
    ("unknown_type", "its model type 'custom_unknown' is not one this transformers knows"),
    ("tokenizer", "its tokenizer_config.json maps the tokenizer to its own code"),
])
def test_a_model_that_needs_its_own_code_is_refused_before_the_run(
    tmp_path, tiny_bert_dir, tiny_causal_lm_dir, capsys, where, reason):
  _docs(str(tmp_path / "in"))
  marker = tmp_path / "code_ran"
  embed = _remote_code_model(pathlib.Path(tiny_bert_dir), tmp_path / "embed", marker, where)
  scorer = _remote_code_model(pathlib.Path(tiny_causal_lm_dir), tmp_path / "scorer", marker,
                              where)
  base = [f"--input={tmp_path}/in/*.jsonl", f"--output={tmp_path}/out", "--device=cpu",
          f"--cache={tmp_path}/cache"]
  for extra, option in ((["--sampler=density", f"--embedding_model={embed}"],
                         "--embedding_model"),
                        ([f"--scorer_model={scorer}", "--max_tokens=128"], "--scorer_model")):
    err = _main_error(base + extra, capsys)
    assert f"error: {option}:" in err and reason in err and "--trust_remote_code" in err
    assert (embed if option == "--embedding_model" else scorer) in err
  assert not marker.exists()  # its code never ran
  assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
  # A worker loading it (a runner that skips the local checks) refuses it the same way.
  from transformers import AutoModel
  with pytest.raises(loading.ModelLoadError, match="needs code of its own"):
    loading.load_pretrained(embed, "embedding", "cpu", (AutoModel, AutoModel))
  assert not marker.exists()


def test_a_garbage_tokenizer_is_one_short_line(tmp_path, capsys):
  _docs(str(tmp_path / "in"))
  garbage = tmp_path / "garbage.model"
  garbage.write_bytes(b"\x0a\x03abc not a sentencepiece model")
  err = _main_error([f"--input={tmp_path}/in/*.jsonl", f"--output={tmp_path}/out",
                     "--sampler=random", f"--tokenizer={garbage}"], capsys)
  assert "is not a SentencePiece model file" in err
  assert "function_node" not in err and "[Op:" not in err  # TensorFlow's internals
  assert not (tmp_path / "out").exists()


def test_a_refused_sketch_leaves_nothing_and_the_corrected_rerun_runs(tmp_path,
                                                                       tiny_bert_dir):
  """The finding: a wrong --sketch_from failed inside the pipeline, after the cache's
  fingerprints were written into --output, so the corrected rerun was refused as "not
  empty"."""
  _docs(str(tmp_path / "in"))
  np.savez(str(tmp_path / "wrong.npz"), centroids=np.ones((2, TINY_DIM)))
  out = str(tmp_path / "out")
  argv = [f"--input={tmp_path}/in/*.jsonl", f"--output={out}", "--sampler=density",
          f"--embedding_model={tiny_bert_dir}", "--device=cpu", "--report=false",
          "--sketch_rows=8", "--sketch_buckets=64", "--keep_count=3"]
  with pytest.raises(select_data.UsageError, match="is not a sketch.npz"):
    select_data.run(argv + [f"--sketch_from={tmp_path}/wrong.npz"],
                    test_pipeline=TestPipeline(runner="FnApiRunner"))
  assert not os.path.exists(out)
  first = select_data.run(argv, test_pipeline=TestPipeline(runner="FnApiRunner"))
  assert first["counts"]["selected"] == 3
  # The sketch this run saved is a valid --sketch_from for the same embedding model.
  again = select_data.run(
      [a.replace(out, out + "2") for a in argv] + [f"--sketch_from={out}/sketch.npz"],
      test_pipeline=TestPipeline(runner="FnApiRunner"))
  assert again["counts"]["selected"] == 3


def test_an_offline_hub_id_not_in_the_cache_is_one_line_before_the_run(tmp_path, capsys,
                                                                       monkeypatch):
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
  _docs(str(tmp_path / "in"))
  out = tmp_path / "out"
  err = _main_error([f"--input={tmp_path}/in/*.jsonl", f"--output={out}", "--id_field=id",
                     "--scorer_model=someorg/some-model", "--keep_count=2"], capsys)
  assert "someorg/some-model is a Hugging Face Hub id" in err and "local directory" in err
  assert not out.exists()


def test_dataflow_without_its_options_is_one_line(tmp_path, capsys):
  _docs(str(tmp_path / "in"))
  out = tmp_path / "out"
  err = _main_error([f"--input={tmp_path}/in/*.jsonl", f"--output={out}", "--id_field=id",
                     "--sampler=random", "--keep_count=2", "--runner=DataflowRunner"], capsys)
  assert "--runner=DataflowRunner" in err and "project" in err and "temp_location" in err
  assert not out.exists()
