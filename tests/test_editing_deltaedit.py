"""DeltaEdit: noise screening, the orthogonality of new updates to the dominant subspace of earlier ones,
save → restore → continue, hparams validation (tiny random Llama), and efficacy on the bundled model."""

from __future__ import annotations

import pytest
import torch

from revive_plugin.editing import HParamsError, core, load_hparams, make_editor
from revive_plugin.editing.deltaedit import noise_subspace, screen_noise
from revive_plugin.editing.hparams import AlphaEditHyperParams, DeltaEditHyperParams

TEXTS = [f"Sentence number {i} talks about {w} and the weather in {c}." for i, (w, c) in enumerate(
    zip(["cats", "dogs", "trains", "music", "rivers", "stars"] * 5, ["Paris", "Oslo", "Lima", "Rome", "Cairo"] * 6))]
R1 = [
    {"prompt": "{} is located in", "subject": "Paris", "target_new": "Rome"},
    {"prompt": "The capital of {} is", "subject": "Spain", "target_new": "Oslo"},
]
SINGLES = [
    {"prompt": "{} plays the sport of", "subject": "Lionel Messi", "target_new": "baseball"},
    {"prompt": "{} was written by", "subject": "Hamlet", "target_new": "Tolstoy"},
    {"prompt": "{} is a product of", "subject": "iPhone", "target_new": "Samsung"},
]
NAME = "model.layers.2.mlp.down_proj.weight"


def _hp(tmp_path, **kw):
    base = dict(layers=[2], stats_dir=str(tmp_path / "stats"), mom2_n_samples=len(TEXTS), stats_max_tokens=32,
                v_num_grad_steps=4, mom2_update_weight=1.0, v_loss_layer=3, nullspace_threshold=1e6, L2=1.0,
                var=0.0, noise_warmup=0, noise_threshold=1e-8)
    base.update(kw)
    return DeltaEditHyperParams(**base)


def _editor(model, tok, hp):
    return make_editor("DeltaEdit", model, tok, hp, stats_texts=TEXTS)


def _w(model):
    return dict(model.named_parameters())[NAME].detach().clone()


def test_screen_noise_matches_hand_computed_statistics():
    flags, stats = screen_noise([2.0, 4.0, 4.0, 10.0, 3.5], None, 1, var=1.0, momentum=0.5, warmup=0)
    # μ,s²: (2,0) → (3, 0.5); 4 and 10 deviate by > 1·√0.5 and leave them; 3.5 → (3.25, 0.28125)
    assert flags == [False, False, True, True, False]
    assert stats == pytest.approx((3.25, 0.28125))
    flags, stats = screen_noise([2.0, 4.0, 4.0, 10.0], None, 1, var=1.0, momentum=0.5, warmup=3)
    assert flags == [False, False, False, True]  # the first 3 requests of the run only feed the statistics
    assert stats == pytest.approx((3.5, 0.375))
    flags, _ = screen_noise([3.0], (3.0, 1.0), 50, var=0.5, momentum=0.9, warmup=20)
    assert flags == [False]


def test_noise_subspace_rank_follows_threshold_and_space():
    torch.manual_seed(0)
    q_out, _ = torch.linalg.qr(torch.randn(8, 8))
    q_in, _ = torch.linalg.qr(torch.randn(5, 5))
    D = q_out[:, :3] @ torch.diag(torch.tensor([3.0, 2.0, 0.2])) @ q_in[:, :3].T
    zero = torch.zeros(8)
    U = noise_subspace(D @ D.T, zero, space=0.25, threshold=0.1)  # top ⌊0.25·8⌋ = 2 eigenvalues: 9, 4
    assert U.shape == (8, 2)
    assert torch.allclose(U @ U.T, q_out[:, :2] @ q_out[:, :2].T, atol=1e-5)
    assert noise_subspace(D @ D.T, zero, space=0.5, threshold=0.1).shape[1] == 2  # 0.04 is below the threshold
    assert noise_subspace(D @ D.T, zero, space=0.5, threshold=0.01).shape[1] == 3
    assert noise_subspace(D @ D.T, zero, space=0.25, threshold=5.0).shape[1] == 1
    assert noise_subspace(D @ D.T, zero, space=0.9, threshold=0.0).shape[1] == 0  # at most ⌊(1 − space)·d⌋ = 0


def _run_sequence(model, tok, hp):
    """R1, then three single edits; returns the editor, the weight before the last edit and its ΔW."""
    ed = _editor(model, tok, hp)
    ed.edit(R1)
    ed.edit(SINGLES[0])
    ed.edit(SINGLES[1])
    before = _w(model)
    ed.edit(SINGLES[2])
    return ed, before, _w(model) - before


def _earlier_subspace(model, tok, D, request, hp):
    """U from the accumulated earlier update D and the new request's noise D k, computed here."""
    k, _ = core.compute_keys(model, tok, [core.normalize_request(request)], ["model.layers.2.mlp.down_proj"],
                             templates=core.context_templates(0))
    n = D.double() @ k["model.layers.2.mlp.down_proj"][0].double()
    evals, evecs = torch.linalg.eigh(D.double() @ D.double().T + torch.outer(n, n))
    d = len(evals)
    top = evals.flip(0)[: int(d * hp.space)]
    r = min(int((top > hp.noise_threshold).sum()), int(d * (1 - hp.space)))
    return evecs.flip(1)[:, :r]


