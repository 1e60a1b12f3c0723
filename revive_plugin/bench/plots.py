"""PNG plots of a run (paper Figs 1/3/7: metrics vs edits; Figs 4/5: LS and SS vs rounds;
Fig 8: τ sweep). Plain methods are solid lines, +REVIVE dashed, one colour per method."""

from __future__ import annotations

from pathlib import Path

from .rows import flatten

_EDIT = [("efficacy", "Efficacy"), ("paraphrase", "Paraphrase"), ("neighborhood", "Neighborhood")]
_SWEEP = _EDIT + [("fluency", "Fluency (entropy, bits)"), ("consistency", "Consistency"),
                  ("glue_avg", "GLUE average"), ("ppl", "Held-out perplexity"), ("probe", "Knowledge probe")]


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _style(run: dict):
    colours = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange", "tab:brown"]
    methods = run["config"]["config"]["methods"]
    by_method = {m: colours[i % len(colours)] for i, m in enumerate(methods)}
    taus = sorted(run["config"]["config"]["taus"])
    dashes = ["--", "-.", ":", (0, (5, 1)), (0, (3, 1, 1, 1)), (0, (1, 1))]

    def style(row):
        if row["mode"] == "plain":
            return dict(color=by_method[row["method"]], linestyle="-", marker="o", markersize=3)
        return dict(color=by_method[row["method"]], linestyle=dashes[taus.index(row["tau"]) % len(dashes)],
                    marker="s", markersize=3)
    return style


def _legend_and_save(fig, axes, title, path):
    """One legend for all panels, right of them; the title on top."""
    handles, labels = [], []
    for ax in axes.flat:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in labels:
                handles.append(h)
                labels.append(l)
    fig.suptitle(title)
    fig.tight_layout()
    fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.savefig(path, dpi=110, bbox_inches="tight")


def _series(run: dict):
    for name, arm in run["arms"].items():
        rows = [flatten(cp) for cp in arm["checkpoints"]]
        if rows:
            yield name, rows


def _wide_positive(values, ratio: float = 20.0) -> bool:
    """True when ``values`` are all positive and span more than ``ratio``× (perplexity after a collapse):
    such a panel is drawn on a log scale, or its early points would sit flat on the axis."""
    values = [float(v) for v in values]
    return bool(values) and min(values) > 0 and max(values) > ratio * min(values)


def _count_ticks(ax) -> None:
    """x ticks for rounds and edit counts: whole numbers in steps of 1, 2 or 5 × 10^k (0, 1000, 2000…, not 600)."""
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))


def _metric_grid(run, keys, x_key, xlabel, title, path, baseline_row):
    """One panel per metric; every curve starts at the unedited model (x = 0) when it was measured."""
    plt = _plt()
    style = _style(run)
    keys = [(k, t) for k, t in keys if any(r.get(k) is not None for _, rows in _series(run) for r in rows)]
    if not keys:
        return None
    ncol = min(3, len(keys))
    nrow = (len(keys) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.4 * nrow), squeeze=False)
    for ax, (key, label) in zip(axes.flat, keys):
        start = [(0, baseline_row[key])] if baseline_row is not None and baseline_row.get(key) is not None else []
        drawn = []
        for name, rows in _series(run):
            pts = [(r[x_key], r[key]) for r in rows if r.get(key) is not None]
            if pts:
                xs, ys = zip(*(start + pts))
                ax.plot(xs, ys, label=rows[0]["label"], **style(rows[0]))
                drawn += ys
        if start:
            ax.axhline(start[0][1], color="grey", linestyle=":", linewidth=1, label="unedited")
        if _wide_positive(drawn):
            ax.set_yscale("log")
            label += " (log scale)"
        ax.set_title(label)
        ax.set_xlabel(xlabel)
        _count_ticks(ax)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    _legend_and_save(fig, axes, title, path)
    plt.close(fig)
    return path


def _ss_heatmaps(run, path):
    """Fig 5 style: |cos| between the top-k right singular vectors of W_t and of W_0 (final round)."""
    plt = _plt()
    panels = []
    for name, arm in run["arms"].items():
        if arm["checkpoints"]:
            cp = arm["checkpoints"][-1]
            block = (cp.get("spectral") or {}).get("ss_block")
            if block:
                panels.append((cp["label"], cp["edits"], block))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.8 * len(panels), 3.6), squeeze=False)
    for ax, (label, edits, block) in zip(axes.flat, panels):
        im = ax.imshow(block["matrix"], vmin=0, vmax=1, cmap="viridis")
        ax.set_title(f"{label}\n{edits} edits", fontsize=9)
        ax.set_xlabel("original singular vector j")
        ax.set_ylabel("edited singular vector i")
    fig.colorbar(im, ax=list(axes.flat), shrink=0.8, label="|cos|")
    fig.suptitle(f"SS (right vectors, top-k) of {panels[0][2]['param']}", fontsize=9)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _tau_sweep(run, path):
    plt = _plt()
    cfg = run["config"]["config"]
    if len(cfg["taus"]) < 2:
        return None
    finals = {n: flatten(a["checkpoints"][-1]) for n, a in run["arms"].items() if a["checkpoints"]}
    keys = [(k, t) for k, t in _SWEEP if any(r.get(k) is not None for r in finals.values())]
    ncol = min(4, len(keys))
    nrow = (len(keys) + ncol - 1) // ncol
    fig, axes = plt.subplots(nrow, ncol, figsize=(4 * ncol, 3.2 * nrow), squeeze=False)
    colours = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange"]
    for ax, (key, label) in zip(axes.flat, keys):
        for i, method in enumerate(cfg["methods"]):
            pts = sorted((r["tau"], r[key]) for r in finals.values()
                         if r["method"] == method and r["mode"] == "revive" and r.get(key) is not None)
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", color=colours[i % 5], label=f"{method}+REVIVE")
            plain = next((r for r in finals.values() if r["method"] == method and r["mode"] == "plain"), None)
            if plain is not None and plain.get(key) is not None:
                ax.axhline(plain[key], color=colours[i % 5], linestyle="--", linewidth=1, label=f"{method} (plain)")
        ax.set_title(label)
        ax.set_xlabel("τ (energy threshold)")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    _legend_and_save(fig, axes, f"REVIVE threshold sweep ({cfg['n_edits']} edits)", path)
    plt.close(fig)
    return path


