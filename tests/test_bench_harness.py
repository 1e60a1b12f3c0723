"""Benchmark harness (revive bench) against small fakes: outputs, resume, alarm, bad input, CLI."""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from revive_plugin.bench import BenchConfig, BenchRun, DriftAlarm, preset_config, run_bench
from revive_plugin.bench import cli as bench_cli
from revive_plugin.bench.config import ALL_METHODS


# ----------------------------------------------------------------------------- fakes
class FakeModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.layers = torch.nn.ModuleList([torch.nn.Linear(12, 10, bias=False) for _ in range(3)])
        with torch.no_grad():
            for lin in self.layers:
                lin.weight.copy_(torch.randn(10, 12, generator=g))
        self.requires_grad_(False)


class FakeEditor:
    """Adds seeded random low-rank deltas; with REVIVE projects them off the original top subspace
    (bases from the weights at the first edit, like the real Reviver). Keeps the edited case ids."""

    interrupt_at_call = None  # (arm-independent) raise KeyboardInterrupt on this edit() call number

    def __init__(self, method, model, revive_tau, calls):
        self.model, self.tau, self.calls = model, revive_tau, calls
        self.edited_params = ["layers.1.weight", "layers.2.weight"]
        self.scale = {"MEMIT": 1.0, "AlphaEdit": 0.5}.get(method, 0.8)
        self.applied: list[int] = []
        self.bases: dict[str, torch.Tensor] = {}
        self.cache = torch.zeros(12, 12)

    def _param(self, name):
        return dict(self.model.named_parameters())[name]

    def edit(self, requests):
        self.calls.append(len(requests))
        if FakeEditor.interrupt_at_call is not None and len(self.calls) == FakeEditor.interrupt_at_call:
            # half of the round is applied when the process dies
            with torch.no_grad():
                self._param(self.edited_params[0]).add_(1.0)
            raise KeyboardInterrupt
        info = {"revive": {"projection_s": 0.0}}
        for name in self.edited_params:
            p = self._param(name)
            if self.tau is not None and name not in self.bases:
                U, S, Vh = torch.linalg.svd(p.detach().double(), full_matrices=False)
                k = max(1, int(self.tau * 10))
                self.bases[name] = torch.cat([U[:, :k].flatten(), Vh[:k].flatten()]).float()
            delta = self.scale * 0.05 * torch.randn(10, 2) @ torch.randn(2, 12) * len(requests)
            if self.tau is not None:
                k = max(1, int(self.tau * 10))
                b = self.bases[name]
                U, V = b[: 10 * k].view(10, k), b[10 * k:].view(k, 12).T
                delta = delta - U @ (U.T @ delta) - (delta - U @ (U.T @ delta)) @ V @ V.T
            with torch.no_grad():
                p.add_(delta)
        x = torch.randn(12, len(requests))
        self.cache += x @ x.T
        self.applied += [r["case_id"] for r in requests]
        return info

    def save(self, d):
        d = Path(d)
        d.mkdir(parents=True, exist_ok=True)
        save_file({"cache": self.cache, **{f"basis.{k}": v for k, v in self.bases.items()}}, str(d / "state.safetensors"))
        (d / "state.json").write_text(json.dumps({"applied": self.applied}))

    def load(self, d):
        d = Path(d)
        t = load_file(str(d / "state.safetensors"))
        self.cache = t["cache"]
        self.bases = {k[len("basis."):]: v for k, v in t.items() if k.startswith("basis.")}
        self.applied = json.loads((d / "state.json").read_text())["applied"]


class FakeGeneral:
    def evaluate(self, model, tok):
        w = model.layers[1].weight
        return {"glue_sst2": float(torch.sigmoid(-w.norm() / 20)), "glue_rte": 0.5,
                "glue_avg": float((torch.sigmoid(-w.norm() / 20) + 0.5) / 2), "ppl": float(10 + w.norm()),
                "probe": float(torch.sigmoid(-model.layers[2].weight.norm() / 20))}


