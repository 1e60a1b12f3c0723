"""Shared fixtures: the bundled real model (loaded once), a tiny random Llama, the GLUE folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Basis caches and fact sets go to a per-session folder; converted models stay shared."""
    old = os.environ.get("REVIVE_CACHE_DIR")
    models = os.environ.get("REVIVE_MODEL_CACHE")
    if models is None:
        from revive_plugin.cache import default_cache_dir

        os.environ["REVIVE_MODEL_CACHE"] = str(default_cache_dir() / "models")
    os.environ["REVIVE_CACHE_DIR"] = str(tmp_path_factory.mktemp("revive-cache"))
    yield
    if old is None:
        os.environ.pop("REVIVE_CACHE_DIR", None)
    else:
        os.environ["REVIVE_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def _bundled():
    from revive_plugin.models import load_model

    model, tok = load_model("smollm2-135m", cache_dir=os.environ["REVIVE_MODEL_CACHE"])
    pristine = {n: p.detach().clone() for n, p in model.named_parameters()}
    return model, tok, pristine


@pytest.fixture
def bundled_model(_bundled):
    """(model, tokenizer) of SmolLM2-135M in float32 on CPU; all weights restored after the test."""
    model, tok, pristine = _bundled
    yield model, tok
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(pristine[n])


@pytest.fixture(scope="session")
def bundled_tokenizer(_bundled):
    return _bundled[1]


@pytest.fixture
def small_model(bundled_tokenizer):
    """A tiny randomly initialised Llama (4 layers, hidden 64) with the bundled tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(bundled_tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
    )
    model = LlamaForCausalLM(config).eval()
    model.requires_grad_(False)
    return model, bundled_tokenizer


@pytest.fixture(scope="session")
def glue_dir():
    path = Path(os.environ.get("REVIVE_GLUE_DIR", REPO.parent / "shared" / "data" / "glue-subsets"))
    if not path.is_dir():
        pytest.skip(f"GLUE-style subsets not found at {path} (set REVIVE_GLUE_DIR)")
    return path
