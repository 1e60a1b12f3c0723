"""Basis cache (memory + safetensors on disk) and the Reviver that keeps original bases."""

import json
import os
import subprocess
import sys

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import revive_plugin.projection as projection
from revive_plugin import BasisCache, DominantBasis, Reviver, StaleCacheWarning, weight_fingerprint
from revive_plugin.cache import read_safetensors_metadata


@pytest.fixture
def weight():
    return torch.randn(48, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def count_svd(monkeypatch):
    calls = []
    real = torch.linalg.svd

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(projection.torch.linalg, "svd", counting)
    return calls


def _cache_files(folder):
    """Basis files in ``folder`` (lock files, kept for other processes, excluded)."""
    return sorted(p for p in folder.iterdir() if p.suffix != ".lock")


def test_second_cache_loads_from_disk_without_svd(tmp_path, weight, count_svd):
    first = BasisCache(tmp_path).get(weight, 0.1)
    assert len(count_svd) == 1
    files = _cache_files(tmp_path)
    assert len(files) == 1 and files[0].suffix == ".safetensors"
    meta = read_safetensors_metadata(files[0])
    assert meta["fingerprint"] == weight_fingerprint(weight)
    assert json.loads(meta["shape"]) == [48, 32] and meta["k"] == str(first.k)
    assert meta["format_version"] and meta["dtype"] == "torch.float32" and float(meta["tau"]) == 0.1

    cache2 = BasisCache(tmp_path)
    second = cache2.get(weight, 0.1)
    assert len(count_svd) == 1 and cache2.loaded == 1 and cache2.computed == 0
    torch.testing.assert_close(second.U, first.U)
    torch.testing.assert_close(second.V, first.V)
    assert second.k == first.k


def test_memory_cache_hits_without_disk(weight, count_svd):
    cache = BasisCache(False)
    cache.get(weight, 0.1)
    cache.get(weight, 0.1)
    assert len(count_svd) == 1
    cache.get(weight, 0.2)  # τ is part of the key
    assert len(count_svd) == 2


def test_second_process_loads_from_disk(tmp_path, weight):
    BasisCache(tmp_path).get(weight, 0.1)
    save_file({"w": weight}, tmp_path / "w.bin")
    code = (
        "import sys, torch; import revive_plugin.projection as p\n"
        "from safetensors.torch import load_file\n"
        "p.torch.linalg.svd = lambda *a, **k: (_ for _ in ()).throw(AssertionError('SVD recomputed'))\n"
        "from revive_plugin import BasisCache\n"
        f"w = load_file(r'{tmp_path / 'w.bin'}')['w']\n"
        f"c = BasisCache(r'{tmp_path}'); b = c.get(w, 0.1); print(c.loaded, b.k)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split()[0] == "1"


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]),  # truncated
        lambda p: p.write_bytes(b"\x00" * 64),                                  # garbage
        lambda p: p.write_bytes(p.read_bytes()[:-64] + b"\xff" * 64),          # corrupt tensor data
    ],
    ids=["truncated", "garbage", "corrupt-data"],
)
def test_corrupt_file_is_reported_and_recomputed(tmp_path, weight, count_svd, damage):
    good = BasisCache(tmp_path).get(weight, 0.1)
    (path,) = _cache_files(tmp_path)
    damage(path)
    with pytest.warns(StaleCacheWarning, match="ignoring basis cache"):
        again = BasisCache(tmp_path).get(weight, 0.1)
    assert len(count_svd) == 2
    torch.testing.assert_close(again.project(weight), good.project(weight))
    # the bad file was replaced by a good one
    assert BasisCache(tmp_path).get(weight, 0.1).k == good.k and len(count_svd) == 2


