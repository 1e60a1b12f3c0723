"""Per-layer projection inside a host method (revive_plugin.easyedit.watch), with fake host methods.

A fake MEMIT/AlphaEdit-like ``apply_*`` writes two layers in sequence exactly as EasyEdit does
(``w[...] += upd`` on ``nethook.get_parameter``), reads layer 2's keys and the last layer's output by
forward passes after layer 1's write, accumulates ``cache_c += K Kᵀ`` after both writes, restores the
weights and adds the updates again at the end (EasyEdit's execute/apply split). Through the REVIVE
wrapper, what it read must equal what a model holding W₀ + P(ΔW₁) gives (P: Eq. 6 with the ORIGINAL
basis); a function that never runs a forward after its writes is projected by the after-call sweep.
Needs an importable ``easyeditor`` (the package import of revive_plugin.easyedit enables the plugin);
no EasyEdit method runs.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

TESTS = Path(__file__).resolve().parent
sys.path.insert(0, str(TESTS))
import easyedit_stubs  # noqa: E402  (test-only stubs of torchvision/timm)
from tiny_edits import tiny_llama  # noqa: E402

sys.path.remove(str(TESTS))

TAU = 0.1
L1, L2 = 1, 2
TMP = "model.layers.{}.mlp.down_proj"
NAMES = [f"{TMP.format(l)}.weight" for l in (L1, L2)]
INPUT = torch.tensor([[5, 17, 42, 7, 99, 3]])


@pytest.fixture(scope="module")
def adapter():
    easyedit_stubs.install()
    try:
        importlib.import_module("easyeditor")
    except ImportError as e:
        pytest.skip(f"easyeditor is not importable ({e}); CI installs easyeditor==0.0.1.dev0")
    from revive_plugin.easyedit.adapter import ReviveAdapter

    return ReviveAdapter(cache=False)


def _model():
    return tiny_llama(vocab_size=128, num_hidden_layers=4)


def _delta(w: torch.Tensor, seed: int) -> torch.Tensor:
    """A ΔW with most energy in w's dominant directions (REVIVE removes a large part of it)."""
    g = torch.Generator().manual_seed(seed)
    U, S, Vh = torch.linalg.svd(w.double(), full_matrices=False)
    dom = U[:, :3] @ torch.diag(S[:3]) @ Vh[:3]
    return (0.3 * dom + 0.05 * torch.randn(w.shape, generator=g, dtype=torch.float64)).float()


def _keys(model, layer: int) -> torch.Tensor:
    """Input of ``layer``'s down_proj (the keys) and the last layer's output, by one forward pass."""
    seen = {}
    mod = model.get_submodule(TMP.format(layer))
    h = mod.register_forward_hook(lambda m, a, o: seen.__setitem__("k", a[0].detach().clone()))
    try:
        with torch.no_grad():
            out = model(INPUT, output_hidden_states=True)
    finally:
        h.remove()
    return seen["k"][0], out.hidden_states[-1][0].detach().clone()


def _hparams(**over):
    values = dict(alg_name="MEMIT", layers=[L1, L2], rewrite_module_tmp=TMP, use_revive=True, revive_tau=TAU)
    return SimpleNamespace(**{**values, **over})


def fake_host_apply(model, tok, requests, hparams, copy=False, return_orig_weights=False, **kwargs):
    """EasyEdit-like execute + apply: per-layer writes read by later forwards; restore; final ``+=``."""
    from revive_plugin import nethook

    seen = hparams.seen
    weights = {n: nethook.get_parameter(model, n) for n in NAMES}
    copies = {n: w.detach().clone() for n, w in weights.items()}
    deltas = {}
    for i, layer in enumerate(hparams.layers):
        keys, last = _keys(model, layer)
        seen[f"keys{layer}"], seen[f"last{layer}"] = keys, last
        name = NAMES[i]
        upd = _delta(copies[name], seed=layer)
        with torch.no_grad():
            weights[name][...] += upd
        deltas[name] = upd
    cache_c = torch.zeros(2, 64, 64)
    for i, layer in enumerate(hparams.layers):  # AlphaEdit: cache_c from keys after all writes
        k, _ = _keys(model, layer)
        cache_c[i] += k.T @ k
    seen["cache_c"] = cache_c
    with torch.no_grad():
        for n, w in weights.items():
            w[...] = copies[n]  # restore (execute_*)
    weights_copy = {}
    with torch.no_grad():
        for n, upd in deltas.items():  # apply_*: the final write
            w = nethook.get_parameter(model, n)
            if return_orig_weights:
                weights_copy[n] = w.detach().clone()
            w[...] += upd
    return model, weights_copy