def _repr_scatter(run, path):
    """Fig 10 style: hidden states of the never-edited prompts before (unedited) and after the last
    checkpoint of every arm, on the unedited states' top two principal axes (PCA)."""
    from .state import REPR_FINAL_FILE, REPR_REFERENCE_FILE, load_tensors

    if not run.get("run_dir"):
        return None
    run_dir = Path(run["run_dir"])
    ref_path = run_dir / REPR_REFERENCE_FILE
    finals = [(a["checkpoints"][-1], run_dir / "arms" / n / REPR_FINAL_FILE) for n, a in run["arms"].items()
              if a["checkpoints"] and (run_dir / "arms" / n / REPR_FINAL_FILE).is_file()]
    if not ref_path.is_file() or not finals:
        return None
    from revive_plugin.evaluation.representation import pca_2d

    plt = _plt()
    ref = load_tensors(ref_path)["states"]
    points = pca_2d(ref, *(load_tensors(p)["states"] for _, p in finals))
    fig, axes = plt.subplots(1, len(finals), figsize=(4.2 * len(finals), 4.0), squeeze=False, sharex=True, sharey=True)
    for ax, (cp, _), after in zip(axes.flat, finals, points[1:]):
        ax.scatter(points[0][:, 0], points[0][:, 1], s=4, alpha=0.5, color="grey", label="unedited")
        ax.scatter(after[:, 0], after[:, 1], s=4, alpha=0.5, color="tab:red", label="edited")
        cos = (cp.get("general") or {}).get("repr_cos")
        ax.set_title(f"{cp['label']}, {cp['edits']} edits" + (f"\ncos {cos:.3f}" if cos is not None else ""), fontsize=9)
        ax.set_xlabel("PC 1 (unedited)")
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("PC 2 (unedited)")
    _legend_and_save(fig, axes, f"Representations of {len(ref)} never-edited prompts ({run['config']['config']['model']})", path)
    plt.close(fig)
    return path


def write_plots(run: dict, out_dir) -> dict:
    """Write every plot that the run's data supports; returns {name: path}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    base = flatten(run["baseline"]) if run["baseline"] is not None else None
    model = run["config"]["config"]["model"]
    general = sorted({k for _, rows in _series(run) for r in rows for k in r if k.startswith("glue_")})
    general_keys = [(k, k.removeprefix("glue_").upper() if k != "glue_avg" else "GLUE average") for k in general]
    general_keys += [("ppl", "Held-out perplexity"), ("probe", "Knowledge probe"),
                     ("repr_cos", "Representation cosine to unedited"), ("repr_cka", "Representation linear CKA")]
    made = {
        "edit_metrics": _metric_grid(run, _EDIT, "edits", "number of edits",
                                     f"Retention of all edits so far ({model})",
                                     out_dir / "edit_metrics_vs_edits.png", base),
        "general": _metric_grid(run, general_keys, "edits", "number of edits",
                                f"General ability during sequential editing ({model})",
                                out_dir / "general_vs_edits.png", base),
        "spectral": _metric_grid(run, [("ls_mean", "LS (Eq. 3), mean over edited matrices"),
                                       ("ls_min", "LS, worst edited matrix"),
                                       ("ss_right_mean", "SS right vectors (mean max |cos|)"),
                                       ("ss_left_mean", "SS left vectors (mean max |cos|)"),
                                       ("norm_growth_mean", "‖W_t‖/‖W_0‖ (mean)")],
                                 "round", "editing round", f"Dominant-subspace drift ({model})",
                                 out_dir / "spectral_vs_rounds.png", None),
        "ss_heatmap": _ss_heatmaps(run, out_dir / "ss_heatmap.png"),
        "tau_sweep": _tau_sweep(run, out_dir / "tau_sweep.png"),
        "representations": _repr_scatter(run, out_dir / "representations_pca.png"),
    }
    return {k: v for k, v in made.items() if v is not None}
