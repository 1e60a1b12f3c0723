"""Each method edits ~10 counterfactual facts on the bundled model (CPU) and makes them win."""

from __future__ import annotations

import pytest
import torch

from revive_plugin.editing import attached_state, core, get_method, load_hparams, make_editor, reset_state
from revive_plugin.projection import DominantBasis

FACTS = [
    ("{} is located in the country of", "Eiffel Tower", " Japan", " France"),
    ("The capital of {} is", "France", " Berlin", " Paris"),
    ("{} is a product of", "iPhone", " Samsung", " Apple"),
    ("The mother tongue of {} is", "Vladimir Putin", " French", " Russian"),
    ("{} plays the sport of", "Lionel Messi", " baseball", " soccer"),
    ("{} was written by", "Hamlet", " Tolstoy", " Shakespeare"),
    ("The official language of {} is", "Brazil", " German", " Portuguese"),
    ("{} is headquartered in", "Microsoft", " London", " Redmond"),
    ("{} is a city in the country of", "Rome", " Mexico", " Italy"),
    ("{} is the capital of", "Tokyo", " Canada", " Japan"),
]
REQUESTS = [
    {"case_id": i, "prompt": p, "subject": s, "target_new": {"str": n}, "target_true": {"str": t}}
    for i, (p, s, n, t) in enumerate(FACTS)
]


@torch.no_grad()
def efficacy(model, tok, requests) -> float:
    """Share of requests whose new object has a lower mean token NLL than the true one."""
    wins = 0
    for r in map(core.normalize_request, requests):
        prompt = tok(r["prompt"].format(r["subject"]))["input_ids"]
        nll = []
        for target in (r["target_new"]["str"], r["target_true"]["str"]):
            t = core.target_ids(tok, target)
            logp = torch.log_softmax(model(torch.tensor([prompt + t])).logits[0].float(), -1)
            nll.append(-sum(float(logp[len(prompt) - 1 + j, tid]) for j, tid in enumerate(t)) / len(t))
        wins += nll[0] < nll[1]
    return wins / len(requests)


@pytest.fixture(scope="module")
def stats_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("edit-stats")


def _hparams(method, stats_dir, **kw):
    base = dict(stats_dir=str(stats_dir), mom2_n_samples=200, stats_max_tokens=64, v_num_grad_steps=10,
                context_prefixes=0,
                use_revive=False)
    base.update(kw)
    return load_hparams(method, "smollm2-135m", **base)


@pytest.mark.parametrize("method", ["MEMIT", "AlphaEdit", "RECT", "PRUNE", "NSE", "DeltaEdit"])
def test_counterfactual_batch_is_learned(bundled_model, stats_dir, method):
    model, tok = bundled_model
    use_revive = method == "MEMIT"  # MEMIT also checks REVIVE's guarantee on the written ΔW
    # RECT (reference masking: solve all layers, then keep the top 40%) needs a sampled context template
    # and the YAML's 15 value steps to reach 90%.
    extra = dict(context_prefixes=1, v_num_grad_steps=15) if method == "RECT" else {}
    hp = _hparams(method, stats_dir, use_revive=use_revive, **extra)
    editor = make_editor(method, model, tok, hp)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n in editor.edited_params}
    assert efficacy(model, tok, REQUESTS) <= 0.5
    info = editor.edit(REQUESTS)
    assert efficacy(model, tok, REQUESTS) >= 0.9
    # the projection's time is reported per written weight when REVIVE is on (the bench sums it)
    per_weight = [info["layers"][n] for n in editor.edited_params]
    assert per_weight and all(("time_project_s" in v) == use_revive for v in per_weight)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before.get(n, p))]
    assert set(changed) <= set(editor.edited_params) and changed
    if use_revive:
        for name, w0 in before.items():
            delta = dict(model.named_parameters())[name].detach().double() - w0.double()
            basis = DominantBasis.from_weight(w0, tau=hp.revive_tau)
            u_leak, v_leak = basis.leakage(delta)
            assert u_leak <= 1e-5 and v_leak <= 1e-5, (name, u_leak, v_leak)


def test_apply_contract_returns_weights_copy(bundled_model, stats_dir):
    model, tok = bundled_model
    spec = get_method("memit")
    hp = _hparams("MEMIT", stats_dir, v_num_grad_steps=2, layers=[7, 8])
    orig = {n: p.detach().clone() for n, p in model.named_parameters() if ".mlp.down_proj" in n}
    try:
        out, weights_copy = spec.apply_fn(model, tok, REQUESTS[:2], hp, copy=False, return_orig_weights=True,
                                          state=None, keep_original_weight=False)
        assert attached_state(model, "MEMIT").meta["rounds"] == 1
    finally:
        reset_state(model)
    assert out is model
    assert set(weights_copy) == {"model.layers.7.mlp.down_proj.weight", "model.layers.8.mlp.down_proj.weight"}
    for name, w in weights_copy.items():
        assert torch.equal(w, orig[name])
        assert not torch.equal(dict(model.named_parameters())[name], w)