class FakeComponents:
    def __init__(self, n_records=40):
        self.n_records = n_records
        self.calls: list[int] = []
        self.editors: list[FakeEditor] = []
        self.loads = 0

    def known_methods(self):
        return list(ALL_METHODS)

    def load_records(self, cfg):
        return [{"case_id": i, "requested_rewrite": {"prompt": "{} is in", "subject": f"S{i}",
                                                     "target_new": {"str": "A"}, "target_true": {"str": "B"}},
                 "paraphrase_prompts": ["p1", "p2", "p3"], "neighborhood_prompts": ["n1", "n2", "n3"]}
                for i in range(self.n_records)]

    def resolve_hparams(self, cfg, method):
        return {"method": method, "layers": [1, 2], **cfg.hparams_overrides}

    def load_model(self, cfg):
        self.loads += 1
        return FakeModel(), None

    def make_editor(self, cfg, method, model, tok, revive_tau=None):
        ed = FakeEditor(method, model, revive_tau, self.calls)
        self.editors.append(ed)
        return ed

    def get_param(self, model, name):
        return dict(model.named_parameters())[name]

    def evaluate_edits(self, cfg, model, tok, records, generation):
        assert all(len(r["paraphrase_prompts"]) <= max(1, cfg.n_paraphrase or 3) for r in records)
        w = model.layers[2].weight
        out = {"efficacy": float(torch.sigmoid(w.sum() / 50 + len(records) / 100)),
               "paraphrase": float(torch.sigmoid(w.sum() / 60)), "neighborhood": float(torch.sigmoid(-w.norm() / 30))}
        if generation:
            out.update(fluency=6.0 - float(w.norm()) / 100, consistency=0.2)
        return out

    def general_evaluator(self, cfg, model, tok, probe_records=(), state_path=None):
        return FakeGeneral()


def small_cfg(**kw) -> BenchConfig:
    base = dict(methods=["MEMIT", "AlphaEdit"], n_edits=6, batch_size=2, eval_every=2, n_paraphrase=1,
                n_neighborhood=2, glue_n=2, ppl_texts=2, probe_n=2, n_generation=2)
    base.update(kw)
    return preset_config("smoke", **base)


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _final_weights(run_dir: Path, arm: str) -> dict:
    prog = json.loads((run_dir / "arms" / arm / "progress.json").read_text())
    return load_file(str(run_dir / "arms" / arm / prog["state_dir"] / "params.safetensors"))


