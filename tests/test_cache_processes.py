"""Caches under real processes: a covariance pass killed with SIGKILL continues to the same statistics;
two processes on one fresh cache folder do each expensive step once and agree; read-only and full
folders give clear errors and leave no half-written file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from revive_plugin import _io
from revive_plugin.cache import BasisCache, read_safetensors_metadata
from revive_plugin.editing import covariance as cv

REPO = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "cache_workers.py"
sys.path.insert(0, str(WORKER.parent))
import cache_workers as W  # noqa: E402


def _env(**extra) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", **extra)
    env.pop("REVIVE_LOCK_TIMEOUT", None)
    return env


def _worker(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(WORKER), *map(str, args)], env=_env(), cwd=kw.get("cwd", REPO),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, f"worker failed ({proc.returncode}):\n{err[-3000:]}"
    return err


def _stats(folder: Path) -> dict:
    """layer -> (mom2 array, count) of the finished files under ``folder``."""
    out = {}
    for layer in W.LAYERS:
        path = cv.stats_path(folder, "org/tiny", layer, "float32", len(W.TEXTS))
        with np.load(path, allow_pickle=False) as data:
            out[layer] = (np.array(data["mom2.mom2"]), int(data["mom2.count"]))
    return out


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob("*") if p.name.endswith((".tmp", ".partial.safetensors")))


def test_killed_covariance_pass_resumes_to_identical_statistics(tmp_path):
    _finish(_worker("cov", tmp_path / "ref", 0, 0))  # uninterrupted, no progress files
    ref = _stats(tmp_path / "ref")

    folder = tmp_path / "cut"
    proc = _worker("cov", folder, 1, 0.02)  # a progress file after every batch, slow tokenizer
    deadline = time.monotonic() + 300
    done = 0
    while done < 3:
        assert proc.poll() is None, f"worker ended before it was killed: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "no progress file appeared"
        partial = list(folder.rglob("*.partial.safetensors"))
        if partial:
            try:
                done = int(read_safetensors_metadata(partial[0])["batches"])
            except (OSError, ValueError, KeyError):
                pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    (partial,) = folder.rglob("*.partial.safetensors")
    saved = int(read_safetensors_metadata(partial)["batches"])
    assert not any(p.suffix == ".npz" for p in folder.rglob("*")), "the pass finished before the kill"

    err = _finish(_worker("cov", folder, 0, 0))  # resume (progress saved only by time now)
    assert f"resuming the covariance pass after batch {saved} " in err
    got = _stats(folder)
    for layer in W.LAYERS:
        assert got[layer][1] == ref[layer][1]
        assert got[layer][0].dtype == ref[layer][0].dtype and np.array_equal(got[layer][0], ref[layer][0])
    assert _leftovers(folder) == []


def test_progress_file_of_another_pass_is_ignored(tmp_path, small_model):
    """A progress file whose key does not match (other corpus) is not used: the pass starts over."""
    model, tok = small_model
    layer = ["model.layers.1.mlp.down_proj"]
    texts = W.TEXTS[:40]
    ck = cv.PassCheckpoint(tmp_path / "p.partial.safetensors", "other-key", save_every_batches=1)
    ck.save({layer[0]: torch.ones(128, 128, dtype=torch.float64)}, 5, 1)
    fresh = cv.PassCheckpoint(tmp_path / "p.partial.safetensors", "this-key")
    assert fresh.load(layer) is None
    a = cv.collect_second_moments(model, tok, layer, texts, max_tokens=16, batch_tokens=64, progress=False,
                                  checkpoint=fresh)
    b = cv.collect_second_moments(model, tok, layer, texts, max_tokens=16, batch_tokens=64, progress=False)
    assert a[layer[0]][1] == b[layer[0]][1] and torch.equal(a[layer[0]][0], b[layer[0]][0])
    with pytest.raises(ValueError, match="save_every_batches"):
        cv.PassCheckpoint(tmp_path / "x", "k", save_every_batches=0)


def test_two_processes_share_one_cache_and_compute_once(tmp_path):
    cache, barrier = tmp_path / "cache", tmp_path / "barrier"
    barrier.mkdir()
    procs = [_worker("all", cache, barrier, i, tmp_path / f"out{i}.json") for i in range(2)]
    errs = [_finish(p) for p in procs]
    out = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
    assert out[0]["digests"] == out[1]["digests"]
    totals = {k: out[0]["counts"][k] + out[1]["counts"][k] for k in out[0]["counts"]}
    assert totals == {"covariance": 1, "basis": len(W.LAYERS), "facts": 1, "model": 1}, errs

    # every cache file verifies
    model = W.tiny_model()
    for layer in W.LAYERS:
        mom2, count = cv.load_stats(cv.stats_path(cache / "stats", "org/tiny", layer, "float32", len(W.TEXTS)))
        assert count > 0 and torch.isfinite(mom2).all()
        fresh = BasisCache(cache / "bases")
        fresh.get(model.get_submodule(layer).weight, 0.1)
        assert fresh.loaded == 1 and fresh.computed == 0
    from revive_plugin.data.counterfact import load_counterfact

    (factset,) = (cache / "data").glob("factset-*.json")
    assert len(load_counterfact(factset)) == 10
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(cache / "models" / "tiny")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
    assert _leftovers(cache) == []


def test_lock_waits_then_times_out_naming_the_holder(tmp_path):
    target = tmp_path / "thing.bin"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from revive_plugin import _io\n"
        f"with _io.file_lock({str(target)!r}, what='thing'):\n"
        "    print('locked', flush=True); time.sleep(60)")], env=_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(TimeoutError, match=rf"thing\.bin\.lock \(held by pid {holder.pid}"):
            with _io.file_lock(target, what="thing", timeout=0.3):
                pass
    finally:
        holder.kill()
        holder.wait()
    with _io.file_lock(target, what="thing", timeout=5) as waited:  # released when its holder died
        assert waited is False


def _not_a_folder(tmp_path) -> Path:
    """A cache folder that cannot be created: its parent is a regular file. (chmod cannot make a folder
    read-only for root, who runs these tests here; mkdir under a file fails for every user.)"""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    return blocker / "cache"


def test_unwritable_cache_folder_gives_clear_errors(tmp_path, small_model, monkeypatch, capsys):
    model, tok = small_model
    cache = _not_a_folder(tmp_path)
    monkeypatch.setenv("REVIVE_CACHE_DIR", str(cache))
    with pytest.raises(_io.CacheWriteError, match=r"cannot write covariance statistics in .*blocker/cache"):
        cv.ensure_stats(model, tok, ["model.layers.1.mlp.down_proj"], cache / "stats", model_name="m",
                        n_samples=4, texts=W.TEXTS[:4], max_tokens=16, batch_tokens=64, progress=False)
    from revive_plugin import models
    from revive_plugin.data import facts

    with pytest.raises(_io.CacheWriteError, match=r"fact set in .*blocker/cache/data.*REVIVE_CACHE_DIR"):
        facts.load_facts()
    with pytest.raises(_io.CacheWriteError, match=r"converted model in .*blocker/cache/models"):
        models.bundled_model_dir("smollm2-135m", cache / "models")
    with pytest.warns(UserWarning, match=r"could not write basis cache: cannot write basis in .*blocker/cache"):
        basis = BasisCache(cache / "bases").get(model.get_submodule("model.layers.1.mlp.down_proj").weight, 0.1)
    assert basis.k > 0  # the basis is still computed and used; only the disk copy is missing
    from revive_plugin.cli import main

    assert main(["stats", "--model", "smollm2-135m", "--stats-dir", str(cache / "stats"), "--n-samples", "2"]) == 2
    assert "revive: error: cannot write covariance statistics in" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; see the not-a-folder test")
def test_read_only_cache_folder(tmp_path, small_model):
    model, tok = small_model
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(_io.CacheWriteError, match=r"in .*ro"):
            cv.ensure_stats(model, tok, ["model.layers.1.mlp.down_proj"], folder, model_name="m", n_samples=4,
                            texts=W.TEXTS[:4], max_tokens=16, batch_tokens=64, progress=False)
        assert list(folder.rglob("*")) == []
    finally:
        folder.chmod(0o755)


FULL_DISK = r"""
import resource, signal, sys, torch
from revive_plugin import _io
from revive_plugin.editing import covariance as cv
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so an oversized write raises OSError(EFBIG)
folder = sys.argv[1]
tensors = {"a": torch.zeros(64, 64, dtype=torch.float64)}
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
for label, write in [
    ("stats", lambda: cv.save_stats(folder + "/s/x.npz", tensors["a"], 3, 3)),
    ("safetensors", lambda: _io.atomic_save_safetensors(tensors, folder + "/b/x.safetensors", what="basis")),
    ("text", lambda: _io.atomic_write_text(folder + "/t/x.json", "x" * 10000, what="run state")),
]:
    try:
        write()
        print(label, "written")
    except _io.CacheWriteError as e:
        print(label, "error:", e)
"""


def test_full_disk_gives_clear_error_and_no_partial_file(tmp_path):
    """A file-size limit (RLIMIT_FSIZE, as ``ulimit -f``) in a subprocess stands in for a full disk."""
    res = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path)], env=_env(), capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 3
    for line, sub in zip(lines, ("s", "b", "t")):
        assert "error: cannot write" in line and f"{tmp_path}/{sub}: File too large" in line, line
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [], "a half-written file was left behind"
