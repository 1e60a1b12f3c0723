"""Where general-ability data comes from: a given folder, $REVIVE_GLUE_DIR, GLUE's validation splits via
Hugging Face ``datasets`` (a fake module here: tests never go online), or one line saying it is skipped."""

from __future__ import annotations

import importlib.machinery
import logging
import sys
import types

import pytest

from revive_plugin.evaluation import general as G


def test_given_folder_then_env(tmp_path, monkeypatch, glue_dir):
    monkeypatch.setenv("REVIVE_GLUE_DIR", str(glue_dir))
    assert G.resolve_glue_dir(tmp_path)[0] == tmp_path  # the flag wins over the environment
    assert G.resolve_glue_dir(None)[0] == glue_dir
    with pytest.raises(FileNotFoundError, match="nope"):
        G.resolve_glue_dir(tmp_path / "nope")


def test_offline_without_folder_is_one_line_saying_how(tmp_path, monkeypatch):
    monkeypatch.delenv("REVIVE_GLUE_DIR", raising=False)
    path, note = G.resolve_glue_dir(None, ("sst2",), cache_dir=tmp_path)  # conftest sets HF_*_OFFLINE
    assert path is None and "\n" not in note
    assert "skipped" in note and "--glue-dir" in note and "REVIVE_GLUE_DIR" in note and "datasets" in note
    path, note = G.resolve_glue_dir(None, ("sst2", "mmlu"), cache_dir=tmp_path)
    assert path is None and "mmlu not in GLUE" in note


def test_offline_variables_short_cut_the_probe(monkeypatch):
    monkeypatch.setattr(G.socket, "create_connection", lambda *a, **k: pytest.fail("probed the network"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert G._hf_online() is False


def _fake_datasets(calls):
    rows = {"sst2": [{"sentence": f"s{i}", "label": i % 2, "idx": i} for i in range(6)],
            "rte": [{"sentence1": f"a{i}", "sentence2": f"b{i}", "label": i % 2, "idx": i} for i in range(6)]}

    def load_dataset(repo, task, split):
        calls.append((repo, task, split))
        return rows[task]

    return _module(load_dataset)


def _module(load_dataset) -> types.ModuleType:
    mod = types.ModuleType("datasets")
    mod.__spec__ = importlib.machinery.ModuleSpec("datasets", None)
    mod.load_dataset = load_dataset
    return mod


def test_hf_validation_splits_exported_once_then_used_offline(tmp_path, monkeypatch):
    monkeypatch.delenv("REVIVE_GLUE_DIR", raising=False)
    calls = []
    monkeypatch.setitem(sys.modules, "datasets", _fake_datasets(calls))
    monkeypatch.setattr(G, "_hf_online", lambda: True)
    path, note = G.resolve_glue_dir(None, ("sst2", "rte"), cache_dir=tmp_path)
    assert path == tmp_path and "Hugging Face" in note
    assert calls == [("nyu-mll/glue", "sst2", "validation"), ("nyu-mll/glue", "rte", "validation")]
    rows = G.load_glue_task("rte", path)
    assert rows[1] == {"sentence1": "a1", "sentence2": "b1", "label": 1, "idx": 1}
    monkeypatch.setattr(G, "_hf_online", lambda: False)
    assert G.resolve_glue_dir(None, ("sst2", "rte"), cache_dir=tmp_path)[0] == tmp_path and len(calls) == 2


def test_hub_failure_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.delenv("REVIVE_GLUE_DIR", raising=False)

    def broken(*a, **k):
        raise ConnectionError("hub unreachable")

    monkeypatch.setitem(sys.modules, "datasets", _module(broken))
    monkeypatch.setattr(G, "_hf_online", lambda: True)
    path, note = G.resolve_glue_dir(None, ("cola",), cache_dir=tmp_path)
    assert path is None and "ConnectionError: hub unreachable" in note
    assert list(tmp_path.glob("*.jsonl")) == []


def test_bench_evaluator_logs_the_skip_once(tmp_path, monkeypatch, caplog):
    from revive_plugin.bench.components import GeneralEvaluator
    from revive_plugin.bench.config import preset_config

    monkeypatch.delenv("REVIVE_GLUE_DIR", raising=False)
    monkeypatch.setenv("REVIVE_CACHE_DIR", str(tmp_path))
    cfg = preset_config("smoke", ppl_texts=0, probe_n=0)
    with caplog.at_level(logging.WARNING):
        ev = GeneralEvaluator(cfg, None, None)
    assert ev.glue_dir is None and ev.evaluate(None, None) == {}
    (rec,) = [r for r in caplog.records if "GLUE" in r.getMessage()]
    assert "skipped" in rec.getMessage() and "--glue-dir" in rec.getMessage()
