"""Shared fixtures: the bundled real model (loaded once), a tiny random Llama, a tiny GLUE folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch



@pytest.fixture(scope="session", autouse=True)
def _offline_hub():
    """Tests never reach the Hugging Face hub (GLUE data included)."""
    saved = {v: os.environ.get(v) for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")}
    os.environ.update({v: "1" for v in saved})
    yield
    for v, old in saved.items():
        if old is None:
            os.environ.pop(v, None)
        else:
            os.environ[v] = old


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
    from tiny_edits import tiny_llama

    model = tiny_llama(len(bundled_tokenizer), 4, intermediate_size=128, hidden_size=64, max_position_embeddings=256)
    return model, bundled_tokenizer


def _glue_rows(task: str, i: int) -> dict:
    """Row ``i`` of a tiny GLUE-style task in the files' schema, labels cycling through every class."""
    a, b = f"the film number {i} was fine", f"a sentence about item {i}"
    if task in ("sst2", "cola"):
        return {"sentence": a, "label": i % 2}
    if task == "sentiment_analysis":
        return {"sentence": a, "label": str(i % 2)}
    if task in ("mrpc", "rte"):
        return {"sentence1": a, "sentence2": b, "label": i % 2}
    if task == "nli":
        return {"sentence1": a, "sentence2": b, "label": ("entailment", "not_entailment")[i % 2]}
    return {"question": f"which option is {i % 4}?", "choices": ["zero", "one", "two", "three"], "answer": i % 4}


@pytest.fixture(scope="session")
def glue_dir(tmp_path_factory):
    """A folder of tiny GLUE-style subsets (12 rows per task) written here, so no test needs outside data."""
    from revive_plugin.evaluation.general import GLUE_TASKS

    path = tmp_path_factory.mktemp("glue")
    for task in GLUE_TASKS:
        rows = [_glue_rows(task, i) for i in range(12)]
        (path / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def easyedit_src() -> str:
    """The EasyEdit source checkout named by ``EASYEDIT_SRC``; tests that drive EasyEdit main skip without one."""
    src = os.environ.get("EASYEDIT_SRC")
    if not src:
        pytest.skip("EASYEDIT_SRC is not set (path of an EasyEdit source checkout): EasyEdit-main test skipped")
    if not (Path(src) / "easyeditor" / "__init__.py").is_file():
        pytest.skip(f"EASYEDIT_SRC={src} has no easyeditor/ package: EasyEdit-main test skipped")
    return src
