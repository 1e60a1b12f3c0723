"""Paper-style figures for the §2 analyses (matplotlib, Agg backend, PNG files).

Fig. 2a: ability vs reconstruction energy; Fig. 2b / 11: ability drop per energy group;
Fig. 4: LS vs editing round; Figs 5, 12-14: SS heatmaps (dominant vector x original basis
index) per round and the per-vector maximum.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

_METRIC_LABELS = {"perplexity": "held-out perplexity", "knowledge": "knowledge probe accuracy"}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    _plt().close(fig)
    return path


def _label(metric: str) -> str:
    return _METRIC_LABELS.get(metric, metric)


def _short(name: str) -> str:
    parts = name.split(".")
    layer = next((p for p in parts if p.isdigit()), None)
    module = parts[-2] if len(parts) > 1 and parts[-1] == "weight" else parts[-1]
    return f"L{layer} {module}" if layer is not None else name


def plot_reconstruction(result: Mapping, path) -> Path:
    """Fig. 2a: each metric vs the energy share kept, with the full model as a dashed line."""
    plt = _plt()
    metrics = list(result["baseline"])
    rows = result["results"]
    labels = [f"{100 * r['fraction']:g}%" for r in rows]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.8 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        values = [r["metrics"][metric] for r in rows]
        bars = ax.bar(range(len(rows)), values, color="#4C72B0", edgecolor="black", linewidth=0.6)
        ax.axhline(result["baseline"][metric], color="#C44E52", linestyle="--", label="original")
        for b, v in zip(bars, values):
            ax.annotate(f"{v:.3g}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                        va="bottom", fontsize=7)
        if metric == "perplexity" and max(values) / max(min(values), 1e-9) > 20:
            ax.set_yscale("log")
        ax.set_xticks(range(len(rows)), labels)
        ax.set_xlabel("singular-value energy kept (top components)")
        ax.set_ylabel(_label(metric))
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Energy reconstruction of {len(result['params'])} matrices (Fig. 2a)")
    return _save(fig, path)


def plot_group_perturbation(result: Mapping, path) -> Path:
    """Fig. 2b / 11: mean ability drop per energy group, error bars = std over seeds, dots = seeds."""
    plt = _plt()
    metrics = list(result["baseline"])
    groups = result["groups"]
    n = result["n_groups"]
    labels = [f"{round(100 * g['group'] / n)}-{round(100 * (g['group'] + 1) / n)}%" for g in groups]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.4 * len(metrics), 3.9), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        means = [g["drop"][metric]["mean"] for g in groups]
        stds = [g["drop"][metric]["std"] for g in groups]
        xs = range(len(groups))
        ax.bar(xs, means, yerr=stds, capsize=3, color="#DD8452", edgecolor="black", linewidth=0.6,
               error_kw={"elinewidth": 1})
        for x, g in zip(xs, groups):
            seeds = [r["drop"][metric] for r in result["runs"] if r["group"] == g["group"]]
            ax.scatter([x] * len(seeds), seeds, s=8, color="black", zorder=3)
        ax.axhline(0.0, color="gray", linewidth=0.8)
        ax.set_xticks(list(xs), labels, rotation=45, ha="right", fontsize=8)
        ax.set_xlabel(f"perturbed energy group ({result['side']} directions)")
        unit = "increase" if metric == "perplexity" else "drop"
        ax.set_ylabel(f"{_label(metric)} {unit}")
        ax.grid(axis="y", alpha=0.3)
    eps = result.get("eps_relative")
    strength = f"eps = {eps:g} x ||W||_F" if eps is not None else f"eps = {next(iter(result['eps'].values())):g}"
    base = ", ".join(f"{m} {v:.4g}" for m, v in result["baseline"].items())
    fig.suptitle(f"Group perturbation, {len(result['params'])} matrices, {strength}, "
                 f"{len(result['seeds'])} seeds (Fig. 2b)\nunperturbed: {base}", fontsize=10)
    return _save(fig, path)


def plot_ls_rounds(drift: Mapping, path, metric: str = "ls", ylabel: str = "LS$_t$") -> Path:
    """Fig. 4: one metric (default LS, Eq. 3) vs editing round, one line per matrix."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    for name, rows in drift["reports"].items():
        if rows:
            ax.plot([r["round"] for r in rows], [r[metric] for r in rows], marker="o", markersize=3,
                    label=_short(name))
    ax.set_xlabel("editing round")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if metric != "norm_growth":
        lo = min([r[metric] for rows in drift["reports"].values() for r in rows] or [0.0])
        ax.set_ylim(min(0.0, lo) if lo < 0.5 else max(0.0, lo - 0.05), 1.02)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(f"{ylabel} vs editing round (tau = {drift['tau']:g})")
    return _save(fig, path)


