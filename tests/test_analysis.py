"""Tests for revive_plugin.analysis: the §2 experiments, drift loading, plots and the CLI."""

import json
import math

import pytest
import torch

from revive_plugin.analysis import (
    Target,
    drift_report,
    load_edited_weights,
    resolve_targets,
    run_group_perturbation,
    run_reconstruction,
)
from revive_plugin.analysis.targets import parse_layers, restored
from revive_plugin.spectral import SpectralReference, energy_groups, energy_reconstruction
from tiny_edits import tiny_llama

LAYERS = [1, 2]
NAMES = [f"model.layers.{i}.mlp.down_proj.weight" for i in LAYERS]


@pytest.fixture
def tiny():
    """A 3-layer random Llama with a 96-token vocabulary (no tokenizer needed)."""
    return tiny_llama(vocab_size=96, num_hidden_layers=3, intermediate_size=48)


class FakeAbility:
    """Perplexity of fixed random tokens; records the target weights seen at every call."""

    def __init__(self, names, fail_on_call=None):
        self.ids = torch.randint(0, 96, (2, 12), generator=torch.Generator().manual_seed(1))
        self.names = names
        self.seen = []
        self.fail_on_call = fail_on_call

    def __call__(self, model, tok):
        params = dict(model.named_parameters())
        self.seen.append({n: params[n].detach().clone() for n in self.names})
        if self.fail_on_call is not None and len(self.seen) == self.fail_on_call:
            raise RuntimeError("ability failed")
        with torch.no_grad():
            loss = model(input_ids=self.ids, labels=self.ids).loss
        return {"perplexity": math.exp(float(loss)), "accuracy": 1.0 / (1.0 + float(loss))}


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _same(a, b):
    return all(torch.equal(a[n], b[n]) for n in a)


def test_parse_layers_and_resolve_targets(tiny):
    assert parse_layers("4-6,9") == [4, 5, 6, 9]
    assert parse_layers([2, 1, 2]) == [1, 2]
    with pytest.raises(ValueError):
        parse_layers("a-b")
    targets = resolve_targets(tiny, "1-2")
    assert [t.name for t in targets] == NAMES and not any(t.transposed for t in targets)
    with pytest.raises(ValueError, match="not found"):
        resolve_targets(tiny, [7])
    with pytest.raises(ValueError, match="not a matrix"):
        resolve_targets(tiny, [0], params=["model.norm.weight"])


def test_restored_puts_weights_back_on_error(tiny):
    before = _weights(tiny)
    with pytest.raises(RuntimeError):
        with restored(tiny, NAMES):
            with torch.no_grad():
                dict(tiny.named_parameters())[NAMES[0]].mul_(3.0)
            raise RuntimeError("boom")
    assert _same(before, _weights(tiny))


def test_reconstruction_experiment(tiny):
    before = _weights(tiny)
    fake = FakeAbility(NAMES)
    targets = [Target(n) for n in NAMES]
    result = run_reconstruction(tiny, None, targets, fake, fractions=[0.1, 0.5, 1.0], progress=False)
    assert _same(before, _weights(tiny))
    assert [r["fraction"] for r in result["results"]] == [0.1, 0.5, 1.0]
    # Call 0 is the baseline; call i (i >= 1) saw the reconstruction at fractions[i-1].
    for i, frac in enumerate([0.1, 0.5, 1.0], start=1):
        for n in NAMES:
            expected = energy_reconstruction(before[n], frac)
            assert torch.allclose(fake.seen[i][n], expected, atol=1e-5)
            k = result["results"][i - 1]["ranks"][n]
            assert torch.linalg.matrix_rank(fake.seen[i][n], rtol=1e-4).item() == k
    full = result["results"][-1]
    assert full["metrics"]["perplexity"] == pytest.approx(result["baseline"]["perplexity"], rel=1e-4)
    assert full["drop"]["perplexity"] == pytest.approx(0.0, abs=1e-3)
    assert result["results"][0]["ranks"][NAMES[0]] < full["ranks"][NAMES[0]] == 32
    json.dumps(result)


def test_reconstruction_restores_weights_when_ability_fails(tiny):
    before = _weights(tiny)
    with pytest.raises(RuntimeError):
        run_reconstruction(tiny, None, [Target(n) for n in NAMES], FakeAbility(NAMES, fail_on_call=3),
                           fractions=[0.1, 0.5, 1.0], progress=False)
    assert _same(before, _weights(tiny))