def test_new_update_is_orthogonal_to_earlier_updates_when_constrained(small_model, tmp_path):
    model, tok = small_model
    pristine = _w(model)
    hp = _hp(tmp_path)
    ed, before, delta = _run_sequence(model, tok, hp)
    assert ed.noise_info["constrained"] == [0] and ed.noise_info["ranks"][0] >= 1
    U = _earlier_subspace(model, tok, before - pristine, SINGLES[2], hp)  # ΔW in (out × in) storage
    assert U.shape[1] >= 1 and delta.norm() > 0
    assert (U.T @ delta.double()).norm() <= 1e-4 * delta.norm()
    assert torch.allclose(ed.state.get("delta_D/model.layers.2.mlp.down_proj"), _w(model) - pristine, atol=1e-6)

    with torch.no_grad():  # the same sequence unconstrained (var huge): the new ΔW does reach U
        dict(model.named_parameters())[NAME].copy_(pristine)
    hp_free = _hp(tmp_path, var=1e9)
    ed_free, before_free, delta_free = _run_sequence(model, tok, hp_free)
    assert ed_free.noise_info["constrained"] == []
    U_free = _earlier_subspace(model, tok, before_free - pristine, SINGLES[2], hp_free)
    assert (U_free.T @ delta_free.double()).norm() > 1e-2 * delta_free.norm()


def test_save_restore_continue_matches_uninterrupted(small_model, tmp_path):
    model, tok = small_model
    hp = _hp(tmp_path, layers=[1, 2], use_revive=True, revive_tau=0.3)
    names = ["model.layers.1.mlp.down_proj.weight", NAME]
    params = dict(model.named_parameters())
    ed = _editor(model, tok, hp)
    ed.edit(R1)
    ed.edit(SINGLES[0])
    mid = {n: params[n].detach().clone() for n in names}
    ed.save(tmp_path / "state")
    ed.edit(SINGLES[1])
    ed.edit(SINGLES[2])
    assert ed.noise_info["constrained"] == [0]
    uninterrupted = {n: params[n].detach().clone() for n in names}

    with torch.no_grad():
        for n in names:
            params[n].copy_(mid[n])
    ed2 = _editor(model, tok, hp)
    ed2.load(tmp_path / "state")
    ed2.edit(SINGLES[1])
    ed2.edit(SINGLES[2])
    assert ed2.noise_info == ed.noise_info
    for n in names:
        assert torch.allclose(params[n].detach(), uninterrupted[n], atol=1e-6), n
    for key in ("noise_stats/model.layers.2.mlp.down_proj", "delta_D/model.layers.2.mlp.down_proj"):
        assert torch.allclose(ed2.state.get(key).double().cpu(), ed.state.get(key).double().cpu(), atol=1e-6)


@pytest.mark.parametrize("kw,key", [
    (dict(space=1.0), "space"), (dict(space=0.0), "space"), (dict(var=-1.0), "var"),
    (dict(noise_momentum=1.0), "noise_momentum"), (dict(noise_warmup=-1), "noise_warmup"),
    (dict(v_prob_stop=0.0), "v_prob_stop"), (dict(noise_threshold=-0.1), "noise_threshold"),
    (dict(L2=-1.0), "L2"), (dict(nullspace_threshold=0.0), "nullspace_threshold"), (dict(var="big"), "var"),
])
def test_bad_hparams_are_rejected_by_name(kw, key):
    with pytest.raises(HParamsError, match=key):
        DeltaEditHyperParams(**kw)


def test_bad_hparams_file_and_foreign_class(small_model, tmp_path):
    p = tmp_path / "d.yaml"
    p.write_text("alg_name: DeltaEdit\nspace: 2\n")
    with pytest.raises(HParamsError) as e:
        DeltaEditHyperParams.from_hparams(p)
    assert str(p) in str(e.value) and "space" in str(e.value)
    p.write_text("alg_name: AlphaEdit\n")
    with pytest.raises(HParamsError, match="alg_name"):
        DeltaEditHyperParams.from_hparams(p)
    model, tok = small_model
    before = _w(model)
    with pytest.raises(HParamsError, match="AlphaEditHyperParams"):
        make_editor("DeltaEdit", model, tok, AlphaEditHyperParams(layers=[2]))
    assert torch.equal(_w(model), before)


@pytest.mark.slow
def test_bundled_counterfactuals_learned_with_constraint_active(bundled_model, tmp_path):
    """10 counterfactual edits of SmolLM2 in two rounds; the second round is screened and constrained."""
    from test_editing_methods import REQUESTS, efficacy

    model, tok = bundled_model
    hp = load_hparams("DeltaEdit", "smollm2-135m", stats_dir=str(tmp_path), mom2_n_samples=200,
                      stats_max_tokens=64, v_num_grad_steps=10, context_prefixes=0, use_revive=False,
                      noise_warmup=0, var=0.0)
    editor = make_editor("DeltaEdit", model, tok, hp)
    assert efficacy(model, tok, REQUESTS) <= 0.5
    editor.edit(REQUESTS[:5])
    editor.edit(REQUESTS[5:])
    assert editor.noise_info["constrained"] and min(editor.noise_info["ranks"]) >= 1
    assert efficacy(model, tok, REQUESTS) >= 0.9
