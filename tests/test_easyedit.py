"""revive_plugin.easyedit against the importable EasyEdit (in CI: the registry wheel easyeditor==0.0.1.dev0).

Set-up: EasyEdit's package import pulls ``torchvision`` and ``timm`` (its multimodal trainers), which
have no CPU build next to torch 2.13 here. ``tests/easyedit_stubs`` provides STUB packages for those
two only when they are missing (any use of them raises); nothing else is stubbed. The wheel's own
ROME/MEMIT hard-code ``cuda:{device}``, so the wrapped-entry tests put a small CPU test method, which
writes a known ΔW with EasyEdit's ``w[...] += upd_matrix`` pattern, under the real ``ALG_DICT["MEMIT"]``
and call it through the real (patched) registry with a real ``MEMITHyperParams`` loaded from YAML.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import subprocess
import sys
import warnings
from copy import deepcopy
from pathlib import Path

import pytest
import torch
import yaml

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
sys.path.insert(0, str(TESTS))
import easyedit_stubs  # noqa: E402  (test-only stubs of torchvision/timm, see its docstring)

sys.path.remove(str(TESTS))

TAU = 0.1
LAYERS = [1, 2]
TMP = "model.layers.{}.mlp.down_proj"


def _import_easyeditor():
    easyedit_stubs.install()
    try:
        import easyeditor  # noqa: F401
    except ImportError as e:
        pytest.skip(f"easyeditor is not importable ({e}); CI installs easyeditor==0.0.1.dev0")
    import easyeditor

    # by module name: easyeditor's star imports rebind the attribute ``easyeditor.util``
    return easyeditor, importlib.import_module("easyeditor.util.alg_dict").ALG_DICT


@pytest.fixture(scope="module")
def ee():
    """revive_plugin.easyedit, enabled, with a memory-only basis cache; disabled afterwards."""
    _import_easyeditor()
    import revive_plugin.easyedit as ree

    ree.enable(cache=False)
    yield ree
    ree.disable()


def _memit_yaml(path: Path, **extra) -> str:
    """A MEMIT YAML with the keys of EasyEdit's MEMIT hparams (wheel and main), for the tiny Llama."""
    cfg = {
        "alg_name": "MEMIT", "model_name": "tiny-llama", "stats_dir": "./data/stats", "device": 0,
        "layers": LAYERS, "clamp_norm_factor": 4, "layer_selection": "all", "fact_token": "subject_last",
        "v_num_grad_steps": 5, "v_lr": 0.5, "v_loss_layer": 3, "v_weight_decay": 0.5, "kl_factor": 0.0625,
        "mom2_adjustment": True, "mom2_update_weight": 15000, "rewrite_module_tmp": TMP,
        "layer_module_tmp": "model.layers.{}", "mlp_module_tmp": "model.layers.{}.mlp",
        "attn_module_tmp": "model.layers.{}.self_attn", "ln_f_module": "model.norm", "lm_head_module": "lm_head",
        "mom2_dataset": "wikipedia", "mom2_n_samples": 1000, "mom2_dtype": "float32", "model_parallel": False,
    }
    cfg.update(extra)
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _known_delta(weight: torch.Tensor, seed: int) -> torch.Tensor:
    """A ΔW with most of its energy in the dominant singular directions of ``weight`` (plus noise)."""
    g = torch.Generator().manual_seed(seed)
    U, S, Vh = torch.linalg.svd(weight.double(), full_matrices=False)
    k = 4
    dominant = U[:, :k] @ torch.diag(S[:k]) @ Vh[:k]
    noise = torch.randn(weight.shape, generator=g, dtype=torch.float64) * S[0] / weight.shape[0] ** 0.5
    return (0.05 * dominant + 0.02 * noise).to(weight.dtype)


