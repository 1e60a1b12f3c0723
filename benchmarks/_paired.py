"""What the paired scripts (``bench_revive_overhead.py``, ``diag_delivery.py``) share: two copies of one
model, a plain editor and a +REVIVE one, built exactly as ``revive bench`` builds them (a preset's hparams
overrides, covariance statistics in the shared cache folder)."""

from __future__ import annotations

import argparse
import copy


def _override(s: str) -> tuple[str, object]:
    import yaml

    if "=" not in s:
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {s!r}")
    key, value = s.split("=", 1)
    return key.strip(), yaml.safe_load(value)


def add_arguments(ap: argparse.ArgumentParser, preset: str) -> None:
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tau", type=float, default=0.1)
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", dest="overrides", type=_override, action="append", default=[], metavar="KEY=VALUE",
                    help=f"hparams override (YAML value), repeatable; the {preset} preset's overrides apply first")


def paired_editors(args: argparse.Namespace, preset: str, method: str = "MEMIT") -> dict:
    """``{"plain": editor, "revive": editor}`` on two copies of ``args.model``."""
    from revive_plugin.bench.components import ProjectComponents
    from revive_plugin.bench.config import preset_config

    cfg = preset_config(preset, methods=[method], model=args.model, device=args.device,
                        hparams_overrides=dict(args.overrides))
    parts = ProjectComponents()
    model, tok = parts.load_model(cfg)
    return {"plain": parts.make_editor(cfg, method, model, tok),
            "revive": parts.make_editor(cfg, method, copy.deepcopy(model), tok, revive_tau=args.tau)}
