"""Group perturbation experiment (paper §2.2.2, Fig. 2b; output side: Appendix F.1).

Components are split into ``n_groups`` groups by cumulative energy; for each group and seed
every target matrix gets a random structured perturbation of that group (Eq. 2) with the same
Frobenius norm, and the ability drop from the unperturbed model is recorded.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Sequence

import torch
from tqdm.auto import tqdm

from revive_plugin.analysis.ability import AbilityFn, degradation
from revive_plugin.analysis.targets import Target, restored
from revive_plugin.spectral import SpectralReference, energy_groups, group_perturbation


def _summary(values: list[float]) -> dict:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"mean": float("nan"), "std": float("nan"), "min": float("nan"), "max": float("nan")}
    return {
        "mean": statistics.fmean(finite),
        "std": statistics.stdev(finite) if len(finite) > 1 else 0.0,
        "min": min(finite),
        "max": max(finite),
    }


def run_group_perturbation(model, tok, targets: Sequence[Target], ability_fn: AbilityFn, *,
                           eps: float | None = None, eps_relative: float | None = None,
                           n_groups: int = 10, seeds: Sequence[int] = (0, 1, 2), side: str = "input",
                           groups: Sequence[int] | None = None, progress: bool = True) -> dict:
    """Ability drop per energy group under Eq. 2 perturbations.

    Strength: ``eps`` (absolute Frobenius norm per matrix) or ``eps_relative`` (fraction of each
    matrix's own ``||W||_F``); exactly one must be given. ``side``: "input" (remap v_j of the
    group, §2.2.2) or "output" (u_i, Appendix F.1). ``groups`` restricts the group indices.
    Seeds are shared across groups, so group g and seed s always draw the same coefficients.
    Returns a JSON-able dict with ``baseline``, per-group per-seed metrics and drops, and
    mean/std/min/max of each drop over seeds. Weights are restored afterwards, also on errors.
    """
    if (eps is None) == (eps_relative is None):
        raise ValueError("give exactly one of eps and eps_relative")
    strength = eps if eps is not None else eps_relative
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not strength > 0 or not math.isfinite(strength):
        raise ValueError(f"perturbation strength must be a positive number, got {strength!r}")
    if side not in ("input", "output"):
        raise ValueError(f"side must be 'input' or 'output', got {side!r}")
    if not targets:
        raise ValueError("no target parameters")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty")
    group_ids = list(range(n_groups)) if groups is None else [int(g) for g in groups]
    bad = [g for g in group_ids if not 0 <= g < n_groups]
    if bad:
        raise ValueError(f"group indices out of range [0, {n_groups}): {bad}")

    start = time.perf_counter()
    params = dict(model.named_parameters())
    refs = {t.name: SpectralReference.from_weight(t.math_view(params[t.name].detach())) for t in targets}
    parts = {t.name: energy_groups(refs[t.name].S, n_groups) for t in targets}
    eps_of = {t.name: float(eps) if eps is not None else float(eps_relative) * refs[t.name].fro_norm
              for t in targets}
    baseline = ability_fn(model, tok)
    rows = []
    jobs = [(g, s) for g in group_ids for s in seeds]
    with restored(model, [t.name for t in targets]) as originals:
        bar = tqdm(jobs, desc=f"group perturbation ({side})", disable=not progress)
        for g, seed in bar:
            applied = {}
            with torch.no_grad():
                for ti, t in enumerate(targets):
                    if len(parts[t.name][g]) == 0:
                        continue
                    gen = torch.Generator().manual_seed(seed * 1_000_003 + g * 1_009 + ti)
                    delta = group_perturbation(refs[t.name], g, eps_of[t.name], side=side,
                                               generator=gen, n_groups=n_groups)
                    base = originals[t.name]
                    params[t.name].copy_(base + t.stored_view(delta).to(base.dtype))
                    applied[t.name] = True
            metrics = ability_fn(model, tok) if applied else {m: float("nan") for m in baseline}
            rows.append({
                "group": g, "seed": seed, "perturbed": sorted(applied),
                "metrics": metrics,
                "drop": {m: degradation(m, baseline[m], v) for m, v in metrics.items()},
            })
            with torch.no_grad():
                for name in applied:
                    params[name].copy_(originals[name])
    return {
        "experiment": "perturb",
        "side": side,
        "params": [t.name for t in targets],
        "eps": eps_of,
        "eps_relative": eps_relative,
        "n_groups": n_groups,
        "seeds": seeds,
        "baseline": baseline,
        "runs": rows,
        "groups": _group_summary(rows, group_ids, n_groups, list(baseline),
                                 {t.name: parts[t.name] for t in targets}),
        "seconds": time.perf_counter() - start,
    }


def _group_summary(rows, group_ids, n_groups, metrics, parts) -> list[dict]:
    summary = []
    for g in group_ids:
        g_rows = [r for r in rows if r["group"] == g]
        summary.append({
            "group": g,
            "energy_range": [g / n_groups, (g + 1) / n_groups],
            "components": {n: [p[g].start, p[g].stop] if isinstance(p[g], range) else list(p[g])
                           for n, p in parts.items()},
            "drop": {m: _summary([r["drop"][m] for r in g_rows]) for m in metrics},
            "metrics": {m: _summary([r["metrics"][m] for r in g_rows]) for m in metrics},
        })
    return summary


def merge_perturbation_results(*results: dict) -> dict:
    """Combine runs of the same experiment made with different seeds (e.g. in separate jobs).

    Parameters, side, strengths, group count and baseline must agree; seeds must not repeat.
    """
    if not results:
        raise ValueError("nothing to merge")
    first = results[0]
    keys = ("side", "params", "eps", "n_groups", "baseline")
    for other in results[1:]:
        for key in keys:
            if other.get(key) != first.get(key):
                raise ValueError(f"cannot merge perturbation results: {key!r} differs")
    seeds = [s for r in results for s in r["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"cannot merge perturbation results: repeated seeds {seeds}")
    runs = sorted((run for r in results for run in r["runs"]), key=lambda run: (run["group"], run["seed"]))
    group_ids = sorted({run["group"] for run in runs})
    parts = {n: {g["group"]: g["components"][n] for r in results for g in r["groups"]} for n in first["params"]}
    merged = dict(first)
    merged.update(seeds=seeds, runs=runs, seconds=sum(r.get("seconds", 0.0) for r in results),
                  groups=_group_summary(runs, group_ids, first["n_groups"], list(first["baseline"]), parts))
    return merged
