"""``revive bench --host easyedit``: the harness's rounds through EasyEdit's BaseEditor.

* Unit tests (an importable ``easyeditor``; none of its methods runs): the translation of the project's hparams into a host hparams class
  (a fake dataclass standing in for ``easyeditor.MEMITHyperParams``) and of CounterFact records into
  EasyEdit requests.
* End to end (needs an EasyEdit main source checkout named by ``EASYEDIT_SRC``; skipped otherwise): a tiny
  MEMIT bench on the bundled SmolLM2-135M (4 edits in 2 rounds, plain and +REVIVE), run through the CLI in
  a subprocess (this file run as a script, with the checkout and the test-only torchvision/timm stubs on
  the path); then the REVIVE arm alone, interrupted after one round and resumed in a new process. Checks:
  the outputs exist, the REVIVE arm's accumulated ΔW has ‖U_kᵀΔW‖/‖ΔW‖ ≤ 1e-5 and ‖ΔW V_k‖/‖ΔW‖ ≤ 1e-5
  for the basis of the ORIGINAL weight while the plain arm's does not, the edits took effect, and the
  resumed run ends with the same weights. About 2 minutes on 2 otherwise idle CPU cores (more under load).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import List

import pytest
import torch
from city_facts import write_city_facts

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
LIMIT = 1e-5
LAYERS = [6, 7]
PARAMS = [f"model.layers.{l}.mlp.down_proj.weight" for l in LAYERS]


# ---------------------------------------------------------------------------- unit tests (no EasyEdit method runs)
def _sequential():
    """revive_plugin.easyedit.sequential (its package import enables the plugin, so easyeditor must import)."""
    sys.path.insert(0, str(TESTS))
    try:
        import easyedit_stubs  # test-only stubs of torchvision/timm

        easyedit_stubs.install()
        import revive_plugin.easyedit.sequential as sequential
    except ImportError as e:
        pytest.skip(f"easyeditor is not importable ({e}); CI installs easyeditor==0.0.1.dev0")
    finally:
        sys.path.remove(str(TESTS))
    return sequential


@dataclasses.dataclass
class FakeHostMEMITHyperParams:
    """Stands in for EasyEdit main's MEMITHyperParams: required fields, a few defaults, nothing else."""

    layers: List[int]
    v_num_grad_steps: int
    v_loss_layer: int
    rewrite_module_tmp: str
    lm_head_module: str
    mom2_n_samples: int
    alg_name: str
    device: int
    model_name: str
    stats_dir: str
    batch_size: int = 1
    model_parallel: bool = False


@dataclasses.dataclass
class FakeHostNeedsMore:
    """A host class with required fields the project's MEMIT hparams lack (absent, or null in the YAML)."""

    needs_this: str
    P_loc: str
    layers: List[int]
    alg_name: str = "MEMIT"


class _FakeModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(2, 2))
        self.config = SimpleNamespace(model_type="llama", num_hidden_layers=30,
                                      _name_or_path="/somewhere/models/smollm2-135m")


def _project_hparams(**over):
    from revive_plugin.editing import load_hparams

    values = dict(stats_dir="/tmp/stats", v_num_grad_steps=3, use_revive=True, revive_tau=0.2)
    return load_hparams("MEMIT", "smollm2-135m", **{**values, **over})


def test_hparams_translation_keeps_declared_fields_only():
    easyedit_hparams = _sequential().easyedit_hparams

    hp, dropped = easyedit_hparams(FakeHostMEMITHyperParams, _project_hparams(), _FakeModel())
    assert isinstance(hp, FakeHostMEMITHyperParams)
    assert hp.layers == [4, 5, 6, 7, 8] and hp.v_num_grad_steps == 3 and hp.stats_dir == "/tmp/stats"
    assert hp.device == "cpu"                                      # from the model's parameters, not the YAML's 0
    assert hp.model_name == "/somewhere/models/smollm2-135m"       # config._name_or_path, as EasyEdit sees it
    assert hp.rewrite_module_tmp == "model.layers.{}.mlp.down_proj"
    assert hp.use_revive is True and hp.revive_tau == 0.2          # carried although the class lacks them
    for key in ("stats_max_tokens", "stats_batch_tokens", "context_prefixes", "mom2_dtype", "kl_factor"):
        assert key in dropped and not hasattr(hp, key), key
    assert "use_revive" not in dropped and "layers" not in dropped