def _metrics(run_dir: Path) -> list[dict]:
    with open(run_dir / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    drop = {"edit_seconds_total", "edits_per_second", "projection_seconds_total", "eval_seconds"}
    return [{k: v for k, v in r.items() if k not in drop} for r in rows]


# ----------------------------------------------------------------------------- tests
def test_end_to_end_outputs_exist_and_parse(tmp_path):
    comps = FakeComponents()
    res = run_bench(small_cfg(), tmp_path / "run", components=comps, progress=False)
    run = tmp_path / "run"
    assert res.status == "complete" and comps.loads == 1
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["arms"] == ["memit-plain", "memit-revive", "alphaedit-plain", "alphaedit-revive"]
    assert json.loads((run / "baseline.json").read_text())["edit"]["efficacy"] > 0
    for arm in cfg["arms"]:
        cps = sorted((run / "arms" / arm / "checkpoints").glob("round-*.json"))
        assert [p.name for p in cps] == ["round-00002.json", "round-00003.json"]
        last = json.loads(cps[-1].read_text())
        assert last["edits"] == 6 and last["final"] and "fluency" in last["edit"]
        assert set(last["spectral"]["per_param"]) == {"layers.1.weight", "layers.2.weight"}
        assert 0 < last["spectral"]["mean"]["ls"] <= 1
        assert json.loads((run / "arms" / arm / "progress.json").read_text())["status"] == "done"
    rows = _metrics(run)
    assert len(rows) == 1 + 4 * 2 and rows[0]["arm"] == "baseline"
    table = (run / "table.md").read_text()
    body = [l for l in table.splitlines() if l.startswith("| ") and not l.startswith("| Method")]
    assert [l.split("|")[1].strip() for l in body] == [
        "smollm2-135m (unedited)", "MEMIT", "+REVIVE", "AlphaEdit", "+REVIVE"]
    assert all(len(l.split("|")) == len(body[0].split("|")) for l in body)
    assert "%" in body[2]
    import matplotlib.image as mpimg
    for name in ("edit_metrics_vs_edits", "general_vs_edits", "spectral_vs_rounds", "ss_heatmap"):
        img = mpimg.imread(run / "plots" / f"{name}.png")
        assert img.shape[0] > 100 and img.shape[1] > 100
    assert not (run / "plots" / "tau_sweep.png").exists()
    # the REVIVE arm keeps the original dominant subspace better than the plain one
    plain = json.loads((run / "arms/memit-plain/checkpoints/round-00003.json").read_text())
    rev = json.loads((run / "arms/memit-revive/checkpoints/round-00003.json").read_text())
    assert rev["spectral"]["mean"]["ls"] > plain["spectral"]["mean"]["ls"]


def test_each_arm_starts_from_original_weights_and_applies_each_edit_once(tmp_path):
    comps = FakeComponents()
    run_bench(small_cfg(), tmp_path / "run", components=comps, progress=False, plots=False)
    assert all(ed.applied == list(range(6)) for ed in comps.editors)
    assert comps.calls == [2, 2, 2] * 4


@pytest.mark.parametrize("how", ["between_rounds", "mid_round", "during_save"])
def test_resume_gives_identical_weights_and_metrics(tmp_path, monkeypatch, how):
    cfg = small_cfg(methods=["MEMIT"])
    run_bench(cfg, tmp_path / "full", components=FakeComponents(), progress=False, plots=False)

    first = FakeComponents()
    if how == "between_rounds":
        res = run_bench(small_cfg(methods=["MEMIT"]), tmp_path / "cut", components=first,
                        stop_after_rounds=1, progress=False)
        assert res.status == "interrupted" and not (tmp_path / "cut" / "results.csv").exists()
    elif how == "mid_round":
        monkeypatch.setattr(FakeEditor, "interrupt_at_call", 2)
        with pytest.raises(KeyboardInterrupt):
            run_bench(small_cfg(methods=["MEMIT"]), tmp_path / "cut", components=first, progress=False)
        monkeypatch.setattr(FakeEditor, "interrupt_at_call", None)
    else:
        from revive_plugin.bench import state
        real_save, n = state.ArmProgress.save, {"calls": 0}

        def flaky(self, arm_dir):
            n["calls"] += 1
            if n["calls"] == 2:
                raise KeyboardInterrupt  # round-2 state folder written, progress.json not yet
            real_save(self, arm_dir)
        monkeypatch.setattr(state.ArmProgress, "save", flaky)
        with pytest.raises(KeyboardInterrupt):
            run_bench(small_cfg(methods=["MEMIT"]), tmp_path / "cut", components=first, progress=False)
        monkeypatch.setattr(state.ArmProgress, "save", real_save)
    prog = json.loads((tmp_path / "cut/arms/memit-plain/progress.json").read_text())
    assert prog["rounds_done"] == 1

    second = FakeComponents()
    res = run_bench(small_cfg(methods=["MEMIT"]), tmp_path / "cut", components=second, resume=True,
                    progress=False, plots=False)
    assert res.status == "complete"
    for arm in ("memit-plain", "memit-revive"):
        a, b = _final_weights(tmp_path / "full", arm), _final_weights(tmp_path / "cut", arm)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        states = sorted((tmp_path / "cut/arms" / arm / "state").iterdir())
        assert len(states) == 1  # orphans and older rounds pruned
    assert _metrics(tmp_path / "full") == _metrics(tmp_path / "cut")
    assert second.editors[0].applied == list(range(6))  # edits 0..1 restored from state, 2..5 applied once
    assert second.calls == [2, 2, 2, 2, 2]


def test_tau_sweep_outputs(tmp_path):
    run_bench(small_cfg(methods=["MEMIT"], taus=[0.1, 0.3]), tmp_path / "run", components=FakeComponents(),
              progress=False)
    run = tmp_path / "run"
    assert sorted(p.name for p in (run / "arms").iterdir()) == ["memit-plain", "memit-revive-tau0.1",
                                                                "memit-revive-tau0.3"]
    t2 = (run / "tau_table.md").read_text()
    assert "| MEMIT+REVIVE | 0.10 |" in t2 and "| MEMIT+REVIVE | 0.30 |" in t2
    assert (run / "plots" / "tau_sweep.png").stat().st_size > 1000
    assert "(τ=0.3)" in (run / "table.md").read_text()
    assert (run / "run.md").read_text().startswith("# smollm2-135m: memit-plain, memit-revive-tau0.1, memit-revive-tau0.3; 6 edits")
    traj = (run / "trajectory.md").read_text()
    assert "each cell is plain / +REVIVE τ=0.1 / +REVIVE τ=0.3" in traj
    assert "| 0 (unedited) | " in traj
    cps = [json.loads((run / f"arms/{a}/checkpoints/round-00002.json").read_text())
           for a in ("memit-plain", "memit-revive-tau0.1", "memit-revive-tau0.3")]
    cell = " / ".join(f"{c['edit']['efficacy'] * 100:.1f}" for c in cps)
    assert f"| {cps[0]['edits']} | {cell} | " in traj


def test_report_with_a_sweep_run_made_without_the_plain_arm(tmp_path):
    """--report RUN --with SWEEP: a τ sweep run with --no-plain is reported next to the run holding the plain arm."""
    main, sweep, pub = tmp_path / "main", tmp_path / "sweep", tmp_path / "pub"
    run_bench(small_cfg(methods=["MEMIT"]), main, components=FakeComponents(), progress=False, plots=False)
    run_bench(small_cfg(methods=["MEMIT"], taus=[0.05, 0.3], plain=False), sweep, components=FakeComponents(),
              progress=False, plots=False)
    args = _parser().parse_args(["bench", "--report", str(main), "--with", str(sweep), "--out", str(pub)])
    assert bench_cli.run_from_args(args) == 0
    finals = {a: json.loads((d / f"arms/{a}/checkpoints/round-00003.json").read_text())["edit"]["efficacy"]
              for d, arms in ((main, ("memit-plain", "memit-revive")), (sweep, ("memit-revive-tau0.05",
                                                                                  "memit-revive-tau0.3")))
              for a in arms}
    t2 = (pub / "tau_table.md").read_text()
    assert f"| MEMIT | plain | {finals['memit-plain'] * 100:.2f} |" in t2
    for arm, tau in (("memit-revive-tau0.05", "0.05"), ("memit-revive", "0.10"), ("memit-revive-tau0.3", "0.30")):
        assert f"| MEMIT+REVIVE | {tau} | {finals[arm] * 100:.2f} |" in t2
    assert "each cell is plain / +REVIVE τ=0.05 / +REVIVE τ=0.1 / +REVIVE τ=0.3" in (pub / "trajectory.md").read_text()
    assert "| +REVIVE (τ=0.1) |" in (pub / "table.md").read_text()
    run_md = (pub / "run.md").read_text()
    assert "--no-plain" in run_md and "| memit-revive-tau0.3 | done | 6 |" in run_md
    assert (pub / "plots" / "tau_sweep.png").stat().st_size > 1000
    with open(pub / "results.csv") as f:
        assert {r["arm"] for r in csv.DictReader(f)} == {"baseline", *finals}

    other = tmp_path / "other"
    run_bench(small_cfg(methods=["MEMIT"], taus=[0.3], plain=False, n_edits=4), other, components=FakeComponents(),
              progress=False, plots=False)
    for with_, match in ((other, "differ in n_edits"), (main, "both hold REVIVE τ=0.1")):
        args = _parser().parse_args(["bench", "--report", str(main), "--with", str(with_), "--out", str(pub)])
        with pytest.raises(ValueError, match=match):
            bench_cli.run_from_args(args)
    with pytest.raises(ValueError, match="only goes with --report"):
        bench_cli.run_from_args(_parser().parse_args(["bench", "--with", str(sweep), "--out", str(pub)]))


def test_drift_alarm_stops_plain_arm(tmp_path):
    cfg = small_cfg(methods=["MEMIT"], n_edits=12, eval_every=1, alarm_ls=0.99999, alarm_action="stop")
    msgs = []
    run_bench(cfg, tmp_path / "run", components=FakeComponents(), progress=False, plots=False,
              echo=msgs.append)
    prog = json.loads((tmp_path / "run/arms/memit-plain/progress.json").read_text())
    assert prog["status"] == "stopped" and prog["rounds_done"] < 6 and prog["alarms"]
    assert any("drift alarm" in m for m in msgs)
    assert "stopped by drift alarm" in (tmp_path / "run/table.md").read_text()


def test_drift_alarm_unit():
    alarm = DriftAlarm(ls_min=0.9, ss_min=0.8, action="warn")
    ev = alarm.check(3, 300, {"w": {"ls": 0.85, "ss_left_mean_max": 0.9, "ss_right_mean_max": 0.7}})
    assert [(e.metric, e.value) for e in ev] == [("ls", 0.85), ("ss_right_mean_max", 0.7)]
    assert not alarm.should_stop(ev) and DriftAlarm(0.9, action="stop").should_stop(ev)
    assert not DriftAlarm().enabled
    with pytest.raises(ValueError, match="alarm_ls"):
        DriftAlarm(ls_min=1.5)


@pytest.mark.parametrize("kw, match", [
    (dict(methods=["MEMITT"]), "unknown method 'MEMITT'"),
    (dict(taus=[1.5]), "revive_tau' must be strictly between"),
    (dict(taus=[0.0]), "revive_tau' must be strictly between"),
    (dict(n_edits=4, batch_size=8), "batch_size B=8 is larger than the number of edits N=4"),
    (dict(n_edits=100), "exceeds the 40 records"),
    (dict(alarm_action="explode"), "alarm_action"),
])
def test_bad_input_clear_errors_nothing_written(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        cfg = small_cfg(**kw)
        run_bench(cfg, tmp_path / "run", components=FakeComponents(), progress=False)
    assert not (tmp_path / "run").exists()


def test_unreadable_data_file(tmp_path):
    from revive_plugin.bench.components import ProjectComponents

    cfg = small_cfg(data=str(tmp_path / "missing.json"))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        run_bench(cfg, tmp_path / "run", components=ProjectComponents(), progress=False)
    assert not (tmp_path / "run").exists()


def test_resume_refuses_other_config_and_non_empty_out(tmp_path):
    run_bench(small_cfg(methods=["MEMIT"]), tmp_path / "run", components=FakeComponents(),
              stop_after_rounds=2, progress=False)
    before = _snapshot(tmp_path / "run")
    with pytest.raises(ValueError, match=r"another configuration \(differs in: n_edits\)"):
        run_bench(small_cfg(methods=["MEMIT"], n_edits=8), tmp_path / "run", components=FakeComponents(),
                  resume=True, progress=False)
    with pytest.raises(ValueError, match="hparams"):
        run_bench(small_cfg(methods=["MEMIT"], hparams_overrides={"v_lr": 1.0}), tmp_path / "run",
                  components=FakeComponents(), resume=True, progress=False)
    with pytest.raises(ValueError, match="not empty"):
        run_bench(small_cfg(methods=["MEMIT"]), tmp_path / "run", components=FakeComponents(), progress=False)
    with pytest.raises(FileNotFoundError, match="config.json"):
        run_bench(small_cfg(methods=["MEMIT"]), tmp_path, components=FakeComponents(), resume=True, progress=False)
    assert _snapshot(tmp_path / "run") == before


def test_eval_subsample_is_fixed_and_covers_old_edits(tmp_path):
    run = BenchRun(small_cfg(methods=["MEMIT"], n_edits=30, batch_size=10, eval_max_edits=5),
                   tmp_path / "run", components=FakeComponents()).prepare()
    a, b = run.eval_records(30), run.eval_records(30)
    assert [r["case_id"] for r in a] == [r["case_id"] for r in b] and len(a) == 5
    assert all(len(r["paraphrase_prompts"]) == 1 and len(r["neighborhood_prompts"]) == 2 for r in a)
    assert len(run.eval_records(3)) == 3


def _parser():
    root = argparse.ArgumentParser(prog="revive")
    sub = root.add_subparsers(dest="command")
    bench_cli.add_parser(sub)
    return root


def test_cli_help_lists_every_flag(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["bench", "--help"])
    text = capsys.readouterr().out
    for flag in ("--preset", "--methods", "--n-edits", "--batch-size", "--eval-every", "--tau", "--resume",
                 "--host", "--alarm-ls", "--alarm-ss", "--alarm-action", "--eval-max-edits", "--set", "--data"):
        assert flag in text


def test_cli_runs_and_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    args = _parser().parse_args(["bench", "--preset", "smoke", "--methods", "memit", "-n", "4", "-b", "2",
                                 "--tau", "0.1", "--set", "layers=[1,2]", "--quiet", "--out", str(out)])
    assert bench_cli.run_from_args(args, components=FakeComponents()) == 0
    printed = capsys.readouterr().out
    assert "| MEMIT |" in printed and "table.md" in printed and "edit_metrics_vs_edits.png" in printed
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["hparams_overrides"] == {"layers": [1, 2]} and cfg["methods"] == ["MEMIT"]
    # resuming a finished run re-reports it; a mismatching flag is refused
    args = _parser().parse_args(["bench", "--resume", str(out), "--quiet", "--no-plots"])
    assert bench_cli.run_from_args(args, components=FakeComponents()) == 0
    args = _parser().parse_args(["bench", "--resume", str(out), "-n", "6"])
    with pytest.raises(ValueError, match="n_edits"):
        bench_cli.run_from_args(args, components=FakeComponents())


def test_cli_header_names_the_arms_it_runs(tmp_path, capsys):
    args = _parser().parse_args(["bench", "--preset", "smoke", "--methods", "memit", "-n", "4", "-b", "2",
                                 "--tau", "0.05,0.3", "--no-plain", "--no-plots", "--out", str(tmp_path / "run")])
    assert bench_cli.run_from_args(args, components=FakeComponents()) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "2 arms (MEMIT+REVIVE (τ=0.05), MEMIT+REVIVE (τ=0.3))" in header and "plain" not in header


def test_cli_is_registered_in_the_revive_command():
    from revive_plugin.cli import build_parser

    args = build_parser().parse_args(["bench", "--preset", "smoke", "--tau", "0.05,0.1"])
    assert args.tau == [0.05, 0.1] and callable(args.func)


def test_presets_are_valid():
    for name in ("default", "long", "paper", "smoke"):
        cfg = preset_config(name)
        assert cfg.n_rounds >= 1 and cfg.checkpoint_rounds()[-1] == cfg.n_rounds
    assert preset_config("paper").methods == list(ALL_METHODS)
    assert preset_config("paper").n_edits == 10000 and preset_config("paper").batch_size == 100


def test_easyedit_host_not_importable_is_a_clear_error(tmp_path):
    from revive_plugin.bench.components import ProjectComponents

    try:
        import easyeditor  # noqa: F401
        pytest.skip("EasyEdit is importable here")
    except Exception:
        pass
    with pytest.raises(ValueError, match="--host easyedit needs EasyEdit importable"):
        run_bench(small_cfg(host="easyedit"), tmp_path / "run", components=ProjectComponents(), progress=False)
    assert not (tmp_path / "run").exists()


def test_evaluation_runs_in_the_editors_evaluation_view(tmp_path):
    """An editor's evaluation_view (PRUNE's reference timing) is what every checkpoint evaluates;
    the weights saved for --resume are the edited ones outside the view."""
    import contextlib

    class ViewEditor(FakeEditor):
        @contextlib.contextmanager
        def evaluation_view(self):
            p = self._param("layers.2.weight")
            saved = p.detach().clone()
            with torch.no_grad():
                p.mul_(0.5)
            try:
                yield self.model
            finally:
                with torch.no_grad():
                    p.copy_(saved)

    class ViewComponents(FakeComponents):
        def make_editor(self, cfg, method, model, tok, revive_tau=None):
            ed = ViewEditor(method, model, revive_tau, self.calls)
            self.editors.append(ed)
            return ed

    out = tmp_path / "run"
    run_bench(small_cfg(methods=["PRUNE"], plain=True, taus=[0.1]), out, components=ViewComponents(),
              progress=False, plots=False)
    cp = json.loads((out / "arms" / "prune-plain" / "checkpoints" / "round-00003.json").read_text())
    saved = _final_weights(out, "prune-plain")["layers.2.weight"]  # the edited weights, outside the view
    w0 = FakeModel().layers[2].weight.detach()
    assert cp["edit"]["neighborhood"] == pytest.approx(float(torch.sigmoid(-0.5 * saved.norm() / 30)), rel=1e-5)
    assert cp["spectral"]["per_param"]["layers.2.weight"]["norm_growth"] == pytest.approx(
        0.5 * float(saved.norm() / w0.norm()), rel=1e-5)


@pytest.mark.parametrize("preset,given", [
    ("default", {}),
    ("smoke", dict(methods=["MEMIT", "AlphaEdit"], n_edits=6, taus=[0.05, 0.2], plain=False, quiet=True)),
    ("scale", dict(eval_max_edits=None, n_paraphrase=None, glue_tasks=["sst2", "rte"], alarm_ls=0.5,
                   zsre_target="alt", hparams_overrides={"v_lr": 0.1, "layers": [4, 5], "context_prefixes": 5})),
])
def test_command_line_makes_the_same_config(preset, given, tmp_path):
    """run.md's command, run again, gives the recorded configuration back."""
    import shlex

    from revive_plugin.cli import build_parser

    cfg = preset_config(preset, **given)
    command = bench_cli.command_line(cfg)
    argv = shlex.split(command)
    assert argv[:2] == ["revive", "bench"] and ("--preset" in argv) == (preset != "default")
    again, _, _ = bench_cli.config_from_args(build_parser().parse_args(argv[1:] + ["--out", str(tmp_path)]))
    assert again.to_dict() == cfg.to_dict()


def test_report_of_an_unfinished_run_compares_arms_at_matched_edits(tmp_path, capsys):
    run_dir, pub = tmp_path / "run", tmp_path / "pub"
    cfg = small_cfg(methods=["MEMIT"], n_edits=8, batch_size=2, eval_every=1)
    res = run_bench(cfg, run_dir, components=FakeComponents(), stop_after_rounds=6, progress=False)
    assert res.status == "interrupted"  # plain arm: 4 rounds (8 edits), REVIVE arm: 2 rounds (4 edits)
    before = _snapshot(run_dir)
    args = _parser().parse_args(["bench", "--report", str(run_dir), "--out", str(pub), "--no-plots"])
    assert bench_cli.run_from_args(args) == 0
    assert _snapshot(run_dir) == before  # --out: the run folder is left as it was
    table = (pub / "table.md").read_text()
    assert "run in progress: arms compared at 4 of 8 edits" in table
    plain_at_4 = json.loads((run_dir / "arms/memit-plain/checkpoints/round-00002.json").read_text())
    assert f"| MEMIT | {plain_at_4['edit']['efficacy'] * 100:.2f} |" in table
    run_md = (pub / "run.md").read_text()
    assert "| memit-plain | done | 8 |" in run_md and "| memit-revive | running | 4 |" in run_md
    assert "revive bench --preset smoke" in run_md
    with open(pub / "results.csv") as f:
        assert [(r["arm"], r["edits"]) for r in csv.DictReader(f)] == [("baseline", "0")] + [
            ("memit-plain", str(e)) for e in (2, 4, 6, 8)] + [("memit-revive", "2"), ("memit-revive", "4")]
    run_bench(cfg, run_dir, components=FakeComponents(), resume=True, progress=False, plots=False)
    assert "evaluated after the last round" in (run_dir / "table.md").read_text()
    with pytest.raises(ValueError, match="not both"):
        bench_cli.run_from_args(_parser().parse_args(["bench", "--report", str(run_dir), "--resume", str(run_dir)]))


def _untimed_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "results.csv") as f:
        return [{k: v for k, v in r.items() if "seconds" not in k and "per_second" not in k} for r in csv.DictReader(f)]


def test_arms_run_by_separate_processes_give_the_whole_run(tmp_path):
    """--only-arms: two processes on one folder, one arm each, end as one all-arms run does."""
    cfg = small_cfg(methods=["MEMIT"], n_edits=4, batch_size=2, eval_every=1)
    run_bench(cfg, tmp_path / "whole", components=FakeComponents(), progress=False, plots=False)
    split = tmp_path / "split"
    res = run_bench(small_cfg(methods=["MEMIT"], n_edits=4, batch_size=2, eval_every=1, only_arms=["memit-revive"]),
                    split, components=FakeComponents(), progress=False, plots=False)
    assert res.arms == ["memit-revive"] and not (split / "arms" / "memit-plain").exists()
    assert "| MEMIT |" not in (split / "table.md").read_text()
    run_bench(small_cfg(methods=["MEMIT"], n_edits=4, batch_size=2, eval_every=1, only_arms=["memit-plain"]),
              split, components=FakeComponents(), resume=True, progress=False, plots=False)
    assert _untimed_rows(split) == _untimed_rows(tmp_path / "whole")
    assert (split / "table.md").read_text() == (tmp_path / "whole" / "table.md").read_text()
    with pytest.raises(ValueError, match=r"not arms of this configuration; its arms are \['memit-plain', 'memit-revive'\]"):
        run_bench(small_cfg(methods=["MEMIT"], only_arms=["memit"]), tmp_path / "bad", components=FakeComponents(),
                  progress=False)
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("new,old,expected", [
    (0.49, 0.52, "↓ 5.8%"),      # a 0–1 column (Repr., LS): a real change, not '='
    (0.884, 0.85, "↑ 4.0%"),     # a % column, raw 0–1 values
    (200.1, 269.6, "↓ 25.8%"),   # PPL in its own units
    (0.0, 0.0945, "↓ 100.0%"),   # DomΔ: REVIVE removes the dominant share
    (0.2, 0.005, "↑↑"), (0.0, 0.005, "="), (0.003, 0.0, "="),  # plain near zero
])
def test_relative_change_is_relative_for_every_column_scale(new, old, expected):
    from revive_plugin.bench.report import relative_change
    assert relative_change(new, old) == expected


def test_panels_spanning_orders_of_magnitude_use_a_log_scale():
    """Perplexity from 14.9 to 14,433 (the Gemma run) is drawn on a log scale; a probe accuracy falling to 0,
    a cosine or a perplexity that moved 20 → 23 keep a linear one."""
    from revive_plugin.bench.plots import _wide_positive

    assert _wide_positive([14.9, 19.8, 80.1, 14432.6])
    assert not _wide_positive([18.8, 23.8])
    assert not _wide_positive([1.0, 0.22, 0.0])
    assert not _wide_positive([])


def test_edit_count_axes_tick_in_round_steps():
    """A 5,000-edit axis in a 4.6-inch panel ticks at multiples of 500 or 1000 (matplotlib's default picked 600)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from revive_plugin.bench.plots import _count_ticks

    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    ax.plot([0, 500, 5000], [1.0, 0.5, 0.2])
    _count_ticks(ax)
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if 0 <= t <= 5000]
    plt.close(fig)
    assert len(ticks) >= 3 and all(t % 500 == 0 for t in ticks), ticks