@pytest.mark.parametrize("side", ["input", "output"])
def test_group_perturbation_experiment(tiny, side):
    before = _weights(tiny)
    fake = FakeAbility(NAMES)
    targets = [Target(n) for n in NAMES]
    result = run_group_perturbation(tiny, None, targets, fake, eps_relative=0.2, seeds=[0, 1], side=side,
                                    groups=[0, 9], progress=False)
    assert _same(before, _weights(tiny))
    assert [(r["group"], r["seed"]) for r in result["runs"]] == [(0, 0), (0, 1), (9, 0), (9, 1)]
    for call, run in zip(fake.seen[1:], result["runs"]):
        for n in NAMES:
            W0 = before[n].double()
            delta = call[n].double() - W0
            assert float(delta.norm()) == pytest.approx(0.2 * float(W0.norm()), rel=1e-4)
            U, S, Vh = torch.linalg.svd(W0)
            coeff = U.T @ delta @ Vh.T
            group = list(energy_groups(S, 10)[run["group"]])
            mask = torch.zeros(coeff.shape[1] if side == "input" else coeff.shape[0], dtype=torch.bool)
            mask[group] = True
            outside = coeff[:, ~mask] if side == "input" else coeff[~mask, :]
            assert outside.abs().max().item() < 1e-4 * float(delta.norm())
    for g in result["groups"]:
        assert set(g["drop"]) == {"perplexity", "accuracy"}
        assert g["drop"]["perplexity"]["std"] >= 0.0
    drops = [r["drop"]["perplexity"] for r in result["runs"]]
    assert all(math.isfinite(d) for d in drops)
    json.dumps(result)


def test_group_perturbation_is_reproducible_and_validates(tiny):
    targets = [Target(n) for n in NAMES]
    a = run_group_perturbation(tiny, None, targets, FakeAbility(NAMES), eps=0.5, seeds=[3], groups=[1],
                               progress=False)
    b = run_group_perturbation(tiny, None, targets, FakeAbility(NAMES), eps=0.5, seeds=[3], groups=[1],
                               progress=False)
    assert a["runs"][0]["metrics"] == b["runs"][0]["metrics"]
    with pytest.raises(ValueError, match="exactly one"):
        run_group_perturbation(tiny, None, targets, FakeAbility(NAMES), progress=False)
    with pytest.raises(ValueError, match="group indices"):
        run_group_perturbation(tiny, None, targets, FakeAbility(NAMES), eps=1.0, groups=[10], progress=False)


def test_transposed_target_perturbs_the_math_orientation():
    """Conv1D-style storage (in, out): input directions are the stored matrix's left vectors."""
    model = torch.nn.Module()
    stored = torch.randn(20, 12, generator=torch.Generator().manual_seed(2))
    model.w = torch.nn.Parameter(stored.clone(), requires_grad=False)
    fake_seen = []

    def ability(m, tok):
        fake_seen.append(m.w.detach().clone())
        return {"perplexity": 1.0}

    run_group_perturbation(model, None, [Target("w", transposed=True)], ability, eps=1.0, seeds=[0],
                           groups=[0], progress=False)
    W = stored.T.double()  # math orientation: (out=12, in=20)
    U, S, Vh = torch.linalg.svd(W)
    coeff = U.T @ (fake_seen[1].T.double() - W) @ Vh.T
    group = list(energy_groups(S, 10)[0])
    rest = [j for j in range(coeff.shape[1]) if j not in group]
    assert coeff[:, rest].abs().max().item() < 1e-5
    assert torch.equal(model.w, stored)


