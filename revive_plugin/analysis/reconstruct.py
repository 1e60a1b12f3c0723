"""Energy reconstruction experiment (paper §2.2.1, Fig. 2a).

Every chosen matrix is rebuilt from its top components holding ``n`` of the singular-value
energy (Eq. 5 rank) and general ability is measured for each ``n``.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
from tqdm.auto import tqdm

from revive_plugin.analysis.ability import AbilityFn, degradation
from revive_plugin.analysis.targets import Target, restored
from revive_plugin.spectral import SpectralReference, check_fraction, energy_rank

DEFAULT_FRACTIONS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)


def run_reconstruction(model, tok, targets: Sequence[Target], ability_fn: AbilityFn,
                       fractions: Sequence[float] = DEFAULT_FRACTIONS, progress: bool = True) -> dict:
    """Measure ``ability_fn`` with all ``targets`` replaced by their n-energy reconstructions.

    Returns a JSON-able dict: ``baseline`` metrics, and per fraction the Eq. 5 ranks used,
    the metrics, their drop from baseline and the ratio to baseline. The model's weights are
    restored afterwards, also on errors.
    """
    fractions = [check_fraction(f, "fraction", allow_one=True) for f in fractions]
    if not fractions:
        raise ValueError("fractions is empty")
    if not targets:
        raise ValueError("no target parameters")
    params = dict(model.named_parameters())
    start = time.perf_counter()
    refs = {t.name: SpectralReference.from_weight(t.math_view(params[t.name].detach())) for t in targets}
    baseline = ability_fn(model, tok)
    rows = []
    with restored(model, [t.name for t in targets]) as originals:
        for frac in tqdm(fractions, desc="energy reconstruction", disable=not progress):
            ranks = {}
            with torch.no_grad():
                for t in targets:
                    ref = refs[t.name]
                    k = energy_rank(ref.S, frac)
                    ranks[t.name] = k
                    rebuilt = t.stored_view(ref.reconstruct(k))
                    params[t.name].copy_(rebuilt.to(originals[t.name].dtype))
            metrics = ability_fn(model, tok)
            rows.append({
                "fraction": frac,
                "ranks": ranks,
                "metrics": metrics,
                "drop": {m: degradation(m, baseline[m], v) for m, v in metrics.items()},
                "ratio": {m: (v / baseline[m] if baseline[m] else float("nan")) for m, v in metrics.items()},
            })
    return {
        "experiment": "reconstruct",
        "params": [t.name for t in targets],
        "full_rank": {t.name: refs[t.name].rank for t in targets},
        "baseline": baseline,
        "results": rows,
        "seconds": time.perf_counter() - start,
    }
