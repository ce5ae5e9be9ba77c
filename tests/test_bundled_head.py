"""The bundled quality head: shipped as package data, fitted reproducibly by
scripts/fit_quality_head.py, the default of the head samplers, and refused on embeddings
it was not fitted on."""
import glob
import json
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from beam_pipelines import select_data
from models import loading
from models.embeddings import EmbeddingConfig, load_embedder
from tests.test_select_data import read_jsonl
from transforms import quality_head as qh
from transforms.score_cache import round_embedding

from scripts import fit_quality_head

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

INFORMATIVE = (
    "Photosynthesis is the process by which green plants, algae and some bacteria turn "
    "light energy into chemical energy. In the chloroplasts, chlorophyll absorbs light, "
    "and the energy splits water molecules into oxygen, protons and electrons. The "
    "electrons drive the synthesis of ATP and NADPH, which the Calvin cycle then uses to "
    "fix carbon dioxide from the air into glucose. This is why plants need water, light "
    "and carbon dioxide to grow, and why they release oxygen into the atmosphere.")
MASH = "asdf jkl; qwer uiop zxcv asdf asdf jkjkjk lkjh gfds qwerty qwerty asdfgh " * 6
NAVIGATION = ("Home | About Us | Products | Services | Blog | Contact | Login | Sign up | "
              "Cart (0) | Privacy Policy | Terms of Use | Sitemap | Follow us on Facebook "
              "Twitter Instagram | Copyright 2024 All rights reserved")


@pytest.fixture(scope="module")
def bundled():
  return qh.load_head(loading.BUNDLED_HEAD)


def test_bundled_head_records_its_model_and_provenance(bundled):
  assert bundled.embedding_model == loading.model_name(loading.DEFAULT, "embedding")
  assert bundled.weights.shape == (384,) and np.isfinite(bundled.weights).all()
  p = bundled.provenance
  assert "Llama-3-70B" in bundled.teacher and p["dataset"]["documents"] == bundled.n_train
  assert len(p["dataset"]["sha256"]) == 64
  assert p["fitted_by"].startswith("scripts/fit_quality_head.py")
  cv = p["cross_validation"]
  assert cv["chosen"]["l2"] == bundled.l2
  assert cv["chosen"]["tokens"] == bundled.embedding_max_tokens == p["embedding_max_tokens"]
  assert 0.5 < cv["nested"]["auc_3plus_vs_0to1"] <= 1
  assert loading.bundled_head_settings()["embedding_max_tokens"] == bundled.embedding_max_tokens


def test_bundled_head_ranks_an_informative_paragraph_above_junk(bundled):
  embedder = load_embedder(EmbeddingConfig(max_tokens=bundled.embedding_max_tokens,
                                           device="cpu"))
  good, mash, nav = bundled.predict(round_embedding(embedder.embed([INFORMATIVE, MASH,
                                                                    NAVIGATION])))
  assert good > mash and good > nav, (good, mash, nav)


def test_the_built_package_carries_the_head_and_loads_it_outside_the_source_tree(tmp_path):
  """Dataflow workers install the package from setup.py: the head must be package data."""
  wheels = tmp_path / "wheels"
  subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                  "-q", "-w", str(wheels), ROOT], check=True, cwd=tmp_path)
  wheel = glob.glob(str(wheels / "*.whl"))[0]
  member = "models/" + loading.BUNDLED_HEAD_FILE.replace(os.sep, "/")
  with zipfile.ZipFile(wheel) as z:
    assert member in z.namelist()
    z.extractall(tmp_path / "site")
  # A fresh interpreter that imports the package from the unpacked wheel, not from here.
  code = ("import models, json; from transforms import quality_head as qh; "
          "h = qh.load_head('bundled'); "
          "print(json.dumps([models.__file__, h.embedding_model, h.weights.shape[0]]))")
  env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
  out = subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path, env=env,
                       capture_output=True, text=True).stdout
  where, model, dim = json.loads(out.strip().splitlines()[-1])
  assert where.startswith(str(tmp_path / "site")) and dim == 384
  assert model == loading.model_name(loading.DEFAULT, "embedding")


