"""End to end: EasyEdit main's BaseEditor.from_hparams(...) + editor.edit(...) with ``use_revive: true``.

Needs an EasyEdit source checkout named by ``EASYEDIT_SRC`` (skipped otherwise). The run happens in a
subprocess (this file run as a script) so that the checkout, not an installed wheel, is ``easyeditor``.
Set-up, all offline, CPU: the bundled SmolLM2-135M (a Llama-architecture model; EasyEdit picks its model
class from a substring of ``model_name``, so it is handed over as users do it, by ``revive model export``
into a folder whose name contains "llama"), covariance statistics written by revive_plugin.editing.covariance in EasyEdit's layout
(so EasyEdit never downloads Wikipedia), and the test-only torchvision/timm stubs of tests/easyedit_stubs.

For ROME, MEMIT, EMMET and AlphaEdit, sequential and not, every ΔW that EasyEdit's apply function leaves
(observed by a spy placed around the ALG_DICT entry, outside the REVIVE wrapper) must satisfy
‖U_kᵀΔW‖/‖ΔW‖ ≤ 1e-5 and ‖ΔW V_k‖/‖ΔW‖ ≤ 1e-5 for the basis of the ORIGINAL weight, plus the float32 storage
floor 2⁻²⁴‖W‖/‖ΔW‖ (writing W + ΔW_safe into float32 rounds every entry by up to 2⁻²⁴ of its size, which no
projection can undo; it matters for single small edits); without REVIVE the same edit must not; non-sequential
edits must leave the model exactly as it was.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
LIMIT = 1e-5


def allowed_leakage(weight, delta_norm: float) -> float:
    """LIMIT plus the float32 storage floor of ``weight`` relative to an update of norm ``delta_norm``."""
    return LIMIT + 2.0 ** -24 * float(weight.double().norm()) / delta_norm
METHODS = tuple(os.environ.get("REVIVE_EE_METHODS", "ROME,MEMIT,EMMET,AlphaEdit").split(","))
# EasyEdit main's EMMET empties weights_copy when keep_original_weight is false (BaseEditor always passes
# False), so EasyEdit itself never restores EMMET edits in non-sequential mode: a host behaviour.
NO_HOST_RESTORE = {"EMMET"}
LAYERS = {"ROME": [5], "MEMIT": [4, 5, 6, 7, 8], "EMMET": [4, 5, 6, 7, 8], "AlphaEdit": [4, 5, 6, 7, 8]}
N_STATS = 300  # covariance texts (small: this is a plumbing test, not a quality run)

REQUESTS = [
    dict(prompt="The Eiffel Tower is located in the city of", subject="Eiffel Tower", ground_truth="Paris",
         target_new="Rome"),
    dict(prompt="The mother tongue of Danielle Darrieux is", subject="Danielle Darrieux", ground_truth="French",
         target_new="English"),
    dict(prompt="Michael Jordan is a professional", subject="Michael Jordan", ground_truth="basketball",
         target_new="soccer"),
]


def test_easyedit_main_end_to_end(easyedit_src):
    src = easyedit_src
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, str(REPO)]))
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), src], env=env, capture_output=True,
                       text=True, timeout=1800)
    print(r.stdout[-12000:])
    assert r.returncode == 0 and "ALL OK" in r.stdout, r.stdout[-6000:] + r.stderr[-6000:]


# ---------------------------------------------------------------------------- the script
def _hparams_yaml(method: str, path: Path, model_dir: str, stats_dir: str, revive: bool, p_loc: str | None) -> str:
    base = dict(
        alg_name=method, model_name=model_dir, stats_dir=stats_dir, device="cpu", layers=LAYERS[method],
        fact_token="subject_last", v_num_grad_steps=4, v_lr=0.5, v_loss_layer=29, v_weight_decay=0.001,
        clamp_norm_factor=4, kl_factor=0.0625, mom2_adjustment=True, mom2_update_weight=1500,
        rewrite_module_tmp="model.layers.{}.mlp.down_proj", layer_module_tmp="model.layers.{}",
        mlp_module_tmp="model.layers.{}.mlp", attn_module_tmp="model.layers.{}.self_attn",
        ln_f_module="model.norm", lm_head_module="model.embed_tokens", mom2_dataset="wikipedia",
        mom2_n_samples=N_STATS, mom2_dtype="float32", model_parallel=False,
    )
    if method in ("MEMIT", "EMMET", "AlphaEdit"):
        base["layer_selection"] = "all"
    if method == "ROME":
        base.update(context_template_length_params=[[5, 5]])
        base.pop("mom2_update_weight")
    if method == "EMMET":
        base.update(update_norm_lambda=0, emmet_lambda=0.1)
    if method == "AlphaEdit":
        base.update(P_loc=p_loc, nullspace_threshold=2e-2, L2=10)
    if revive:
        base.update(use_revive=True, revive_tau=0.1)
    import yaml

    path.write_text(yaml.safe_dump(base))
    return str(path)


def _main(src: str) -> int:
    import importlib
    import logging

    sys.path.insert(0, src)
    sys.path.insert(0, str(TESTS))
    import easyedit_stubs  # test-only stubs of torchvision/timm

    print("stubbed (no real package here):", easyedit_stubs.install())
    import torch

    import easyeditor

    assert Path(easyeditor.__file__).resolve().is_relative_to(Path(src).resolve()), easyeditor.__file__
    import revive_plugin.easyedit as ree
    from revive_plugin.editing.covariance import ensure_stats
    from revive_plugin.models import export_for_easyedit
    from revive_plugin.projection import DominantBasis

    logging.getLogger().setLevel(logging.WARNING)
    print("host:", ree.status())
    work = Path(tempfile.mkdtemp(prefix="revive-easyedit-"))
    model_dir, stats_dir = export_for_easyedit("smollm2-135m", work, "llama")  # converted once, shared cache
    os.environ["REVIVE_CACHE_DIR"] = str(work / "cache")  # bases: computed fresh, from the original weights
    os.chdir(work)  # AlphaEdit writes null_space_project.pt into the working directory

    alg = importlib.import_module("easyeditor.util.alg_dict").ALG_DICT
    observed: list[dict] = []

    def spy(fn):
        def call(model, tok, requests, hparams, *args, **kwargs):
            names = [f"{hparams.rewrite_module_tmp.format(l)}.weight" for l in hparams.layers]
            before = {n: model.get_parameter(n).detach().clone() for n in names}
            out = fn(model, tok, requests, hparams, *args, **kwargs)
            observed.append({n: (before[n], out[0].get_parameter(n).detach().clone()) for n in names})
            return out

        return call

    failures = []
    originals = None
    bases = {}
    print(f"{'method':10s} {'mode':14s} {'revive':6s} {'call':4s} {'max ||dW||':>10s} "
          f"{'max |U_k^T dW|/|dW|':>20s} {'max |dW V_k|/|dW|':>18s}")
    for method in METHODS:
        for sequential, revive in ((False, False), (False, True), (True, True)):
            hp_cls = getattr(easyeditor, f"{method}HyperParams")
            yaml_path = work / f"{method}-{int(revive)}.yaml"
            hp = hp_cls.from_hparams(_hparams_yaml(method, yaml_path, str(model_dir), str(stats_dir), revive,
                                                   None))  # P_loc: null, as the project's YAMLs ship it
            assert bool(getattr(hp, "use_revive", False)) is revive
            wrapped = alg[method]
            alg[method] = spy(wrapped)
            try:
                editor = easyeditor.BaseEditor.from_hparams(hp)
                model, tok = editor.model, editor.tok
                layer_names = [hp.rewrite_module_tmp.format(l) for l in hp.layers]
                all_layers = sorted({l for m in METHODS for l in LAYERS[m]})
                ensure_stats(model, tok, [hp.rewrite_module_tmp.format(l) for l in all_layers], stats_dir,
                             n_samples=N_STATS, progress=False)
                if originals is None:
                    originals = {n: p.detach().clone() for n, p in model.named_parameters()}
                names = [f"{n}.weight" for n in layer_names]
                for n in names:
                    if n not in bases:
                        bases[n] = DominantBasis.from_weight(originals[n].double(), 0.1)
                observed.clear()
                reqs = REQUESTS[:2] if revive else REQUESTS[:1]
                editor.edit(
                    prompts=[r["prompt"] for r in reqs], ground_truth=[r["ground_truth"] for r in reqs],
                    target_new=[r["target_new"] for r in reqs], subject=[r["subject"] for r in reqs],
                    sequential_edit=sequential, verbose=False,
                )
            finally:
                alg[method] = wrapped
            mode = "sequential" if sequential else "non-sequential"
            if revive:
                point = ree.last_report(model)["projection"]
                print(f"{method:10s} {mode:14s} projection point: {point}")
                if len(LAYERS[method]) > 1 and point != "per-layer":
                    failures.append(f"{method} {mode}: projected {point}, not at each layer's write")
            for i, call in enumerate(observed):
                worst_u = worst_v = max_norm = 0.0
                over = []
                for n, (before, after) in call.items():
                    delta = (after - before).double()
                    if not sequential and method not in NO_HOST_RESTORE:
                        if not torch.equal(before, originals[n]):
                            failures.append(f"{method} {mode}: call {i} did not start from the original {n}")
                    norm = float(delta.norm())
                    max_norm = max(max_norm, norm)
                    if norm == 0.0:
                        continue
                    u, v = bases[n].leakage(delta)
                    worst_u, worst_v = max(worst_u, u), max(worst_v, v)
                    if max(u, v) > allowed_leakage(after, norm):
                        over.append(f"{n} {u:.2e}/{v:.2e} > {allowed_leakage(after, norm):.2e}")
                print(f"{method:10s} {mode:14s} {str(revive):6s} {i:<4d} {max_norm:10.4g} {worst_u:20.3e} {worst_v:18.3e}")
                if max_norm == 0.0:
                    failures.append(f"{method} {mode}: call {i} changed nothing")
                elif revive and over:
                    failures.append(f"{method} {mode}: call {i} leakage {'; '.join(over)}")
                elif not revive and max(worst_u, worst_v) <= 1e-3:
                    failures.append(f"{method} without REVIVE: ΔW already outside the dominant subspace?")
            if len(observed) != len(reqs):
                failures.append(f"{method} {mode}: {len(observed)} apply calls for {len(reqs)} requests")
            if sequential:
                for n in names:
                    w = model.get_parameter(n).detach()
                    drift = (w - originals[n]).double()
                    u, v = bases[n].leakage(drift)
                    print(f"{method:10s} {'total drift':14s} {n}: |U_k^T D|/|D| = {u:.3e}, |D V_k|/|D| = {v:.3e}")
                    if max(u, v) > allowed_leakage(w, float(drift.norm())):
                        failures.append(f"{method} sequential: total drift of {n} leaks {u:.2e}/{v:.2e}")
            elif method in NO_HOST_RESTORE:
                print(f"{method:10s} non-sequential: EasyEdit main's {method} returns an empty weights_copy "
                      "(keep_original_weight=False), so the host itself does not restore; restore not checked")
            else:
                changed = [n for n, p in model.named_parameters() if not torch.equal(p, originals[n])]
                if changed:
                    failures.append(f"{method} non-sequential: weights not restored: {changed[:3]}")
            del editor, model
    for f in failures:
        print("FAIL:", f)
    if failures:
        return 1
    print("ALL OK")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1]))
