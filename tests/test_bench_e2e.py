"""revive bench with the real editors and evaluators on a tiny random Llama (a few edits, 2 rounds)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from city_facts import write_city_facts
from safetensors.torch import load_file

from revive_plugin.bench import preset_config, run_bench
from revive_plugin.bench.components import ProjectComponents


class TinyComponents(ProjectComponents):
    """The project's components, with the session's tiny model instead of the bundled one."""

    def __init__(self, model, tok):
        self.model, self.tok = model, tok
        self.pristine = {n: p.detach().clone() for n, p in model.named_parameters()}

    def load_model(self, cfg):
        with torch.no_grad():  # a fresh process would load the unedited weights
            for n, p in self.model.named_parameters():
                p.copy_(self.pristine[n])
        return self.model, self.tok


def _facts_file(tmp_path):
    """A small CounterFact-style file (also exercises --data)."""
    return write_city_facts(tmp_path / "facts.json")


def _cfg(tmp_path, glue_dir, **kw):
    over = {"layers": [1, 2], "v_loss_layer": 3, "mom2_n_samples": 40, "v_num_grad_steps": 2,
            "stats_dir": str(tmp_path / "stats")}
    base = dict(data=_facts_file(tmp_path), methods=["MEMIT"], n_edits=4, batch_size=2, eval_every=1, hparams_overrides=over,
                glue_dir=str(glue_dir), glue_tasks=["sst2"], glue_n=4, glue_shots=0, ppl_texts=3, probe_n=3,
                n_generation=1, eval_batch_size=8)
    base.update(kw)
    return preset_config("smoke", **base)


def _final(run_dir, arm):
    prog = json.loads((run_dir / "arms" / arm / "progress.json").read_text())
    return load_file(str(run_dir / "arms" / arm / prog["state_dir"] / "params.safetensors"))


def _rows(run_dir):
    with open(run_dir / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    timing = ("seconds", "per_second")
    return [{k: v for k, v in r.items() if not any(t in k for t in timing)} for r in rows]


def test_tiny_end_to_end_and_resume_match(tmp_path, small_model, glue_dir):
    model, tok = small_model
    comps = TinyComponents(model, tok)
    full = tmp_path / "full"
    res = run_bench(_cfg(tmp_path, glue_dir), full, components=comps, progress=False)
    assert res.status == "complete"
    for name in ("config.json", "baseline.json", "general_state.json"):
        json.loads((full / name).read_text())
    rows = _rows(full)
    assert [(r["arm"], r["round"]) for r in rows] == [("baseline", "0"), ("memit-plain", "1"), ("memit-plain", "2"),
                                                       ("memit-revive", "1"), ("memit-revive", "2")]
    for key in ("efficacy", "paraphrase", "neighborhood", "glue_sst2", "ppl", "ls_mean", "ss_right_mean"):
        assert all(r[key] != "" for r in rows[1:]), key
    assert rows[2]["fluency"] != "" and rows[1]["fluency"] == ""  # generation only at the final checkpoint
    table = (full / "table.md").read_text()
    assert "| MEMIT |" in table and "| +REVIVE |" in table
    for png in ("edit_metrics_vs_edits", "general_vs_edits", "spectral_vs_rounds", "ss_heatmap"):
        assert (full / "plots" / f"{png}.png").read_bytes()[:4] == b"\x89PNG"
    last = json.loads((full / "arms/memit-revive/checkpoints/round-00002.json").read_text())
    assert sorted(last["spectral"]["per_param"]) == ["model.layers.1.mlp.down_proj.weight",
                                                     "model.layers.2.mlp.down_proj.weight"]

    cut = tmp_path / "cut"
    res = run_bench(_cfg(tmp_path, glue_dir), cut, components=comps, stop_after_rounds=1, progress=False)
    assert res.status == "interrupted"
    res = run_bench(_cfg(tmp_path, glue_dir), cut, components=comps, resume=True, progress=False, plots=False)
    assert res.status == "complete"
    for arm in ("memit-plain", "memit-revive"):
        a, b = _final(full, arm), _final(cut, arm)
        assert all(torch.equal(a[k], b[k]) for k in a), arm
    assert _rows(full) == _rows(cut)


def test_tiny_mismatched_resume_is_refused(tmp_path, small_model, glue_dir):
    model, tok = small_model
    comps = TinyComponents(model, tok)
    run = tmp_path / "run"
    run_bench(_cfg(tmp_path, glue_dir), run, components=comps, stop_after_rounds=1, progress=False)
    before = sorted(p.name for p in run.rglob("*"))
    with pytest.raises(ValueError, match="another configuration"):
        run_bench(_cfg(tmp_path, glue_dir, taus=[0.2]), run, components=comps, resume=True, progress=False)
    assert sorted(p.name for p in run.rglob("*")) == before


def test_a_registered_toy_method_runs_through_the_bench(tmp_path, small_model, glue_dir, monkeypatch):
    """Adding a method is a strategy, its hparams class, its YAMLs and one registry entry: nothing else."""
    import shutil

    from revive_plugin import editing
    from revive_plugin.editing.hparams_files import packaged_hparams
    from revive_plugin.editing.memit import MEMITEditor

    class ToyEditor(MEMITEditor):
        method = "ToyMEMIT"

    spec = editing.MethodSpec("ToyMEMIT", editing.MEMITHyperParams, editing.apply_memit_to_model, ToyEditor)
    monkeypatch.setitem(editing.METHODS, "ToyMEMIT", spec)
    hp_dir = tmp_path / "hparams"
    (hp_dir / "ToyMEMIT").mkdir(parents=True)
    shutil.copy(packaged_hparams() / "MEMIT" / "smollm2-135m.yaml", hp_dir / "ToyMEMIT" / "smollm2-135m.yaml")
    model, tok = small_model
    cfg = _cfg(tmp_path, glue_dir, methods=["toymemit"], n_edits=2, hparams_dir=str(hp_dir))
    res = run_bench(cfg, tmp_path / "run", components=TinyComponents(model, tok), progress=False)
    assert res.status == "complete"
    assert "| ToyMEMIT |" in (tmp_path / "run" / "table.md").read_text()