def test_hparams_translation_fills_templates_and_loss_layer():
    easyedit_hparams = _sequential().easyedit_hparams

    hp, _ = easyedit_hparams(FakeHostMEMITHyperParams,
                             _project_hparams(rewrite_module_tmp=None, v_loss_layer=-1, use_revive=False),
                             _FakeModel())
    assert hp.rewrite_module_tmp == "model.layers.{}.mlp.down_proj"  # from revive_plugin.arch (llama)
    assert hp.v_loss_layer == 29                                      # -1 = last of 30 layers
    assert hp.use_revive is False


def test_hparams_translation_names_missing_required_fields():
    easyedit_hparams = _sequential().easyedit_hparams
    from revive_plugin.editing import load_hparams

    with pytest.raises(ValueError, match=r"FakeHostNeedsMore requires fields") as info:
        easyedit_hparams(FakeHostNeedsMore, _project_hparams(), _FakeModel())
    assert "needs_this, P_loc (not a key of this project's hparams)" in str(info.value)
    alpha = load_hparams("AlphaEdit", "smollm2-135m")  # P_loc: null in the YAML counts as missing
    assert alpha.P_loc is None
    with pytest.raises(ValueError) as info:
        easyedit_hparams(FakeHostNeedsMore, alpha, _FakeModel())
    assert "P_loc (null: set in the method's YAML or with --set KEY=VALUE)" in str(info.value)
    assert "needs_this (not a key" in str(info.value)
    with pytest.raises(ValueError) as info:
        easyedit_hparams(FakeHostNeedsMore, alpha.replace(P_loc="/p.pt"), _FakeModel())
    assert "needs_this" in str(info.value) and "P_loc" not in str(info.value)


def test_records_become_easyedit_requests():
    to_easyedit_request = _sequential().to_easyedit_request

    rec = {"case_id": 7, "requested_rewrite": {"prompt": "{} is located in the country of", "subject": "Lyon",
                                               "target_new": {"str": "Peru"}, "target_true": {"str": "France"}}}
    assert to_easyedit_request(rec) == {"case_id": 7, "prompt": "{} is located in the country of",
                                        "subject": "Lyon", "target_new": "Peru", "ground_truth": "France"}
    flat = {"prompt": "Lyon is in", "subject": "Lyon", "target_new": "Peru"}
    assert to_easyedit_request(flat)["ground_truth"] == "<|endoftext|>"
    with pytest.raises(ValueError, match="subject"):
        to_easyedit_request({"prompt": "Paris is in", "subject": "Lyon", "target_new": "Peru"})
    with pytest.raises(ValueError, match="target_new"):
        to_easyedit_request({"prompt": "{} is in", "subject": "Lyon", "target_new": {"str": " "}})


# ---------------------------------------------------------------------------- end to end (EasyEdit main)
def _bench_args(out: Path, data: str, stats: Path) -> list[str]:
    return ["bench", "--host", "easyedit", "--preset", "smoke", "--model", "smollm2-135m", "--data", data,
            "-n", "4", "-b", "2", "--eval-every", "1", "--generation", "none", "--glue-n", "0",
            "--ppl-texts", "0", "--probe-n", "0", "--quiet", "--no-plots", "--out", str(out),
            "--set", f"layers=[{','.join(map(str, LAYERS))}]", "--set", "v_num_grad_steps=6",
            "--set", "mom2_n_samples=100", "--set", "stats_max_tokens=64", "--set", f"stats_dir={stats}"]


