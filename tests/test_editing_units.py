"""Fast unit tests of the editing core: requests, token positions, solves, method-specific operators."""

from __future__ import annotations

import math

import pytest
import torch

from revive_plugin.arch import arch_for
from revive_plugin.editing import core
from revive_plugin.editing.alphaedit import nullspace_projector
from revive_plugin.editing.editor import Editor
from revive_plugin.editing.hparams import MEMITHyperParams
from revive_plugin.editing.nse import select_neurons
from revive_plugin.editing.prune import restrain, restrained_bound
from revive_plugin.editing.rect import rect_mask


def test_normalize_request_forms():
    a = core.normalize_request({"prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower",
                                "target_new": "Rome", "ground_truth": "Paris"})
    assert a["prompt"] == "The {} is in" and a["target_new"]["str"] == " Rome"
    assert a["target_true"]["str"] == " Paris"
    b = core.normalize_request({"case_id": 3, "requested_rewrite": {
        "prompt": "{} is in", "subject": "X", "target_new": {"str": " Y"}, "target_true": {"str": "Z"}}})
    assert b["case_id"] == 3 and b["prompt"] == "{} is in" and b["target_true"]["str"] == " Z"
    with pytest.raises(ValueError, match="subject"):
        core.normalize_request({"prompt": "abc", "subject": "zzz", "target_new": "q"})


def test_subject_positions(bundled_tokenizer):
    tok = bundled_tokenizer
    ids, pos = core.encode_at_subject(tok, "Note that {} is in", "Eiffel Tower")
    assert tok.decode(ids[pos]).strip().endswith("Tower")
    ids, pos = core.encode_at_subject(tok, "Note that {} is in", "Eiffel Tower", "subject_first")
    assert "E" in tok.decode(ids[pos])
    ids, pos = core.encode_at_subject(tok, "Note that {} is in", "Eiffel Tower", "last")
    assert pos == len(ids) - 1


def test_arch_table(small_model):
    spec = arch_for(small_model[0])
    assert spec.rewrite_module_tmp == "model.layers.{}.mlp.down_proj" and not spec.transposed
    with pytest.raises(ValueError, match="model_type"):
        arch_for(type("M", (), {"config": type("C", (), {"model_type": "nope"})()})())


def test_memit_solve_matches_closed_form():
    g = torch.Generator().manual_seed(0)
    d_in, d_out, n = 12, 7, 3
    A = torch.randn(50, d_in, generator=g, dtype=torch.float64)
    C = A.T @ A / 50
    keys = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    resid = torch.randn(n, d_out, generator=g, dtype=torch.float64)
    dW = core.memit_solve(keys, resid, C, 2.0)
    K, R = keys.T, resid.T
    ref = R @ K.T @ torch.linalg.inv(2.0 * C + K @ K.T)
    assert torch.allclose(dW, ref, atol=1e-10)


def _post_norm(x, g, eps=1e-6):
    return g * x / x.pow(2).mean(-1, keepdim=True).add(eps).sqrt()


def test_pull_back_post_norm_reaches_the_residual_target():
    """Gemma adds g ⊙ x/rms(x) to the residual, not the FFN output x: writing MEMIT's residual target R into x
    overshoots by the norm's gain, the pulled-back Δx delivers R."""
    gen = torch.Generator().manual_seed(0)
    n, d = 4, 64
    g = torch.rand(d, generator=gen, dtype=torch.float64) * 20 + 0.5
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) * 0.2
    moved = x + 0.05 * torch.randn(n, d, generator=gen, dtype=torch.float64)
    R = _post_norm(moved, g) - _post_norm(x, g)  # a reachable residual change
    dx = core.pull_back_post_norm(R, x, g)
    err = (_post_norm(x + dx, g) - _post_norm(x, g) - R).norm(dim=-1) / R.norm(dim=-1)
    naive = (_post_norm(x + R, g) - _post_norm(x, g) - R).norm(dim=-1) / R.norm(dim=-1)
    assert err.max() < 0.05 and naive.min() > 2
    assert dx.dtype == R.dtype
    with pytest.raises(ValueError, match="disagree"):
        core.pull_back_post_norm(R, x, g[:-1])