def test_fingerprint_mismatch_is_not_used(tmp_path, weight, count_svd):
    cache = BasisCache(tmp_path)
    cache.get(weight, 0.1)
    (path,) = _cache_files(tmp_path)
    other = weight.clone()
    other[0, 0] += 1.0
    # a stale file sitting under the other weight's name
    os.replace(path, cache.path_for(weight_fingerprint(other), 0.1))
    with pytest.warns(StaleCacheWarning, match="fingerprint"):
        b = BasisCache(tmp_path).get(other, 0.1)
    assert len(count_svd) == 2
    ref = DominantBasis.from_weight(other, 0.1)
    torch.testing.assert_close(b.U.abs(), ref.U.abs())


def test_fingerprint_sees_every_value(weight):
    other = weight.clone()
    other[-1, -1] = torch.nextafter(other[-1, -1], torch.tensor(10.0))
    assert weight_fingerprint(weight) != weight_fingerprint(other)
    assert weight_fingerprint(weight) != weight_fingerprint(weight.double())
    assert weight_fingerprint(weight) == weight_fingerprint(weight.clone())


def test_default_location_is_configurable(tmp_path, monkeypatch, weight):
    monkeypatch.setenv("REVIVE_CACHE_DIR", str(tmp_path / "here"))
    BasisCache().get(weight, 0.1)
    assert len(_cache_files(tmp_path / "here" / "bases")) == 1


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(4)
        self.a = nn.Linear(20, 30, bias=False)
        self.b = nn.Linear(30, 20, bias=False)
        with torch.no_grad():
            self.a.weight.copy_(torch.randn(30, 20, generator=g))
            self.b.weight.copy_(torch.randn(20, 30, generator=g))


def test_reviver_keeps_original_basis_while_weights_move(tmp_path):
    model = Tiny()
    original = model.a.weight.detach().clone()
    rev = Reviver(0.1, BasisCache(tmp_path))
    rev.protect(model, ["a.weight"])
    for step in range(3):
        before = model.a.weight.detach().clone()
        with torch.no_grad():
            model.a.weight += torch.randn(30, 20) * 5  # large moves: the current basis drifts
        safe = rev.apply_(model, "a.weight", before)
        torch.testing.assert_close(model.a.weight.detach(), before + safe)
        rev.protect(model, ["a.weight"])  # a second protect never re-bases
    ref = DominantBasis.from_weight(original, 0.1)
    total = model.a.weight.detach() - original
    assert max(ref.leakage(total)) < 1e-5
    moved = DominantBasis.from_weight(model.a.weight.detach(), 0.1)
    assert max(moved.leakage(total)) > 1e-3  # the current W's basis would be a different subspace


def test_reviver_save_load_roundtrip(tmp_path):
    model = Tiny()
    rev = Reviver(0.2, BasisCache(False))
    rev.protect(model, ["a.weight", "b.weight"])
    rev.save(tmp_path)
    back = Reviver.load(tmp_path, cache=BasisCache(False))
    assert back.tau == 0.2 and back.names == ["a.weight", "b.weight"]
    d = torch.randn(20, 30)
    torch.testing.assert_close(back.project("b.weight", d), rev.project("b.weight", d))
    assert back.state_dict() == rev.state_dict()


def test_reviver_errors(tmp_path):
    model = Tiny()
    rev = Reviver(0.1, BasisCache(False))
    with pytest.raises(KeyError, match="no parameter named"):
        rev.protect(model, ["c.weight"])
    with pytest.raises(KeyError, match="not protected"):
        rev.project("a.weight", torch.zeros(30, 20))
    with pytest.raises(ValueError, match="shape"):
        rev.protect(model, ["a.weight"], originals={"a.weight": torch.zeros(20, 30)})
    with pytest.raises(ValueError):
        Reviver(1.0)
    rev.protect(model, ["a.weight"])
    before = model.a.weight.detach().clone()
    with torch.no_grad():
        model.a.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        rev.apply_(model, "a.weight", before)
    with pytest.raises(FileNotFoundError):
        Reviver.load(tmp_path / "missing")
    (tmp_path / "reviver.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupt"):
        Reviver.load(tmp_path)