def apply_known_delta_to_model(model, tok, requests, hparams, copy=False, return_orig_weights=False,
                               keep_original_weight=False, **kwargs):
    """TEST METHOD with EasyEdit's apply contract: adds a known ΔW to every rewrite weight (``w[...] +=``)."""
    if copy:
        model = deepcopy(model)
    weights_copy = {}
    with torch.no_grad():
        for layer in hparams.layers:
            name = f"{hparams.rewrite_module_tmp.format(layer)}.weight"
            w = model.get_parameter(name)
            if return_orig_weights and name not in weights_copy:
                weights_copy[name] = w.detach().clone()
            w[...] += _known_delta(w.detach(), seed=layer + 100 * len(requests))
    return model, weights_copy


@pytest.fixture
def memit_entry(ee, monkeypatch):
    """The real ALG_DICT with the CPU test method as its MEMIT entry, wrapped by enable()."""
    _, alg = _import_easyeditor()
    ee.disable()
    monkeypatch.setitem(alg, "MEMIT", apply_known_delta_to_model)
    ee.enable(cache=False)
    yield alg
    ee.disable()
    assert alg["MEMIT"] is apply_known_delta_to_model
    monkeypatch.undo()
    ee.enable(cache=False)


@pytest.fixture
def hparams(ee, tmp_path):
    from easyeditor import MEMITHyperParams

    def make(**extra):
        return MEMITHyperParams.from_hparams(_memit_yaml(tmp_path / f"memit-{len(extra)}-{id(extra)}.yaml", **extra))

    return make


def _leakage(w0: torch.Tensor, delta: torch.Tensor, tau: float = TAU) -> tuple[float, float]:
    from revive_plugin.projection import DominantBasis

    return DominantBasis.from_weight(w0.double(), tau).leakage(delta.double())


def _names():
    return [f"{TMP.format(l)}.weight" for l in LAYERS]


REQ = [{"prompt": "The Eiffel Tower is in", "subject": "Eiffel Tower", "target_new": "Rome"}]


# ---------------------------------------------------------------------------- activation
def test_core_import_does_not_import_easyedit():
    code = "import sys, revive_plugin; sys.exit(1 if 'easyeditor' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0


def test_clear_error_without_easyedit():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'easyeditor' or name.startswith('easyeditor.'):\n"
        "            raise ModuleNotFoundError(\"No module named 'easyeditor'\")\n"
        "sys.meta_path.insert(0, Block())\n"
        "import revive_plugin.easyedit\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert r.returncode != 0
    assert "EasyEditNotFoundError" in r.stderr and "needs EasyEdit" in r.stderr, r.stderr[-2000:]


def test_enable_is_idempotent_and_disable_restores_host_exactly(ee):
    easyeditor, alg = _import_easyeditor()
    base = sys.modules["easyeditor.util.hparams"].HyperParams
    ee.disable()
    entries = dict(alg)
    from revive_plugin.easyedit.host import import_host

    classes = [base, *import_host().hparams_classes()]
    class_dicts = {c: dict(c.__dict__) for c in classes}
    pkg_attrs = set(vars(easyeditor))

    ee.enable(cache=False)
    wrapped = {n: alg[n] for n in alg}
    ee.enable(cache=False)  # idempotent: nothing re-wrapped
    assert all(alg[n] is wrapped[n] for n in alg)
    assert alg["MEMIT"] is not entries["MEMIT"] and alg["MEMIT"].__revive_original__ is entries["MEMIT"]
    assert "RECT" in alg and "PRUNE" in alg and "NSE" in alg
    for name in ("FT", "KN", "IKE", "LoRA"):
        assert alg[name] is entries[name]  # non locate-then-edit entries untouched
    assert ee.status()["enabled"] and "MEMIT" in ee.status()["wrapped"]

    ee.disable()
    assert set(alg) == set(entries) and all(alg[n] is entries[n] for n in entries)
    for c in classes:
        assert dict(c.__dict__) == class_dicts[c], c
    assert set(vars(easyeditor)) == pkg_attrs
    assert not ee.is_enabled()
    ee.enable(cache=False)


# ---------------------------------------------------------------------------- hparams
def test_yaml_with_new_keys_loads(hparams):
    hp = hparams(use_revive=True, revive_tau=0.2)
    assert hp.use_revive is True and hp.revive_tau == 0.2 and hp.layers == LAYERS