def fake_no_forward_apply(model, tok, requests, hparams, copy=False, return_orig_weights=False, **kwargs):
    """Writes both layers and returns: no forward pass after any write (only the after-call sweep can act)."""
    from revive_plugin import nethook

    weights_copy = {}
    with torch.no_grad():
        for i, layer in enumerate(hparams.layers):
            w = nethook.get_parameter(model, NAMES[i])
            if return_orig_weights:
                weights_copy[NAMES[i]] = w.detach().clone()
            w[...] += _delta(w.detach(), seed=layer)
    return model, weights_copy


def _projected_reference(w0: dict, upto: int) -> torch.nn.Module:
    """A fresh model whose first ``upto`` edited layers hold W₀ + P(ΔW) (P from the ORIGINAL weight)."""
    from revive_plugin.projection import DominantBasis

    ref = _model()
    with torch.no_grad():
        for i, layer in enumerate((L1, L2)[:upto]):
            n = NAMES[i]
            basis = DominantBasis.from_weight(w0[n], TAU)
            ref.get_parameter(n).copy_(w0[n] + basis.project(_delta(w0[n], seed=layer)))
    return ref


def test_second_layer_and_accumulated_keys_see_the_projected_first_layer(adapter):
    from revive_plugin.projection import DominantBasis

    model = _model()
    w0 = {n: model.get_parameter(n).detach().clone() for n in NAMES}
    hp = _hparams(seen={})
    wrapped = adapter.wrap(fake_host_apply, "MEMIT")
    _, weights_copy = wrapped(model, None, [{}], hp, copy=False, return_orig_weights=True)

    ref1 = _projected_reference(w0, 1)
    keys2, last2 = _keys(ref1, L2)
    assert torch.allclose(hp.seen[f"keys{L2}"], keys2, atol=1e-5)
    assert torch.allclose(hp.seen[f"last{L2}"], last2, atol=1e-5)
    plain = _model()
    with torch.no_grad():
        plain.get_parameter(NAMES[0]).add_(_delta(w0[NAMES[0]], seed=L1))
    unprojected_keys, _ = _keys(plain, L2)
    assert not torch.allclose(hp.seen[f"keys{L2}"], unprojected_keys, atol=1e-3)  # the check can fail

    ref2 = _projected_reference(w0, 2)
    expected_c = torch.stack([(lambda k: k.T @ k)(_keys(ref2, l)[0]) for l in (L1, L2)])
    assert torch.allclose(hp.seen["cache_c"], expected_c, rtol=1e-4, atol=1e-4)

    for n in NAMES:  # final weights: W₀ + P(ΔW); the host's weights_copy is the exact pre-call weight
        assert torch.equal(weights_copy[n], w0[n])
        assert torch.allclose(model.get_parameter(n), ref2.get_parameter(n), atol=1e-6)
        u, v = DominantBasis.from_weight(w0[n].double(), TAU).leakage((model.get_parameter(n) - w0[n]).double())
        assert u <= 1e-5 and v <= 1e-5
    report = adapter.last_report(model)
    assert report["projection"] == "per-layer"
    assert report["weights"][NAMES[0]]["hook_projections"] >= 1
    # the hooks are gone: the user's own forwards run without them
    for n in NAMES:
        assert not model.get_submodule(n.rpartition(".")[0])._forward_pre_hooks


