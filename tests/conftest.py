"""Shared pytest fixtures: tiny offline models, built once per test session."""
import os

# Set before transformers/huggingface_hub are imported: nothing may touch the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # avoids fork warnings in Beam tests

import pytest  # noqa: E402

from tests import tiny_models  # noqa: E402


@pytest.fixture(scope="session")
def tiny_causal_lm_dir(tmp_path_factory) -> str:
  return tiny_models.build_tiny_causal_lm(tmp_path_factory.mktemp("tiny_causal_lm"))


@pytest.fixture(scope="session")
def tiny_t5_dir(tmp_path_factory) -> str:
  return tiny_models.build_tiny_t5(tmp_path_factory.mktemp("tiny_t5"))


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> str:
  return tiny_models.build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))