def test_yaml_without_keys_is_unchanged(ee, tmp_path):
    from easyeditor import MEMITHyperParams

    path = _memit_yaml(tmp_path / "plain.yaml")
    patched = MEMITHyperParams.from_hparams(path)
    ee.disable()
    try:
        original = MEMITHyperParams.from_hparams(path)
    finally:
        ee.enable(cache=False)
    assert dataclasses.asdict(patched) == dataclasses.asdict(original)
    assert vars(patched) == vars(original)
    assert patched.use_revive is False and patched.revive_tau == TAU  # class-level defaults


@pytest.mark.parametrize(
    "extra, key",
    [({"revive_tau": 1.5}, "revive_tau"), ({"revive_tau": 0}, "revive_tau"), ({"revive_tau": "abc"}, "revive_tau"),
     ({"use_revive": "maybe"}, "use_revive"), ({"use_revive": 1}, "use_revive")],
)
def test_bad_values_name_file_and_key(ee, tmp_path, extra, key):
    from easyeditor import MEMITHyperParams

    path = _memit_yaml(tmp_path / "bad.yaml", **extra)
    with pytest.raises(ValueError) as err:
        MEMITHyperParams.from_hparams(path)
    assert path in str(err.value) and key in str(err.value)


def test_every_host_hparams_class_accepts_the_keys(ee):
    for cls in ee.PLUGIN.host.hparams_classes():
        init = cls.__init__
        assert getattr(init, "__revive_original__", None) is not None or "use_revive" in getattr(
            cls, "__dataclass_fields__", {}
        ), cls


# ---------------------------------------------------------------------------- the wrapped entry
def test_wrapped_entry_projects_and_restores(memit_entry, hparams, small_model):
    import revive_plugin.easyedit as ree

    model, tok = small_model
    w0 = {n: model.get_parameter(n).detach().clone() for n in _names()}
    out_model, weights_copy = memit_entry["MEMIT"](model, tok, REQ, hparams(use_revive=True, revive_tau=TAU),
                                                   copy=False, return_orig_weights=True)
    assert out_model is model
    for n in _names():
        delta = model.get_parameter(n).detach() - w0[n]
        assert delta.norm() > 0
        u, v = _leakage(w0[n], delta)
        assert u <= 1e-5 and v <= 1e-5, (n, u, v)
        assert torch.equal(weights_copy[n], w0[n])
    report = ree.last_report(model)
    assert report["alg_name"] == "MEMIT" and set(report["weights"]) == set(_names())
    with torch.no_grad():  # EasyEdit's non-sequential restore
        for k, v in weights_copy.items():
            model.get_parameter(k)[...] = v
    assert all(torch.equal(model.get_parameter(n), w0[n]) for n in _names())


def test_without_revive_bit_identical_and_not_projected(memit_entry, hparams, small_model):
    model, tok = small_model
    ref = deepcopy(model)
    twin = {n: model.get_parameter(n).detach().clone() for n in _names()}
    hp = hparams()
    memit_entry["MEMIT"](model, tok, REQ, hp, copy=False, return_orig_weights=True)
    apply_known_delta_to_model(ref, tok, REQ, hp)  # the unwrapped method on an identical model
    for n in _names():
        assert torch.equal(model.get_parameter(n), ref.get_parameter(n))  # bit-identical to the unwrapped method
        u, v = _leakage(twin[n], model.get_parameter(n).detach() - twin[n])
        assert u > 0.1 and v > 0.1


def test_copy_true_edits_and_projects_the_copy(memit_entry, hparams, small_model):
    model, tok = small_model
    w0 = {n: model.get_parameter(n).detach().clone() for n in _names()}
    edited, _ = memit_entry["MEMIT"](model, tok, REQ, hparams(use_revive=True), copy=True)
    assert edited is not model
    for n in _names():
        assert torch.equal(model.get_parameter(n), w0[n])
        delta = edited.get_parameter(n).detach() - w0[n]
        u, v = _leakage(w0[n], delta)
        assert delta.norm() > 0 and u <= 1e-5 and v <= 1e-5