def test_without_revive_the_host_sees_its_own_unprojected_update(adapter):
    model = _model()
    w0 = {n: model.get_parameter(n).detach().clone() for n in NAMES}
    hp = _hparams(seen={}, use_revive=False)
    adapter.wrap(fake_host_apply, "MEMIT")(model, None, [{}], hp)
    plain = _model()
    with torch.no_grad():
        plain.get_parameter(NAMES[0]).add_(_delta(w0[NAMES[0]], seed=L1))
    assert torch.allclose(hp.seen[f"keys{L2}"], _keys(plain, L2)[0], atol=1e-6)


def test_after_call_fallback_without_a_forward(adapter):
    from revive_plugin.projection import DominantBasis

    model = _model()
    w0 = {n: model.get_parameter(n).detach().clone() for n in NAMES}
    out, weights_copy = adapter.wrap(fake_no_forward_apply, "ROME")(model, None, [{}], _hparams(),
                                                                     return_orig_weights=True)
    assert out is model
    for n in NAMES:
        delta = (model.get_parameter(n) - w0[n]).double()
        assert delta.norm() > 0 and torch.equal(weights_copy[n], w0[n])
        u, v = DominantBasis.from_weight(w0[n].double(), TAU).leakage(delta)
        assert u <= 1e-5 and v <= 1e-5
    report = adapter.last_report(model)
    assert report["projection"] == "after-call"
    assert all(r["hook_projections"] == 0 for r in report["weights"].values())


def test_error_inside_the_host_removes_the_hooks(adapter):
    def failing(model, tok, requests, hparams, **kwargs):
        raise RuntimeError("host failed")

    model = _model()
    with pytest.raises(RuntimeError, match="host failed"):
        adapter.wrap(failing, "MEMIT")(model, None, [{}], _hparams())
    for n in NAMES:
        assert not model.get_submodule(n.rpartition(".")[0])._forward_pre_hooks


def test_null_p_loc_becomes_a_fresh_projector_file_of_this_run(adapter, monkeypatch):
    """AlphaEdit-like host module (get_project + module-global P_loaded): P_loc null → P computed once, saved
    to a new file of this process, and the host told to load it; a host without get_project is a clear error."""
    import types

    host = types.ModuleType("fake_alphaedit_main")
    host.P_loaded, host.calls, host.seen = True, [], []

    def get_project(model, tok, layer, hparams):
        host.calls.append(layer)
        return torch.eye(3) * layer

    def apply_fake(model, tok, requests, hparams, **kwargs):
        host.seen.append((hparams.P_loc, host.P_loaded))
        host.P_loaded = True
        return model, {}

    host.get_project = get_project
    apply_fake.__module__ = host.__name__
    monkeypatch.setitem(sys.modules, host.__name__, host)
    model = torch.nn.Linear(2, 2)
    hp = _hparams(P_loc=None, use_revive=False)
    wrapped = adapter.wrap(apply_fake, "AlphaEdit")
    wrapped(model, None, [{}], hp)
    wrapped(model, None, [{}], hp)
    path = Path(hp.P_loc)
    assert path.is_file() and host.calls == [L1, L2]  # computed once, for the hparams' layers
    assert host.seen == [(str(path), False), (str(path), True)]  # the host loads the new file, then keeps it
    assert torch.equal(torch.load(path), torch.stack([torch.eye(3) * L1, torch.eye(3) * L2]))
    other = _hparams(P_loc=None, use_revive=False)
    wrapped(model, None, [{}], other)
    assert other.P_loc != hp.P_loc and not Path(other.P_loc).samefile(path)  # never an earlier file

    def apply_bare(model, tok, requests, hparams, **kwargs):
        return model, {}

    with pytest.raises(ValueError, match="P_loc is null"):
        adapter.wrap(apply_bare, "AlphaEdit")(model, None, [{}], _hparams(P_loc=None, use_revive=False))