def test_gemma_post_norm_row_matches_the_model():
    """The table's post-FFN norm and gain offset reproduce Gemma-3's own norm module, so the pull-back inverts
    what the model computes."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from revive_plugin import nethook

    torch.manual_seed(0)
    model = Gemma3ForCausalLM(Gemma3TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64,
                                               num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                               head_dim=16)).eval()
    spec = arch_for(model)
    assert arch_for(type("C", (), {"model_type": "llama"})()).ffn_post_norm_tmp is None
    norm = model.get_submodule(spec.ffn_post_norm_tmp.format(1))
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(3, 32)
    gain = nethook.get_parameter(model, spec.ffn_post_norm_tmp.format(1) + ".weight") + spec.ffn_post_norm_offset
    assert torch.allclose(norm(x), _post_norm(x, gain, eps=model.config.rms_norm_eps).float(), atol=1e-5)


def _tiny_gemma(vocab_size: int):
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    model = Gemma3ForCausalLM(Gemma3TextConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128,
                                               num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
                                               head_dim=32)).eval()
    model.requires_grad_(False)
    with torch.no_grad():  # a post-FFN norm with Gemma-like large, uneven gains
        model.model.layers[2].post_feedforward_layernorm.weight.uniform_(5.0, 40.0)
    return model


@pytest.mark.parametrize("pull_back", [True, False])
def test_memit_write_on_gemma_reaches_the_target_through_the_post_norm(bundled_tokenizer, tmp_path, pull_back):
    """One MEMIT write at Gemma's last edit layer moves the z layer's output by the residual target R: with
    the pull-back the model lands within 10% of z; writing R into the FFN output as MEMIT does (the table
    row without the norm) overshoots by the norm's gain."""
    from tiny_edits import R1, TEXTS, tiny_hparams

    from revive_plugin.editing import make_editor

    model = _tiny_gemma(len(bundled_tokenizer))
    hp = tiny_hparams(MEMITHyperParams, tmp_path, layers=[2], mom2_update_weight=1e-3, context_prefixes=0,
                      use_revive=False)
    ed = make_editor("MEMIT", model, bundled_tokenizer, hp, stats_texts=TEXTS)
    if not pull_back:
        ed.post_norm_tmp = None
    reqs = [core.normalize_request(r) for r in R1]
    keys, cur = ed.layer_inputs(reqs, 2)
    norm = model.model.layers[2].post_feedforward_layernorm
    x = keys @ ed.weight_out_in(2).T
    gen = torch.Generator().manual_seed(0)
    z = cur + norm(x + 0.05 * x.norm(dim=-1, keepdim=True) * torch.randn(x.shape, generator=gen) / 8) - norm(x)
    ed.write(2, ed.solve(0, 2, keys, ed.layer_residual(0, 2, z, cur, keys)))
    _, after = ed.layer_inputs(reqs, 2)
    err = ((after - z).norm(dim=-1) / (z - cur).norm(dim=-1)).max().item()
    assert err < 0.1 if pull_back else err > 2


def test_alphaedit_solution_preserves_null_complement():
    """ΔW k = 0 for k in the preserved space (eigenvectors of C above the threshold)."""
    g = torch.Generator().manual_seed(1)
    d_in, d_out, n = 16, 5, 4
    basis, _ = torch.linalg.qr(torch.randn(d_in, d_in, generator=g, dtype=torch.float64))
    evals = torch.cat([torch.full((6,), 1.0), torch.full((10,), 1e-4)]).double()
    C = (basis * evals) @ basis.T
    P = nullspace_projector(C, 1e-2).double()
    keys = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    resid = torch.randn(n, d_out, generator=g, dtype=torch.float64)
    K, R = keys.T, resid.T
    X = torch.linalg.solve(P @ (K @ K.T) + 1.0 * torch.eye(d_in, dtype=torch.float64), P @ K @ R.T)
    dW = X.T
    preserved = basis[:, :6]
    assert (dW @ preserved).norm() <= 1e-5 * dW.norm()  # P is stored in float32
    assert dW.norm() > 0


