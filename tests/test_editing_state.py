"""Method-specific properties, sequential state save/restore, and isolation of independent runs
(on the tiny random Llama: fast, and none of these depend on the model being trained)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from revive_plugin.editing import (
    EditState, apply_AlphaEdit_to_model, attached_state, make_editor, reset_state,
)
from revive_plugin.editing.covariance import get_covariance
from revive_plugin.editing.hparams import (
    AlphaEditHyperParams, NSEHyperParams, PRUNEHyperParams, RECTHyperParams,
)
from revive_plugin.editing.prune import restrained_bound
from tiny_edits import LAYERS, NAMES, R1, R2, TEXTS, tiny_hparams

_hp = tiny_hparams


def _editor(method, model, tok, hp, state=None):
    return make_editor(method, model, tok, hp, state=state, stats_texts=TEXTS)


def _weights(model):
    params = dict(model.named_parameters())
    return {n: params[n].detach().clone() for n in NAMES}


def test_alphaedit_leaves_preserved_keys_unchanged(small_model, tmp_path):
    model, tok = small_model
    cov = get_covariance(model, tok, "model.layers.1.mlp.down_proj", tmp_path / "stats", n_samples=len(TEXTS),
                         texts=TEXTS, max_tokens=32)
    threshold = float(torch.linalg.eigvalsh(cov.double()).median())
    hp = _hp(AlphaEditHyperParams, tmp_path, nullspace_threshold=threshold, L2=1.0)
    ed = _editor("AlphaEdit", model, tok, hp)
    before = _weights(model)
    ed.edit(R1)
    after = _weights(model)
    for l, name in zip(LAYERS, NAMES):
        c = ed.covariance(l).double()
        evals, evecs = torch.linalg.eigh(c)
        preserved = evecs[:, evals >= threshold]
        delta = after[name].double() - before[name].double()
        assert delta.norm() > 0
        assert (delta @ preserved).norm() <= 1e-4 * delta.norm()


def test_rect_changes_only_top_fraction(small_model, tmp_path):
    model, tok = small_model
    hp = _hp(RECTHyperParams, tmp_path, rect_top_fraction=0.2)
    before = _weights(model)
    _editor("RECT", model, tok, hp).edit(R1)
    for name, w in _weights(model).items():
        changed = int((w != before[name]).sum())
        assert 0 < changed <= math.ceil(0.2 * w.numel())


def test_prune_accumulated_update_is_bounded(small_model, tmp_path):
    model, tok = small_model
    hp = _hp(PRUNEHyperParams, tmp_path, prune_bound_scale=1e-3, prune_timing="per_round")
    ed = _editor("PRUNE", model, tok, hp)
    originals = _weights(model)
    ed.edit(R1)
    ed.edit(R2)
    for l, name in zip(LAYERS, NAMES):
        bound = ed.sigma_bound(l)
        raw = torch.linalg.svdvals(ed.state.get(f"prune_D/{name}").double())
        applied = torch.linalg.svdvals(ed.state.get(f"prune_applied/{name}").double())
        assert raw[0] > bound  # the restraint was exercised
        assert applied[0] <= restrained_bound(float(raw[0]), bound) + 1e-5
        w = dict(model.named_parameters())[name].detach()
        assert torch.allclose(w - originals[name], ed.state.get(f"prune_applied/{name}"), atol=1e-5)


def test_nse_changes_only_selected_neurons(small_model, tmp_path):
    model, tok = small_model
    hp = _hp(NSEHyperParams, tmp_path, neuron_threshold=0.5, alpha=0.0, upper_bound=1e9)
    ed = _editor("NSE", model, tok, hp)
    before = _weights(model)
    info = ed.edit(R1)
    for l, name in zip(LAYERS, NAMES):
        selected = set().union(*map(set, info["layers"][name]["neurons"]))
        cols = (dict(model.named_parameters())[name].detach() != before[name]).any(dim=0)
        changed = set(torch.nonzero(cols).flatten().tolist())
        assert changed and changed <= selected and len(selected) < cols.numel()


@pytest.mark.parametrize("method,cls", [("AlphaEdit", AlphaEditHyperParams), ("PRUNE", PRUNEHyperParams)])
def test_save_restore_continue_matches_uninterrupted(small_model, tmp_path, method, cls):
    model, tok = small_model
    hp = _hp(cls, tmp_path, use_revive=True, revive_tau=0.3)
    pristine = _weights(model)
    ed = _editor(method, model, tok, hp)
    ed.edit(R1)
    mid = _weights(model)
    ed.save(tmp_path / "state")
    ed.edit(R2)
    uninterrupted = _weights(model)

    params = dict(model.named_parameters())
    with torch.no_grad():
        for n in NAMES:
            params[n].copy_(mid[n])
    ed2 = _editor(method, model, tok, hp)
    ed2.load(tmp_path / "state")
    ed2.edit(R2)
    resumed = _weights(model)
    for n in NAMES:
        assert torch.allclose(resumed[n], uninterrupted[n], atol=1e-6), n
        assert not torch.equal(resumed[n], pristine[n])
    with pytest.raises(FileNotFoundError):
        EditState.load(tmp_path / "missing")


def test_independent_runs_do_not_share_state(small_model, tmp_path):
    model, tok = small_model
    hp = _hp(AlphaEditHyperParams, tmp_path, nullspace_threshold=1e6)
    m1, m2 = copy.deepcopy(model), copy.deepcopy(model)
    apply_AlphaEdit_to_model(m1, tok, R1, hp, stats_texts=TEXTS)
    apply_AlphaEdit_to_model(m2, tok, R1, hp, stats_texts=TEXTS)
    w1, w2 = _weights(m1), _weights(m2)
    for n in NAMES:
        assert torch.allclose(w1[n], w2[n], atol=1e-6)
    s1, s2 = attached_state(m1, "AlphaEdit"), attached_state(m2, "AlphaEdit")
    assert s1 is not s2 and s1.meta["rounds"] == 1 and s2.meta["rounds"] == 1
    assert float(s1.get("cache_c/model.layers.1.mlp.down_proj").abs().sum()) > 0
    reset_state(m1)
    assert attached_state(m1, "AlphaEdit").meta["rounds"] == 0
    assert attached_state(m2, "AlphaEdit").meta["rounds"] == 1