def _edu_corpus(path, n=48):
  topics = ["The heart pumps blood through arteries and veins to every organ.",
            "Volcanoes form where magma rises through cracks in the crust.",
            "Fractions describe parts of a whole, such as one half or three quarters."]
  junk = ["Buy now cheap deals click here best price free shipping",
          "Home | Contact | Login | Cart | Sitemap | Privacy"]
  with open(path, "w") as f:
    for i in range(n):
      good = i % 2 == 0
      text = (topics[i % 3] + f" Lesson {i}." if good else junk[i % 2] + f" {i}")
      f.write(json.dumps({"id": f"d{i:03d}", "text": text, "edu_score": (3 + i % 2) if good
                          else i % 2}) + "\n")


def test_fitting_script_is_deterministic(tmp_path):
  data = tmp_path / "edu.jsonl"
  _edu_corpus(data)
  args = ["--data", str(data), "--token_grid", "16,32", "--l2_grid", "0.1,1", "--folds", "3",
          "--bootstrap", "20"]
  fit_quality_head.main([*args, "--output", str(tmp_path / "a.npz")])
  fit_quality_head.main([*args, "--output", str(tmp_path / "b.npz")])
  a, b = (tmp_path / "a.npz").read_bytes(), (tmp_path / "b.npz").read_bytes()
  assert a == b
  head = qh.load_head(str(tmp_path / "a.npz"))
  assert head.embedding_max_tokens in (16, 32) and head.n_train == 48
  assert head.provenance["dataset"]["file"] == "edu.jsonl"


def _write(path, n=30):
  os.makedirs(path, exist_ok=True)
  with open(os.path.join(path, "d.jsonl"), "w") as f:
    for i in range(n):
      text = INFORMATIVE if i % 3 == 0 else (MASH if i % 3 == 1 else NAVIGATION)
      f.write(json.dumps({"id": f"d{i:03d}", "text": f"{text} {i}"}) + "\n")


def _run(tmp_path, name, *extra):
  out = str(tmp_path / name)
  metrics = select_data.run(
      [f"--input={tmp_path}/in/*.jsonl", f"--output={out}", "--id_field=id", "--device=cpu",
       "--keep_count=10", "--report=false", *extra],
      test_pipeline=TestPipeline(runner="FnApiRunner"))
  return out, metrics


def test_head_sampler_without_a_teacher_uses_the_bundled_head(tmp_path, bundled):
  _write(str(tmp_path / "in"))
  out, m = _run(tmp_path, "a", "--sampler=quality_head")
  scores = read_jsonl(os.path.join(out, "scores", "*.jsonl"))
  chosen = {s["id"] for s in scores if s["selected"]}
  assert chosen == {f"d{i:03d}" for i in range(0, 30, 3)}  # the informative ones
  assert m["options"]["quality_head"] == "bundled"
  assert m["options"]["embedding_max_tokens"] == bundled.embedding_max_tokens
  head = m["quality_head"]
  assert head["applied"] == "bundled" and head["cross_validated_fit"]["auc"] == (
      bundled.provenance["cross_validation"]["nested"]["auc_3plus_vs_0to1"])
  assert "ask_llm" not in m["models"]
  from beam_pipelines import report  # the report's section on the applied head
  section = report._quality_head(m)
  assert "bundled" in section and f"{head['cross_validated_fit']['auc']:.4f}" in section


@pytest.mark.parametrize("extra,message", [
    (["--sampler=quality_head", "--embedding_model={tiny}"], "bundled embedding model"),
    (["--sampler=quality_head_density", "--quality_head=bundled",
      "--embedding_model={tiny}"], "--teacher_fraction"),
    (["--sampler=quality_head", "--embedding_max_tokens=7"], "drop --embedding_max_tokens=7"),
])
def test_bundled_head_refuses_other_embeddings(tmp_path, tiny_bert_dir, extra, message):
  _write(str(tmp_path / "in"), n=3)
  extra = [e.format(tiny=tiny_bert_dir) for e in extra]
  with pytest.raises(select_data.UsageError, match=message):
    _run(tmp_path, "x", *extra)


def test_a_saved_head_refuses_another_token_budget(tmp_path, tiny_bert_dir):
  head = qh.QualityHead(weights=np.zeros(32), bias=0.0, l2=0.1, n_train=3,
                        embedding_model=tiny_bert_dir, teacher="t", embedding_max_tokens=64)
  qh.save_head(head, str(tmp_path / "h.npz"))
  _write(str(tmp_path / "in"), n=3)
  with pytest.raises(select_data.UsageError, match="pass --embedding_max_tokens=64"):
    _run(tmp_path, "x", "--sampler=quality_head", f"--quality_head={tmp_path}/h.npz",
         f"--embedding_model={tiny_bert_dir}")