def test_sequence_keeps_original_basis(memit_entry, hparams, small_model):
    import revive_plugin.easyedit as ree
    from revive_plugin.cache import weight_fingerprint

    model, tok = small_model
    hp = hparams(use_revive=True)
    w0 = {n: model.get_parameter(n).detach().clone() for n in _names()}
    memit_entry["MEMIT"](model, tok, REQ, hp)
    w1 = {n: model.get_parameter(n).detach().clone() for n in _names()}
    memit_entry["MEMIT"](model, tok, REQ * 2, hp)
    rev = ree.reviver_for(model)
    for n in _names():
        assert rev.state_dict()["params"][n]["fingerprint"] == weight_fingerprint(w0[n])
        u, v = _leakage(w0[n], model.get_parameter(n).detach() - w1[n])
        assert u <= 1e-5 and v <= 1e-5
        u_total, v_total = _leakage(w0[n], model.get_parameter(n).detach() - w0[n])
        assert u_total <= 1e-5 and v_total <= 1e-5


def test_warns_when_switched_on_after_plain_edits_and_accepts_originals(memit_entry, hparams, small_model, tmp_path):
    import revive_plugin.easyedit as ree
    from revive_plugin.cache import weight_fingerprint

    model, tok = small_model
    w0 = {n: model.get_parameter(n).detach().clone() for n in _names()}
    memit_entry["MEMIT"](model, tok, REQ, hparams())  # plain edit, kept
    w1 = {n: model.get_parameter(n).detach().clone() for n in _names()}
    with pytest.warns(ree.ReviveOriginalsWarning, match="set_original_weights"):
        memit_entry["MEMIT"](model, tok, REQ, hparams(use_revive=True))

    ree.forget(model)
    with torch.no_grad():
        for n in _names():
            model.get_parameter(n).copy_(w1[n])
    from safetensors.torch import save_file

    save_file({n.removeprefix("model."): t for n, t in w0.items()}, str(tmp_path / "orig.safetensors"))
    ree.set_original_weights(model, tmp_path / "orig.safetensors")  # checkpoint keys without the "model." prefix
    with warnings.catch_warnings():
        warnings.simplefilter("error", ree.ReviveOriginalsWarning)
        memit_entry["MEMIT"](model, tok, REQ, hparams(use_revive=True))
    rev = ree.reviver_for(model)
    for n in _names():
        assert rev.state_dict()["params"][n]["fingerprint"] == weight_fingerprint(w0[n])
        u, v = _leakage(w0[n], model.get_parameter(n).detach() - w1[n])
        assert u <= 1e-5 and v <= 1e-5


def test_unknown_rewrite_module_is_a_clear_error_and_leaves_weights(memit_entry, hparams, small_model):
    model, tok = small_model
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(KeyError, match="no parameter named"):
        memit_entry["MEMIT"](model, tok, REQ, hparams(use_revive=True, rewrite_module_tmp="model.layers.{}.mlp.nope"))
    assert all(torch.equal(p, w0[n]) for n, p in model.named_parameters())


@pytest.mark.skipif(os.environ.get("REVIVE_SKIP_SLOW") == "1", reason="REVIVE_SKIP_SLOW=1")
def test_project_method_registered_in_host(ee, small_model, tmp_path):
    """This project's RECT, reached through the host's ALG_DICT, runs on CPU and honours use_revive."""
    from revive_plugin.editing import RECTHyperParams

    _, alg = _import_easyeditor()
    model, tok = small_model
    names = _names()
    w0 = {n: model.get_parameter(n).detach().clone() for n in names}
    hp = RECTHyperParams(alg_name="RECT", model_name="tiny", stats_dir=str(tmp_path / "stats"), layers=LAYERS,
                         v_num_grad_steps=3, mom2_n_samples=20, use_revive=True, revive_tau=TAU)
    texts = ["The city of Paris is the capital of France.", "Rome is a city in Italy with a long history."] * 10
    alg["RECT"](model, tok, REQ, hp, copy=False, return_orig_weights=True, stats_texts=texts)
    for n in names:
        delta = model.get_parameter(n).detach() - w0[n]
        assert delta.norm() > 0
        u, v = _leakage(w0[n], delta)
        assert u <= 1e-5 and v <= 1e-5