def _run_script(src: str, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """This file as a script (EasyEdit main first on the path); cwd: BaseEditor writes ./logs/run.log."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, str(REPO)]))
    return subprocess.run([sys.executable, str(Path(__file__).resolve()), src, *args], env=env,
                          capture_output=True, text=True, timeout=1800, cwd=str(cwd))


def _final_params(run_dir: Path, arm: str) -> dict:
    from safetensors.torch import load_file

    prog = json.loads((run_dir / "arms" / arm / "progress.json").read_text())
    assert prog["status"] == "done" and prog["rounds_done"] == 2, prog
    return load_file(str(run_dir / "arms" / arm / prog["state_dir"] / "params.safetensors"))


def test_bench_easyedit_host_memit_end_to_end(tmp_path, easyedit_src):
    src = easyedit_src
    from safetensors import safe_open

    from revive_plugin.models import bundled_model_dir
    from revive_plugin.projection import DominantBasis

    data, stats = write_city_facts(tmp_path / "facts.json", 5), tmp_path / "stats"
    full, cut = tmp_path / "full", tmp_path / "cut"
    r = _run_script(src, tmp_path, "full", *_bench_args(full, data, stats))
    print(r.stdout[-6000:])
    assert r.returncode == 0 and "SCRIPT OK" in r.stdout, r.stdout[-6000:] + r.stderr[-6000:]

    for name in ("config.json", "baseline.json", "results.csv", "table.md"):
        assert (full / name).is_file(), name
    assert json.loads((full / "config.json").read_text())["config"]["host"] == "easyedit"
    table = (full / "table.md").read_text()
    assert "| MEMIT |" in table and "| +REVIVE |" in table
    assert sorted(stats.glob("smollm2-135m/wikipedia_stats/*_float32_mom2_100.npz")), "stats not in EasyEdit's layout"

    with safe_open(str(bundled_model_dir("smollm2-135m") / "model.safetensors"), framework="pt") as fh:
        originals = {n: fh.get_tensor(n) for n in PARAMS}
    leak = {}
    for arm in ("memit-plain", "memit-revive"):
        params = _final_params(full, arm)
        assert sorted(params) == PARAMS
        for n in PARAMS:
            delta = (params[n] - originals[n]).double()
            assert float(delta.norm()) > 1e-3, f"{arm}: {n} did not change"
            leak[arm, n] = DominantBasis.from_weight(originals[n].double(), 0.1).leakage(delta)
    print("leakage (|U_k^T dW|/|dW|, |dW V_k|/|dW|):", leak)
    for n in PARAMS:
        assert max(leak["memit-revive", n]) <= LIMIT, (n, leak["memit-revive", n])
        assert max(leak["memit-plain", n]) > 1e-3, (n, leak["memit-plain", n])

    base = json.loads((full / "baseline.json").read_text())["edit"]["efficacy"]
    for arm in ("memit-plain", "memit-revive"):
        last = json.loads((full / "arms" / arm / "checkpoints" / "round-00002.json").read_text())
        assert last["n_eval_records"] == 4
        assert last["edit"]["efficacy"] > base, (arm, last["edit"], base)  # the edits took effect

    # the REVIVE arm alone, interrupted after one round and resumed in a new process: the same final
    # weights (EasyEdit's context templates are taken from the original weights with a fixed seed)
    r = _run_script(src, tmp_path, "cut", *_bench_args(cut, data, stats), "--no-plain")
    assert r.returncode == 0 and "SCRIPT OK" in r.stdout, r.stdout[-6000:] + r.stderr[-6000:]
    r = _run_script(src, tmp_path, "resume", "bench", "--resume", str(cut), "--quiet", "--no-plots")
    assert r.returncode == 0 and "SCRIPT OK" in r.stdout, r.stdout[-6000:] + r.stderr[-6000:]
    a, b = _final_params(full, "memit-revive"), _final_params(cut, "memit-revive")
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------- the script
def _main(src: str, mode: str, argv: list[str]) -> int:
    sys.path.insert(0, src)
    sys.path.insert(0, str(TESTS))
    import easyedit_stubs  # test-only stubs of torchvision/timm

    print("stubbed (no real package here):", easyedit_stubs.install())
    import easyeditor

    assert Path(easyeditor.__file__).resolve().is_relative_to(Path(src).resolve()), easyeditor.__file__
    if mode == "cut":  # the CLI's config, stopped after the first round
        from revive_plugin.bench.cli import config_from_args
        from revive_plugin.bench.harness import run_bench
        from revive_plugin.cli import build_parser

        cfg, run_dir, resume = config_from_args(build_parser().parse_args(argv))
        res = run_bench(cfg, run_dir, resume=resume, stop_after_rounds=1, progress=False, plots=False)
        assert res.status == "interrupted", res.status
    else:
        from revive_plugin.cli import main

        rc = main(argv)
        if rc != 0:
            return rc
    print("SCRIPT OK")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1], sys.argv[2], sys.argv[3:]))