def test_rect_mask_keeps_top_fraction():
    g = torch.Generator().manual_seed(2)
    W = torch.randn(20, 30, generator=g)
    D = torch.randn(20, 30, generator=g)
    mask = rect_mask(D, W, 0.2)
    assert int(mask.sum()) == 120
    rel = (D / W).abs()
    assert rel[mask].min() >= rel[~mask].max()


def test_prune_restrain_bounds_singular_values():
    g = torch.Generator().manual_seed(3)
    U, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(20, 20, generator=g, dtype=torch.float64))
    S = torch.tensor([50.0, 20.0, 8.0, 3.0, 1.0] + [0.0] * 15, dtype=torch.float64)
    D = (U[:, :20] * S) @ V.T
    out = restrain(D, 5.0)
    s_out = torch.linalg.svdvals(out)
    expect = sorted([restrained_bound(s, 5.0) for s in S.tolist()], reverse=True)
    assert torch.allclose(s_out, torch.tensor(expect, dtype=torch.float64), atol=1e-9)
    assert s_out[0] <= 5.0 + math.log(50.0 / 5.0) + 1e-9
    small = D / 100
    assert torch.allclose(restrain(small, 5.0), small)


def test_nse_select_neurons():
    keys = torch.tensor([[0.0, 5.0, 1.0, 4.0], [0.0, 5.0, 1.0, 0.0]])
    sel = select_neurons(keys, 0.8)  # scores 0,10,2,4 -> cumulative 10,14 <= 12.8 ? only first
    assert sel.tolist() == [1]
    assert select_neurons(keys, 1.0).tolist() == [0, 1, 2, 3]


def test_batched_values_equal_per_request(small_model):
    """Joint optimisation of all deltas follows each request's own optimisation path."""
    model, tok = small_model
    reqs = [core.normalize_request(r) for r in (
        {"prompt": "{} is located in", "subject": "Paris", "target_new": "Rome"},
        {"prompt": "The capital of {} is", "subject": "Spain", "target_new": "Oslo"},
        {"prompt": "{} plays", "subject": "Lionel Messi", "target_new": "baseball games"},
    )]
    hp = MEMITHyperParams(layers=[1, 2], v_num_grad_steps=6, v_lr=0.5)
    z_all = core.compute_target_values(model, tok, reqs, hp, "model.layers.2")
    z_one = core.compute_target_values(model, tok, reqs, hp, "model.layers.2", chunk_size=1)
    assert torch.allclose(z_all, z_one, atol=1e-4, rtol=1e-4)
    for mode in ("full", "truncated", "cached"):
        z_mode = core.compute_target_values(model, tok, reqs, hp, "model.layers.2", forward=mode)
        assert torch.allclose(z_all, z_mode, atol=1e-4, rtol=1e-4), mode
    keys, cur = core.compute_keys(model, tok, reqs, ["model.layers.1.mlp.down_proj"], z_module="model.layers.2")
    assert keys["model.layers.1.mlp.down_proj"].shape == (3, 128) and cur.shape == (3, 64)


def test_editor_optimises_large_rounds_in_chunks(small_model, monkeypatch):
    """A round larger than ``values_chunk`` is optimised a chunk at a time (memory stays bounded)."""
    model, tok = small_model
    sizes = []
    monkeypatch.setattr(core, "_values_chunk", lambda m, t, reqs, *a, **k: sizes.append(len(reqs)) or torch.zeros(len(reqs), 64))
    reqs = [core.normalize_request({"prompt": "{} is in", "subject": f"Town{i}", "target_new": "Rome"}) for i in range(5)]
    editor = Editor(model, tok, MEMITHyperParams(layers=[1, 2], context_prefixes=0))
    assert Editor.values_chunk is not None
    editor.values_chunk = 2
    assert editor.values(reqs).shape == (5, 64)
    assert sizes == [2, 2, 1]