@pytest.mark.parametrize("method", ["MEMIT", "AlphaEdit", "RECT", "PRUNE", "NSE", "DeltaEdit"])
def test_paper_model_yamls_load(ee, method):
    """hparams/<METHOD>/{gpt2-xl,gpt-j-6b,llama3-8b}.yaml load with REVIVE on, in the project and in the host."""
    import easyeditor
    from revive_plugin.editing import load_hparams

    expected = {"gpt2-xl": ("transformer.h.{}.mlp.c_proj", [13, 14, 15, 16, 17]),
                "gpt-j-6b": ("transformer.h.{}.mlp.fc_out", [3, 4, 5, 6, 7, 8]),
                "llama3-8b": ("model.layers.{}.mlp.down_proj", [4, 5, 6, 7, 8])}
    for model, (tmp, layers) in expected.items():
        hp = load_hparams(method, model=model)
        assert (hp.alg_name, hp.rewrite_module_tmp, hp.layers) == (method, tmp, layers)
        assert hp.use_revive is True and hp.revive_tau == TAU
        host_cls = getattr(easyeditor, f"{method}HyperParams")  # EasyEdit's own, or ours registered by enable()
        hh = host_cls.from_hparams(str(REPO / "revive_plugin" / "hparams" / method / model))
        assert (hh.rewrite_module_tmp, hh.layers, hh.use_revive, hh.revive_tau) == (tmp, layers, True, TAU)


# Fields of EasyEdit main's (14cea82) hparams classes for the host methods this project ships YAMLs for:
# its from_hparams calls cls(**yaml), so any other key is a TypeError there (REVIVE's two keys are taught
# to every host class by the plugin).
HOST_MAIN_FIELDS = {
    "MEMIT": {"layers", "layer_selection", "fact_token", "v_num_grad_steps", "v_lr", "v_loss_layer",
              "v_weight_decay", "clamp_norm_factor", "kl_factor", "mom2_adjustment", "mom2_update_weight",
              "rewrite_module_tmp", "layer_module_tmp", "mlp_module_tmp", "attn_module_tmp", "ln_f_module",
              "lm_head_module", "mom2_dataset", "mom2_n_samples", "mom2_dtype", "alg_name", "device",
              "model_name", "stats_dir", "max_length", "batch_size", "model_parallel"},
}
HOST_MAIN_FIELDS["AlphaEdit"] = HOST_MAIN_FIELDS["MEMIT"] | {"nullspace_threshold", "L2", "P_loc"}


@pytest.mark.parametrize("method", sorted(HOST_MAIN_FIELDS))
def test_host_method_yamls_carry_only_host_keys_and_load(ee, method):
    """Every hparams/<host method>/*.yaml: no key EasyEdit main's class rejects; loads in the importable host."""
    import easyeditor

    host_cls = getattr(easyeditor, f"{method}HyperParams")  # the host's own, or ours registered by enable()
    files = sorted((REPO / "revive_plugin" / "hparams" / method).glob("*.yaml"))
    assert files
    for path in files:
        keys = set(yaml.safe_load(path.read_text()))
        extra = keys - HOST_MAIN_FIELDS[method] - {"use_revive", "revive_tau"}
        assert not extra, f"{path.name}: keys EasyEdit main's {method}HyperParams rejects: {sorted(extra)}"
        hp = host_cls.from_hparams(str(path))
        assert hp.use_revive is True and hp.alg_name == method
    if method == "AlphaEdit":
        assert all(yaml.safe_load(p.read_text())["P_loc"] is None for p in files)  # never an earlier run's pickle
