"""Covariance statistics: streamed estimate == direct computation; EasyEdit's npz layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from revive_plugin.editing import covariance as cv

TEXTS = [f"Text {i}: the {w} of {c} is known to many people around the world." for i, (w, c) in enumerate(
    zip(["history", "river", "music", "food"] * 6, ["Peru", "Chad", "Fiji", "Laos", "Iran", "Cuba"] * 4))]
LAYER = "model.layers.1.mlp.down_proj"


def _direct(model, tok, texts, max_tokens):
    """Σ kkᵀ and count with one unpadded forward per text (no batching)."""
    feats = []
    for t in texts:
        ids = tok(t, truncation=True, max_length=max_tokens, return_tensors="pt")["input_ids"]
        grabbed = {}

        def grab(module, args, output):
            grabbed["k"] = args[0][0]

        h = model.get_submodule(LAYER).register_forward_hook(grab)
        with torch.no_grad():
            model(ids)
        h.remove()
        feats.append(grabbed["k"].double())
    k = torch.cat(feats)
    return k.T @ k, k.shape[0]


def test_streamed_equals_direct(small_model):
    model, tok = small_model
    got = cv.collect_second_moments(model, tok, [LAYER], TEXTS, max_tokens=12, batch_tokens=40, progress=False)
    mom2, count = got[LAYER]
    ref, ref_count = _direct(model, tok, TEXTS, 12)
    assert count == ref_count
    assert torch.allclose(mom2, ref, rtol=1e-5, atol=1e-6)


def test_npz_in_easyedit_layout(small_model, tmp_path):
    model, tok = small_model
    path = cv.ensure_layer_stats(model, tok, LAYER, tmp_path, model_name="org/tiny-llama", n_samples=10,
                                 texts=TEXTS, max_tokens=16, batch_tokens=64)
    assert path == tmp_path / "tiny-llama" / "wikipedia_stats" / f"{LAYER}_float32_mom2_10.npz"
    with np.load(path, allow_pickle=False) as data:  # EasyEdit's loader: numpy.load without pickles
        assert set(data.files) == {"mom2.mom2", "mom2.count", "mom2.constructor", "sample_size"}
        assert int(data["sample_size"]) == 10  # tally() compares this with mom2_n_samples
        assert str(data["mom2.constructor"]).endswith("SecondMoment()")
        assert data["mom2.mom2"].dtype == np.float32 and data["mom2.mom2"].shape == (128, 128)
        count = int(data["mom2.count"])
    ref, ref_count = _direct(model, tok, TEXTS[:10], 16)
    assert count == ref_count
    mom2, count2 = cv.load_stats(path)
    assert count2 == count and torch.allclose(mom2.double(), ref, rtol=1e-4, atol=1e-4)
    cov = cv.get_covariance(model, tok, LAYER, tmp_path, model_name="org/tiny-llama", n_samples=10)
    assert torch.allclose(cov.double(), ref / ref_count, rtol=1e-4, atol=1e-6)


def test_finished_pass_removes_what_killed_writers_left(small_model, tmp_path):
    """A writer killed mid-save leaves its ``.<name>.<random>.tmp``; the pass that finishes the file (holding its
    lock) removes such orphans of the statistics and of the progress file, and nothing else."""
    model, tok = small_model
    path = cv.stats_path(tmp_path, "org/tiny-llama", LAYER, "float32", 10)
    path.parent.mkdir(parents=True)
    orphans = [path.with_name(f".{path.name}.dead0001.tmp"),
               path.with_name(".covariance-pass-0123456789abcdef.partial.safetensors.dead0002.tmp")]
    orphans[0].write_bytes(b"half a file")
    orphans[1].mkdir()
    other = path.with_name(f".{path.name}.keep.txt")
    other.write_text("not a temporary file")
    ck = cv.PassCheckpoint(orphans[1].with_name("covariance-pass-0123456789abcdef.partial.safetensors"), "k")
    ck.remove()
    assert not orphans[1].exists() and orphans[0].exists()
    cv.ensure_layer_stats(model, tok, LAYER, tmp_path, model_name="org/tiny-llama", n_samples=10, texts=TEXTS,
                          max_tokens=16, batch_tokens=64)
    assert path.is_file() and not orphans[0].exists() and other.is_file()


def test_errors(tmp_path, small_model):
    with pytest.raises(FileNotFoundError):
        cv.load_stats(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError):
        cv.texts_from_file(tmp_path / "nope.txt")
    bad = tmp_path / "bad.npz"
    np.savez(bad, other=np.zeros(2))
    with pytest.raises(ValueError, match="mom2.mom2"):
        cv.load_stats(bad)
    model, tok = small_model
    with pytest.raises(ValueError):
        cv.collect_second_moments(model, tok, [LAYER], TEXTS, max_tokens=64, batch_tokens=8, progress=False)
