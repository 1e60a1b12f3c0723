"""REVIVE inside EasyEdit main vs the native editor: the same sequential edits, plain and with REVIVE.

For each method (MEMIT, AlphaEdit): N edits of the offline fact set in rounds of B, on a fresh copy of the
bundled SmolLM2-135M per arm, (a) through EasyEdit main's ``BaseEditor`` (built by
``BaseEditor.from_hparams``; each round is ``apply_algo(..., copy=False)`` as ``edit(..., sequential_edit=True)``
runs it: :class:`revive_plugin.easyedit.sequential.EasyEditSequentialEditor`) and (b) through this project's
editor, with ``use_revive`` off and on. After the last round: efficacy over all N edits (share of edit prompts
where the new object beats the true one) and, per edited weight, the leakage of the accumulated change
D = W − W₀, max(‖U_kᵀD‖/‖D‖, ‖D V_k‖/‖D‖) for the dominant basis of the ORIGINAL weight (float64, τ = 0.1).

Needs an EasyEdit main source checkout on PYTHONPATH (or ``--easyedit-src``) and transformers 5.x:
``python benchmarks/easyedit_parity.py --easyedit-src /path/to/EasyEdit [-n 50 -b 10] [--out parity.json]``.
CPU settings: the bench's CPU hparams (10 value steps, 1,000 covariance texts of ≤ 64 tokens).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
TAU = 0.1


def _records(n: int, data: str | None) -> list[dict]:
    from revive_plugin.data import counterfact, facts

    records = counterfact.load_counterfact(data) if data else facts.load_facts()
    if len(records) < n:
        raise ValueError(f"the offline fact set has {len(records)} records, fewer than {n}")
    return records[:n]


def _hparams(method: str, stats_dir: Path, revive: bool):
    from revive_plugin.bench.config import CPU_HPARAMS
    from revive_plugin.editing import load_hparams

    return load_hparams(method, "smollm2-135m", stats_dir=str(stats_dir), use_revive=revive, revive_tau=TAU,
                        **CPU_HPARAMS)


def run_arm(method: str, host: str, revive: bool, model_dir: Path, stats_dir: Path, records: list[dict],
            batch: int) -> dict:
    from revive_plugin.editing import make_editor
    from revive_plugin.evaluation.counterfact import evaluate_counterfact
    from revive_plugin.models import load_model
    from revive_plugin.projection import DominantBasis

    model, tok = load_model(str(model_dir))
    hp = _hparams(method, stats_dir, revive)
    if host == "easyedit":
        from revive_plugin.easyedit.sequential import EasyEditSequentialEditor

        editor = EasyEditSequentialEditor(method, model, tok, hp)
    else:
        editor = make_editor(method, model, tok, hp)
    names = list(editor.edited_params)
    w0 = {n: model.get_parameter(n).detach().clone() for n in names}
    t0 = time.perf_counter()
    for start in range(0, len(records), batch):
        editor.edit(records[start:start + batch])
    seconds = time.perf_counter() - t0
    metrics = evaluate_counterfact(model, tok, records, max_paraphrase=0, max_neighborhood=0, progress=False)
    leak = 0.0
    for n in names:
        d = (model.get_parameter(n).detach() - w0[n]).double()
        leak = max(leak, *DominantBasis.from_weight(w0[n].double(), TAU).leakage(d))
    return {"method": method, "host": host, "revive": revive, "efficacy": float(metrics["efficacy"]),
            "leakage": leak, "seconds": seconds, "n_edits": len(records), "batch": batch}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--easyedit-src", default=None, help="EasyEdit source checkout (else: importable easyeditor)")
    ap.add_argument("--methods", default="MEMIT,AlphaEdit")
    ap.add_argument("--hosts", default="easyedit,native")
    ap.add_argument("-n", type=int, default=50)
    ap.add_argument("-b", type=int, default=10)
    ap.add_argument("--data", default=None, help="CounterFact-style JSON (default: the offline fact set, which "
                    "needs the [demo] extra to be built the first time)")
    ap.add_argument("--work", default=None, help="folder for the exported model and statistics (default: temp)")
    ap.add_argument("--out", default=None, help="write the rows as JSON here")
    args = ap.parse_args(argv)
    if args.easyedit_src:
        sys.path.insert(0, args.easyedit_src)
    sys.path.insert(0, str(REPO / "tests"))
    import easyedit_stubs  # test-only stubs of torchvision/timm (EasyEdit's multimodal imports)

    easyedit_stubs.install()
    from revive_plugin.bench.config import CPU_HPARAMS
    from revive_plugin.editing.covariance import ensure_stats
    from revive_plugin.models import export_for_easyedit, load_model

    work = Path(args.work or tempfile.mkdtemp(prefix="revive-parity-"))
    model_dir, stats_dir = export_for_easyedit("smollm2-135m", work, "llama")
    model, tok = load_model(str(model_dir))
    layers = _hparams("MEMIT", stats_dir, False).layers
    ensure_stats(model, tok, [f"model.layers.{l}.mlp.down_proj" for l in layers], stats_dir,
                 n_samples=CPU_HPARAMS["mom2_n_samples"], max_tokens=CPU_HPARAMS["stats_max_tokens"], progress=False)
    del model
    records = _records(args.n, args.data)
    rows = []
    for method in args.methods.split(","):
        for host in args.hosts.split(","):
            for revive in (False, True):
                torch.manual_seed(0)
                row = run_arm(method, host, revive, model_dir, stats_dir, records, args.b)
                rows.append(row)
                print(f"{method:9s} {host:8s} {'REVIVE' if revive else 'plain':6s} efficacy {row['efficacy']:.3f} "
                      f"leakage {row['leakage']:.2e} ({row['seconds']:.0f} s)", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))
    print("\n| method | host | plain efficacy | REVIVE efficacy | plain leakage | REVIVE leakage |\n|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        for host in args.hosts.split(","):
            p, r = [x for x in rows if x["method"] == method and x["host"] == host]
            print(f"| {method} | {host} | {100 * p['efficacy']:.1f} | {100 * r['efficacy']:.1f} | "
                  f"{p['leakage']:.2e} | {r['leakage']:.2e} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
