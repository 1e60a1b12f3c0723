"""Reference settings and modes of the baselines (issue 12): AlphaEdit's L2, one RECT fraction and its
reference masking, PRUNE's reference timing, generated context templates, SS sides of transposed weights."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
import yaml

from revive_plugin.editing import make_editor
from revive_plugin.editing.hparams import MEMITHyperParams, PRUNEHyperParams, RECTHyperParams
from revive_plugin.editing.prune import restrain
from revive_plugin.editing.rect import rect_mask
from revive_plugin.editing.templates import cached_context_templates, generate_context_templates
from tiny_edits import LAYERS, NAMES, R1, R2, TEXTS, tiny_hparams

REPO = Path(__file__).resolve().parents[1]


def _hp(cls, tmp_path, **kw):
    return tiny_hparams(cls, tmp_path, **{"context_templates": "fixed", **kw})


def _weights(model):
    params = dict(model.named_parameters())
    return {n: params[n].detach().clone() for n in NAMES}


def _load(path):
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def test_alphaedit_llama3_l2_is_the_references_10():
    assert _load(REPO / "revive_plugin" / "hparams" / "AlphaEdit" / "llama3-8b.yaml")["L2"] == 10


def test_one_rect_fraction_in_code_yamls_and_docs():
    expected = RECTHyperParams().rect_top_fraction
    assert expected == 0.4
    files = sorted((REPO / "revive_plugin" / "hparams" / "RECT").glob("*.yaml"))
    assert len(files) >= 5
    for path in files:
        data = _load(path)
        assert data["rect_top_fraction"] == expected, path.name
        assert data.get("rect_mode", "reference") == "reference", path.name
        header = path.read_text(encoding="utf-8")
        assert not re.search(r"rect_top_fraction \d", header.replace("0.4", "")), path.name
    for doc in (REPO / "docs" / "methods.md", REPO / "revive_plugin" / "hparams" / "README.md",
                REPO / "revive_plugin" / "editing" / "rect.py"):
        text = doc.read_text(encoding="utf-8")
        stated = re.findall(r"(?:rect_top_fraction|[Ff]raction is)\W{0,4}(?:\(|is |= |: )?(\d\.\d+)", text)
        assert all(float(v) == expected for v in stated), (doc.name, stated)
    assert re.findall(r"(?:rect_top_fraction|[Ff]raction is)\W{0,4}(?:\(|is |= |: )?(\d\.\d+)",
                      (REPO / "docs" / "methods.md").read_text(encoding="utf-8"))


def test_rect_reference_mode_equals_solve_all_then_mask(small_model, tmp_path):
    model, tok = small_model
    reference = copy.deepcopy(model)
    w0 = _weights(model)
    make_editor("RECT", model, tok, _hp(RECTHyperParams, tmp_path), stats_texts=TEXTS).edit(R1)
    # the reference: plain MEMIT on every layer (each write seen by the next layer), then mask every layer
    make_editor("MEMIT", reference, tok, _hp(MEMITHyperParams, tmp_path), stats_texts=TEXTS).edit(R1)
    got, full = _weights(model), _weights(reference)
    for name in NAMES:
        delta = full[name] - w0[name]
        expect = w0[name] + delta * rect_mask(delta, w0[name], 0.4)
        assert torch.allclose(got[name], expect, atol=1e-6), name
        changed = int((got[name] != w0[name]).sum())
        assert 0 < changed <= round(0.4 * w0[name].numel())
    # the per-layer mode masks before the next layer is solved: a different result
    per_layer = copy.deepcopy(reference)
    with torch.no_grad():
        for name, w in w0.items():
            dict(per_layer.named_parameters())[name].copy_(w)
    make_editor("RECT", per_layer, tok, _hp(RECTHyperParams, tmp_path, rect_mode="per_layer"),
                stats_texts=TEXTS).edit(R1)
    assert not torch.allclose(_weights(per_layer)[NAMES[-1]], got[NAMES[-1]], atol=1e-6)


def test_prune_reference_timing_restrains_only_the_evaluated_copy(small_model, tmp_path):
    model, tok = small_model
    memit = copy.deepcopy(model)
    w0 = _weights(model)
    hp = _hp(PRUNEHyperParams, tmp_path, prune_bound_scale=1e-3)
    assert hp.prune_timing == "reference"
    ed = make_editor("PRUNE", model, tok, hp, stats_texts=TEXTS)
    ed.edit(R1)
    ed.edit(R2)
    mem = make_editor("MEMIT", memit, tok, _hp(MEMITHyperParams, tmp_path), stats_texts=TEXTS)
    mem.edit(R1)
    mem.edit(R2)
    edited, unrestrained = _weights(model), _weights(memit)
    for name in NAMES:  # edits are applied unrestrained: the same weights as plain MEMIT
        assert torch.allclose(edited[name], unrestrained[name], atol=1e-6), name
    with ed.evaluation_view():
        seen = _weights(model)
    for l, name in zip(LAYERS, NAMES):
        D = edited[name] - w0[name]
        assert float(torch.linalg.matrix_norm(D.double(), ord=2)) > ed.sigma_bound(l)  # the restraint acts
        expect = w0[name] + restrain(D, ed.sigma_bound(l))  # W0 + F(D), not W0 + D + F(D)
        assert torch.allclose(seen[name], expect, atol=1e-5), name
    after = _weights(model)
    for name in NAMES:  # the view is undone: editing continues on the unrestrained weights
        assert torch.equal(after[name], edited[name])


def test_prune_reference_timing_under_the_easyedit_contract(small_model, tmp_path):
    from revive_plugin.editing import apply_prune_to_model, reset_state

    model, tok = small_model
    hp = _hp(PRUNEHyperParams, tmp_path, prune_bound_scale=1e-3)
    w0 = _weights(model)
    try:
        apply_prune_to_model(model, tok, R1, hp, stats_texts=TEXTS)
        apply_prune_to_model(model, tok, R2, hp, stats_texts=TEXTS)
    finally:
        reset_state(model)
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for name, w in w0.items():
            dict(reference.named_parameters())[name].copy_(w)
    ed = make_editor("PRUNE", reference, tok, hp, stats_texts=TEXTS)
    ed.edit(R1)
    ed.edit(R2)
    with ed.evaluation_view():  # the host sees W0 + F(D) of the same unrestrained sequence
        expect = _weights(reference)
    for name in NAMES:
        assert torch.allclose(_weights(model)[name], expect[name], atol=1e-5), name


def test_prune_per_round_timing_is_kept(small_model, tmp_path):
    model, tok = small_model
    hp = _hp(PRUNEHyperParams, tmp_path, prune_bound_scale=1e-3, prune_timing="per_round")
    w0 = _weights(model)
    ed = make_editor("PRUNE", model, tok, hp, stats_texts=TEXTS)
    ed.edit(R1)
    for name in NAMES:
        assert torch.allclose(_weights(model)[name] - w0[name], ed.state.get(f"prune_applied/{name}"), atol=1e-5)
    with pytest.raises(ValueError, match="prune_timing"):
        _hp(PRUNEHyperParams, tmp_path, prune_timing="later")


def test_generated_templates_deterministic_for_a_seed_and_cached(small_model, tmp_path, monkeypatch):
    model, tok = small_model
    a = generate_context_templates(model, tok, seed=3)
    b = generate_context_templates(model, tok, seed=3)
    c = generate_context_templates(model, tok, seed=4)
    assert a == b and a != c
    assert len(a) == 5 and all(t.endswith(". {}") and t.count("{}") == 1 for t in a)
    assert all(t.startswith(p) for t, p in zip(a, ["The", "Therefore", "Because", "I", "You"]))
    # each sampled sequence is 10 tokens long, its prompt included (MEMIT's max_out_len)
    seen = []
    generate = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: seen.append(kw) or generate(**kw))
    generate_context_templates(model, tok, seed=3)
    shortest = min(len(tok(p)["input_ids"]) for p in ["The", "Therefore", "Because", "I", "You"])
    assert seen[0]["max_new_tokens"] == seen[0]["min_new_tokens"] == 10 - shortest
    assert seen[0]["top_k"] == 5 and seen[0]["do_sample"]
    monkeypatch.undo()

    first = cached_context_templates(model, tok, exclude=NAMES, cache_dir=tmp_path)
    files = list((tmp_path / "context_templates").glob("*.json"))
    assert len(files) == 1
    calls = []
    monkeypatch.setattr("revive_plugin.editing.templates.generate_context_templates",
                        lambda *a, **k: calls.append(1) or ["x. {}"])
    with torch.no_grad():  # an edit of an excluded parameter keeps the key: the unedited model's texts
        dict(model.named_parameters())[NAMES[0]].add_(1.0)
    assert cached_context_templates(model, tok, exclude=NAMES, cache_dir=tmp_path) == first and not calls
    with torch.no_grad():  # another model: another key, sampled anew
        dict(model.named_parameters())["model.layers.0.mlp.down_proj.weight"].add_(1.0)
    assert cached_context_templates(model, tok, exclude=NAMES, cache_dir=tmp_path) == ["x. {}"] and calls


def test_editor_uses_generated_templates_and_keeps_them_in_the_state(small_model, tmp_path, monkeypatch):
    model, tok = small_model
    monkeypatch.setenv("REVIVE_CACHE_DIR", str(tmp_path / "cache"))
    hp = _hp(MEMITHyperParams, tmp_path, context_templates="generated", context_prefixes=2)
    ed = make_editor("MEMIT", model, tok, hp, stats_texts=TEXTS)
    ed.edit(R1)
    stored = ed.state.meta["context_templates"]
    assert ed.templates == (("{}",), tuple(stored[:2]))
    assert len(stored) == 5 and stored[0].startswith("The")
    ed.save(tmp_path / "state")
    ed2 = make_editor("MEMIT", model, tok, hp, stats_texts=TEXTS)
    ed2.load(tmp_path / "state")
    assert ed2.templates == ed.templates


def test_ss_sides_of_a_transposed_conv1d_weight(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from revive_plugin.bench.config import BenchConfig
    from revive_plugin.bench.harness import BenchRun
    from revive_plugin.nethook import get_parameter

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16, n_positions=16)).eval()
    name = "transformer.h.0.mlp.c_proj.weight"
    stored = get_parameter(model, name)
    assert tuple(stored.shape) == (32, 8)  # Conv1D: (in, out); the analysed W is (out, in) = (8, 32)
    w0 = stored.detach().T.clone()
    U, S, Vh = torch.linalg.svd(w0, full_matrices=False)
    Q, _ = torch.linalg.qr(torch.randn(8, 8))
    wt = (Q @ U * S) @ Vh  # output (left) directions rotated, input (right) directions kept
    with torch.no_grad():
        stored.copy_(wt.T)

    class Parts:
        def get_param(self, m, n):
            return get_parameter(m, n)

    run = BenchRun(BenchConfig(spectral_tau=0.5), tmp_path / "run", components=Parts())
    run.model, run.originals, run._refs = model, {name: w0.T.clone()}, {}
    rep = run._spectral([name])["per_param"][name]
    assert rep["ss_right_mean_max"] == pytest.approx(1.0, abs=1e-4)
    assert rep["ss_left_mean_max"] < 0.99
