"""``revive analyze reconstruct|perturb|drift``: the paper's §2 analyses on your own model."""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

from .._io import atomic_save_safetensors, atomic_write_text

DEFAULT_LAYERS = "4-8"


def _float_list(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _names(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json(path, obj) -> Path:
    """Write ``obj`` as indented JSON (NaN/Inf become null)."""
    return atomic_write_text(path, json.dumps(_json_safe(obj), indent=2) + "\n", what="analysis result")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name.removesuffix(".weight")).strip("_")


def _add_model_args(p, layers_default: str | None = DEFAULT_LAYERS) -> None:
    p.add_argument("--model", default="smollm2-135m",
                   help="bundled model name (smollm2-135m, gemma3-270m), local HF folder or hub id (default: %(default)s)")
    p.add_argument("--layers", default=layers_default,
                   help="layers whose edited FFN matrix (the architecture's rewrite_module_tmp) is analysed, "
                        "e.g. '4-8' or '4,6,8'" + (" (default: %(default)s)" if layers_default else
                                                 " (default: every matrix that differs from the original)"))
    p.add_argument("--module-tmp", default=None,
                   help="module name template with {} for the layer, overriding the architecture's, "
                        "e.g. 'model.layers.{}.mlp.up_proj'")
    p.add_argument("--params", type=_names, default=None,
                   help="comma-separated full parameter names to analyse instead of --layers")
    p.add_argument("--device", default=None, help="torch device for the model, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--out", required=True, help="output folder for the JSON results and PNG plots")
    p.add_argument("--quiet", action="store_true", help="hide progress bars")


def _add_ability_args(p) -> None:
    p.add_argument("--n-texts", type=int, default=50,
                   help="held-out Wikipedia texts for perplexity (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=8, help="perplexity batch size (default: %(default)s)")
    p.add_argument("--max-length", type=int, default=128,
                   help="tokens per text for perplexity (default: %(default)s)")
    p.add_argument("--no-probe", action="store_true",
                   help="skip the knowledge probe (facts the unedited model knows); perplexity only")
    p.add_argument("--probe-facts", type=int, default=100,
                   help="facts the unedited model answers exactly kept in the knowledge probe (default: %(default)s)")


def add_parser(subparsers) -> None:
    """Add ``analyze`` with the ``reconstruct``, ``perturb`` and ``drift`` subcommands."""
    p = subparsers.add_parser("analyze", help="spectral analyses of §2: reconstruct | perturb | drift",
                              description="Spectral analyses from the paper's §2, written as JSON and PNG plots.")
    sub = p.add_subparsers(dest="analyze_command", metavar="ANALYSIS", required=True)

    rec = sub.add_parser("reconstruct", help="ability vs singular-value energy kept (Fig. 2a)",
                         description="Rebuild the chosen matrices from the top components holding n% of "
                                     "singular-value energy and measure general ability for each n (Fig. 2a).")
    _add_model_args(rec)
    _add_ability_args(rec)
    rec.add_argument("--fractions", type=_float_list, default=[0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0],
                     help="energy shares to keep, comma-separated in (0, 1] (default: 0.05,...,1.0)")
    rec.set_defaults(func=cmd_reconstruct)

    per = sub.add_parser("perturb", help="ability drop per energy group under Eq. 2 perturbations (Fig. 2b, F.1)",
                         description="Perturb one cumulative-energy group at a time (0-10%, ..., 90-100%) with "
                                     "a random structured perturbation of fixed Frobenius norm (Eq. 2) and "
                                     "measure the ability drop; several seeds.")
    _add_model_args(per)
    _add_ability_args(per)
    strength = per.add_mutually_exclusive_group()
    strength.add_argument("--eps", type=float, default=None,
                          help="absolute Frobenius norm of each matrix's perturbation")
    strength.add_argument("--eps-relative", type=float, default=None,
                          help="perturbation norm as a fraction of each matrix's ||W||_F (default: 0.1 when "
                               "--eps is not given)")
    per.add_argument("--seeds", type=_int_list, default=[0, 1, 2], help="random seeds (default: 0,1,2)")
    per.add_argument("--side", choices=["input", "output", "both"], default="input",
                     help="perturb input directions v_j (§2.2.2), output directions u_i (Appendix F.1) "
                          "or both in turn (default: %(default)s)")
    per.add_argument("--n-groups", type=int, default=10, help="number of energy groups (default: %(default)s)")
    per.add_argument("--groups", type=_int_list, default=None,
                     help="only these group indices, comma-separated (default: all)")
    per.set_defaults(func=cmd_perturb)

    dri = sub.add_parser("drift", help="LS / SS / norm growth of edited weights vs the originals (Figs 4, 5)",
                         description="Compare edited weights (safetensors of edited params, HF folder, or "
                                     "benchmark arm/round folders) with the original model, one checkpoint per "
                                     "path in round order.")
    _add_model_args(dri, layers_default=None)
    dri.add_argument("--edited", nargs="+", required=True,
                     help="edited weights, one per round: .safetensors file, HF model folder, benchmark arm "
                          "folder (progress.json) or round folder (params.safetensors)")
    dri.add_argument("--rounds", type=_int_list, default=None,
                     help="round numbers of the --edited paths (default: parsed from 'round-N' in the path, "
                          "else 1, 2, ...)")
    dri.add_argument("--tau", type=float, default=0.1,
                     help="energy share of the dominant subspace (Eq. 5) (default: %(default)s)")
    dri.add_argument("--save-matrices", action="store_true",
                     help="also write the full SS matrices to ss_matrices.safetensors")
    dri.add_argument("--max-panels", type=int, default=10,
                     help="rounds shown in each SS heatmap figure (default: %(default)s)")
    dri.set_defaults(func=cmd_drift)


def _load(args):
    from revive_plugin.models import load_model

    return load_model(args.model, device=args.device)


def _targets(model, args, layers=None):
    from revive_plugin.analysis.targets import resolve_targets

    return resolve_targets(model, layers if layers is not None else args.layers, args.module_tmp, args.params)


def _ability(model, tok, args):
    from revive_plugin.analysis.ability import make_ability_fn

    return make_ability_fn(model, tok, n_texts=args.n_texts, batch_size=args.batch_size,
                           max_length=args.max_length, probe=not args.no_probe,
                           probe_facts=args.probe_facts)


def cmd_reconstruct(args) -> int:
    from revive_plugin.analysis.plots import plot_reconstruction
    from revive_plugin.analysis.reconstruct import run_reconstruction

    model, tok = _load(args)
    targets = _targets(model, args)
    result = run_reconstruction(model, tok, targets, _ability(model, tok, args), fractions=args.fractions,
                                progress=not args.quiet)
    result["model"] = args.model
    out = Path(args.out)
    print(write_json(out / "reconstruct.json", result))
    print(plot_reconstruction(result, out / "reconstruct.png"))
    for row in result["results"]:
        print(f"{100 * row['fraction']:6.1f}% energy: " + ", ".join(f"{k}={v:.4g}" for k, v in row["metrics"].items()))
    return 0


def cmd_perturb(args) -> int:
    from revive_plugin.analysis.perturb import run_group_perturbation
    from revive_plugin.analysis.plots import plot_group_perturbation

    eps_relative = args.eps_relative if args.eps is not None or args.eps_relative is not None else 0.1
    model, tok = _load(args)
    targets = _targets(model, args)
    ability_fn = _ability(model, tok, args)
    out = Path(args.out)
    for side in (["input", "output"] if args.side == "both" else [args.side]):
        result = run_group_perturbation(model, tok, targets, ability_fn, eps=args.eps, eps_relative=eps_relative,
                                        n_groups=args.n_groups, seeds=args.seeds, side=side, groups=args.groups,
                                        progress=not args.quiet)
        result["model"] = args.model
        print(write_json(out / f"perturb_{side}.json", result))
        print(plot_group_perturbation(result, out / f"perturb_{side}.png"))
        print(f"{side} side, baseline " + ", ".join(f"{k}={v:.4g}" for k, v in result["baseline"].items()))
        for g in result["groups"]:
            lo, hi = g["energy_range"]
            print(f"  group {100 * lo:3.0f}-{100 * hi:3.0f}%: " + ", ".join(
                f"{m} drop {d['mean']:+.4g} ± {d['std']:.2g}" for m, d in g["drop"].items()))
    return 0


def _changed_targets(model, first_checkpoint: dict):
    """Targets for every matrix of the first checkpoint that differs from the original."""
    import torch

    from revive_plugin.analysis.targets import Target, storage_transposed

    params = dict(model.named_parameters())
    transposed = storage_transposed(model)
    names = []
    for name, tensor in first_checkpoint.items():
        orig = params.get(name)
        if tensor.dim() != 2 or orig is None or tensor.shape != orig.shape:
            continue
        if not torch.equal(tensor.to(device=orig.device, dtype=orig.dtype), orig.detach()):
            names.append(name)
    if not names:
        raise ValueError("the first --edited checkpoint has no matrix that differs from the original; "
                         "pass --layers or --params")
    return [Target(n, transposed) for n in names]


def cmd_drift(args) -> int:
    from revive_plugin.analysis.drift import drift_report, load_edited_weights, round_label
    from revive_plugin.analysis.plots import (plot_drift_summary, plot_ls_rounds, plot_ss_heatmaps,
                                              plot_ss_max)

    if args.rounds is not None and len(args.rounds) != len(args.edited):
        raise ValueError(f"--rounds has {len(args.rounds)} values for {len(args.edited)} --edited paths")
    model, _ = _load(args)
    params = dict(model.named_parameters())
    explicit = bool(args.params or args.layers)
    targets = _targets(model, args) if explicit else None
    names = [t.name for t in targets] if targets else list(params)
    checkpoints = []
    for i, path in enumerate(args.edited):
        weights = load_edited_weights(path, names)
        if targets is None:
            targets = _changed_targets(model, weights)
            names = [t.name for t in targets]
            weights = {n: weights[n] for n in names}
        if not weights:
            raise ValueError(f"{path}: none of {names[:3]}... found in the edited weights")
        rnd = args.rounds[i] if args.rounds is not None else round_label(path, i + 1)
        checkpoints.append((rnd, weights))
    checkpoints.sort(key=lambda c: c[0])
    originals = {t.name: params[t.name].detach() for t in targets}
    result = drift_report(originals, checkpoints, targets, tau=args.tau, progress=not args.quiet)
    matrices = result.pop("matrices")
    result["model"] = args.model
    result["edited"] = [str(p) for p in args.edited]
    out = Path(args.out)
    print(write_json(out / "drift.json", result))
    print(plot_ls_rounds(result, out / "ls_vs_round.png"))
    print(plot_drift_summary(result, out / "drift_summary.png"))
    for name, per_round in matrices.items():
        if not per_round:
            continue
        for side in ("right", "left"):
            mats = {r: m[side] for r, m in per_round.items()}
            print(plot_ss_heatmaps(mats, out / f"ss_{side}_heatmap_{_slug(name)}.png",
                                   f"SS ({side} singular vectors) of {name}", max_panels=args.max_panels))
            print(plot_ss_max(result["reports"][name], out / f"ss_{side}_max_{_slug(name)}.png", side,
                              f"Per-vector max SS ({side}) of {name}", max_lines=args.max_panels))
    if args.save_matrices:
        flat = {f"{name}|round{r}|{side}": m[side].contiguous()
                for name, per_round in matrices.items() for r, m in per_round.items() for side in ("right", "left")}
        atomic_save_safetensors(flat, out / "ss_matrices.safetensors", what="SS matrices")
    for name, rows in result["reports"].items():
        for row in rows:
            print(f"{name} round {row['round']}: LS={row['ls']:.4f} SS_right={row['ss_right_mean_max']:.4f} "
                  f"SS_left={row['ss_left_mean_max']:.4f} norm x{row['norm_growth']:.3f}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``analyze`` on its own: ``python -m revive_plugin.analysis.cli reconstruct ...``."""
    parser = argparse.ArgumentParser(prog="revive")
    subparsers = parser.add_subparsers(dest="command", required=True)
    add_parser(subparsers)
    args = parser.parse_args(["analyze", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, TypeError) as exc:
        print(f"revive analyze: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