def _save(tensors, path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def test_load_edited_weights_sources(tmp_path, tiny):
    params = _weights(tiny)
    _save({NAMES[0]: params[NAMES[0]] + 1}, tmp_path / "edit.safetensors")
    got = load_edited_weights(tmp_path / "edit.safetensors", NAMES)
    assert set(got) == {NAMES[0]} and torch.equal(got[NAMES[0]], params[NAMES[0]] + 1)
    prefixed = tmp_path / "prefixed"
    prefixed.mkdir()
    _save({"base_model." + NAMES[1]: params[NAMES[1]]}, prefixed / "model.safetensors")
    assert set(load_edited_weights(prefixed, NAMES)) == {NAMES[1]}
    arm = tmp_path / "arm"
    (arm / "state" / "round-00003").mkdir(parents=True)
    _save({NAMES[0]: params[NAMES[0]]}, arm / "state" / "round-00003" / "params.safetensors")
    (arm / "progress.json").write_text(json.dumps({"state_dir": "state/round-00003"}))
    assert set(load_edited_weights(arm, NAMES)) == {NAMES[0]}
    from revive_plugin.analysis.drift import round_label

    assert round_label(arm, 1) == 3
    assert round_label(tmp_path / "round_20.safetensors", 1) == 20
    (tmp_path / "w.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="pickle"):
        load_edited_weights(tmp_path / "w.bin", NAMES)
    with pytest.raises(FileNotFoundError):
        load_edited_weights(tmp_path / "missing", NAMES)


def test_drift_report_tracks_growing_perturbation(tiny):
    params = _weights(tiny)
    originals = {n: params[n] for n in NAMES}
    g = torch.Generator().manual_seed(0)
    noise = {n: torch.randn(originals[n].shape, generator=g) for n in NAMES}
    checkpoints = [(r, {n: originals[n] + 0.05 * r * noise[n] * originals[n].norm() / noise[n].norm()
                        for n in NAMES}) for r in (0, 2, 4, 8)]
    result = drift_report(originals, checkpoints, [Target(n) for n in NAMES], tau=0.1, progress=False)
    assert result["rounds"] == [0, 2, 4, 8]
    for n in NAMES:
        rows = result["reports"][n]
        assert rows[0]["ls"] == pytest.approx(1.0, abs=1e-5)
        assert rows[0]["ss_right_min_max"] == pytest.approx(1.0, abs=1e-4)
        ls = [r["ls"] for r in rows]
        assert ls == sorted(ls, reverse=True) and ls[-1] < 0.99
        assert rows[-1]["norm_growth"] > 1.0
        k = int(rows[0]["k_w0"])
        assert result["matrices"][n][8]["right"].shape == (k, 32)
    with pytest.raises(ValueError, match="no original"):
        drift_report({}, checkpoints, [Target(NAMES[0])], progress=False)


def test_plots_write_pngs(tmp_path, tiny):
    from revive_plugin.analysis import plots

    targets = [Target(n) for n in NAMES]
    rec = run_reconstruction(tiny, None, targets, FakeAbility(NAMES), fractions=[0.2, 1.0], progress=False)
    per = run_group_perturbation(tiny, None, targets, FakeAbility(NAMES), eps_relative=0.1, seeds=[0, 1],
                                 groups=[0, 5], progress=False)
    params = _weights(tiny)
    originals = {n: params[n] for n in NAMES}
    dr = drift_report(originals, [(1, originals), (2, {n: 1.5 * originals[n] for n in NAMES})], targets,
                      progress=False)
    mats = {r: m["right"] for r, m in dr["matrices"][NAMES[0]].items()}
    paths = [
        plots.plot_reconstruction(rec, tmp_path / "rec.png"),
        plots.plot_group_perturbation(per, tmp_path / "per.png"),
        plots.plot_ls_rounds(dr, tmp_path / "ls.png"),
        plots.plot_drift_summary(dr, tmp_path / "sum.png"),
        plots.plot_ss_heatmaps(mats, tmp_path / "heat.png", "SS"),
        plots.plot_ss_max(dr["reports"][NAMES[0]], tmp_path / "max.png", "right", "SS max"),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_commands_end_to_end(tmp_path, tiny, monkeypatch):
    from revive_plugin.analysis import cli

    monkeypatch.setattr(cli, "_load", lambda args: (tiny, None))
    monkeypatch.setattr(cli, "_ability", lambda model, tok, args: FakeAbility(NAMES))
    before = _weights(tiny)
    out = tmp_path / "out"
    assert cli.main(["reconstruct", "--layers", "1-2", "--fractions", "0.3,1", "--out", str(out), "--quiet"]) == 0
    assert cli.main(["perturb", "--layers", "1,2", "--seeds", "0,1", "--groups", "0,9", "--side", "both",
                     "--eps-relative", "0.2", "--out", str(out), "--quiet"]) == 0
    assert _same(before, _weights(tiny))
    for name in ("reconstruct.json", "reconstruct.png", "perturb_input.json", "perturb_output.png"):
        assert (out / name).stat().st_size > 0
    per = json.loads((out / "perturb_input.json").read_text())
    assert per["eps_relative"] == 0.2 and [g["group"] for g in per["groups"]] == [0, 9]

    edited = {n: before[n] + 0.1 * torch.randn(before[n].shape) for n in NAMES[:1]}
    _save(edited, tmp_path / "round_5.safetensors")
    _save({n: before[n] + 0.3 * torch.randn(before[n].shape) for n in NAMES[:1]}, tmp_path / "round_10.safetensors")
    assert cli.main(["drift", "--edited", str(tmp_path / "round_10.safetensors"), str(tmp_path / "round_5.safetensors"),
                     "--out", str(out), "--quiet", "--save-matrices"]) == 0
    drift = json.loads((out / "drift.json").read_text())
    assert drift["params"] == NAMES[:1] and drift["rounds"] == [5, 10]
    slug = "model_layers_1_mlp_down_proj"
    for name in ("ls_vs_round.png", "drift_summary.png", f"ss_right_heatmap_{slug}.png",
                 f"ss_left_max_{slug}.png", "ss_matrices.safetensors"):
        assert (out / name).stat().st_size > 0
    assert cli.main(["drift", "--edited", str(tmp_path / "nothing.safetensors"), "--out", str(out)]) == 2


def test_cli_registers_analyze_subcommand():
    import argparse

    from revive_plugin.analysis.cli import add_parser

    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["analyze", "perturb", "--out", "x", "--eps", "2.5", "--side", "output"])
    assert args.eps == 2.5 and args.side == "output" and callable(args.func)
    for action in parser._subparsers._group_actions[0].choices["analyze"]._subparsers._group_actions[0].choices.values():
        for a in action._actions:
            assert a.help, f"missing --help text for {a.dest}"


def test_spectral_reference_on_bundled_down_proj(bundled_model):
    """The real FFN matrix: LS/SS are 1 against itself and group 0 is the Eq. 5 dominant set."""
    from revive_plugin.spectral import spectral_report

    model, _ = bundled_model
    W = dict(model.named_parameters())["model.layers.4.mlp.down_proj.weight"].detach()
    ref = SpectralReference.from_weight(W, tau=0.1)
    rep = spectral_report(ref, W.clone())
    assert rep["ls"] == pytest.approx(1.0, abs=1e-5) and rep["ss_right_min_max"] == pytest.approx(1.0, abs=1e-3)
    assert len(energy_groups(ref.S)[0]) == ref.k


def test_make_ability_fn_uses_project_perplexity(small_model):
    from revive_plugin.analysis.ability import degradation, lower_is_better, make_ability_fn

    model, tok = small_model
    fn = make_ability_fn(model, tok, texts=["The river flows to the sea.", "Paris is a city in France."],
                         probe=False, batch_size=2, max_length=16)
    out = fn(model, tok)
    assert set(out) == {"perplexity"} and math.isfinite(out["perplexity"]) and out["perplexity"] > 1.0
    assert lower_is_better("perplexity") and not lower_is_better("knowledge")
    assert degradation("perplexity", 10.0, 12.0) == 2.0 and degradation("knowledge", 0.9, 0.6) == pytest.approx(0.3)


def test_merge_perturbation_results_across_seed_batches(tiny):
    from revive_plugin.analysis import merge_perturbation_results

    targets = [Target(n) for n in NAMES]
    kw = dict(eps_relative=0.2, groups=[0, 9], progress=False)
    a = run_group_perturbation(tiny, None, targets, FakeAbility(NAMES), seeds=[0], **kw)
    b = run_group_perturbation(tiny, None, targets, FakeAbility(NAMES), seeds=[1], **kw)
    both = run_group_perturbation(tiny, None, targets, FakeAbility(NAMES), seeds=[0, 1], **kw)
    merged = merge_perturbation_results(json.loads(json.dumps(a)), b)
    assert merged["seeds"] == [0, 1]
    for gm, gb in zip(merged["groups"], both["groups"]):
        assert gm["drop"]["perplexity"]["mean"] == pytest.approx(gb["drop"]["perplexity"]["mean"])
        assert gm["components"] == gb["components"]
    with pytest.raises(ValueError, match="repeated seeds"):
        merge_perturbation_results(a, a)
    c = run_group_perturbation(tiny, None, targets, FakeAbility(NAMES), seeds=[2], side="output", **kw)
    with pytest.raises(ValueError, match="side"):
        merge_perturbation_results(a, c)