def plot_drift_summary(drift: Mapping, path) -> Path:
    """LS, SS mean/min maxima (right and left) and norm growth vs round, averaged over matrices."""
    plt = _plt()
    keys = [("ls", "LS"), ("ss_right_mean_max", "SS right, mean of max"),
            ("ss_right_min_max", "SS right, min of max"), ("ss_left_mean_max", "SS left, mean of max"),
            ("ss_left_min_max", "SS left, min of max"), ("norm_growth", "||W_t|| / ||W_0||")]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.4))
    for ax, (key, title) in zip(axes.flat, keys):
        for name, rows in drift["reports"].items():
            if rows:
                ax.plot([r["round"] for r in rows], [r[key] for r in rows], marker="o", markersize=2,
                        linewidth=1, label=_short(name))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("editing round", fontsize=8)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=6, ncol=2)
    return _save(fig, path)


def _pick(items: Sequence, limit: int) -> list:
    if len(items) <= limit:
        return list(items)
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def plot_ss_heatmaps(matrices: Mapping[int, object], path, title: str, max_panels: int = 10,
                     max_cols: int | None = None) -> Path:
    """Figs 5, 12-14: |cos| between each dominant vector of W_t (rows) and the original basis
    (columns, by singular index), one panel per round (evenly subsampled to ``max_panels``)."""
    plt = _plt()
    rounds = _pick(sorted(matrices), max_panels)
    if not rounds:
        raise ValueError("no SS matrices to plot")
    first = matrices[rounds[0]]
    k, r = first.shape
    cols = min(r, max_cols or max(64, 4 * k))
    ncol = min(5, len(rounds))
    nrow = math.ceil(len(rounds) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol + 1.0, 2.6 * nrow + 0.6), squeeze=False,
                             constrained_layout=True)
    image = None
    for i, (ax, rnd) in enumerate(zip(axes.flat, rounds)):
        mat = matrices[rnd][:, :cols]
        mat = mat.numpy() if hasattr(mat, "numpy") else mat
        image = ax.imshow(mat, aspect="auto", vmin=0.0, vmax=1.0, cmap="viridis", interpolation="nearest",
                          extent=(-0.5, cols - 0.5, k + 0.5, 0.5))
        ax.yaxis.get_major_locator().set_params(integer=True)
        ax.set_title(f"SS$_{{{rnd}}}$", fontsize=9)
        if i // ncol == nrow - 1 or i + ncol >= len(rounds):
            ax.set_xlabel("original basis index", fontsize=7)
        if i % ncol == 0:
            ax.set_ylabel("dominant vector of W$_t$", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(rounds):]:
        ax.axis("off")
    fig.colorbar(image, ax=axes, shrink=0.85, label="|cos|")
    fig.suptitle(f"{title} (first {cols} of {r} original vectors)", fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_ss_max(rows: Sequence[Mapping], path, side: str, title: str, max_lines: int = 10) -> Path:
    """Per dominant vector, the max |cos| with the original basis; one line per round."""
    plt = _plt()
    rows = _pick(list(rows), max_lines)
    if not rows:
        raise ValueError("no SS rows to plot")
    fig, ax = plt.subplots(figsize=(6.0, 3.8))
    cmap = plt.get_cmap("viridis")
    key = f"ss_{side}_max"
    for i, row in enumerate(rows):
        values = row[key]
        ax.plot(range(1, len(values) + 1), values, color=cmap(i / max(1, len(rows) - 1)), linewidth=1.2,
                label=f"round {row['round']}")
    ax.set_ylim(0.0, 1.02)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("dominant singular vector of W$_t$ (by rank)")
    ax.set_ylabel("max |cos| with original basis")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)
