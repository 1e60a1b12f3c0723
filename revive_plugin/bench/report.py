"""Reports of a run folder: results.csv, Table 1 / Table 2 shaped Markdown, trajectories, plots, summary.

Everything is rebuilt from the JSON files on disk (``baseline.json``, ``arms/*/checkpoints``),
so a resumed run reports exactly what an uninterrupted one would.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from pathlib import Path

from .rows import BASE_FIELDS, flatten
from .state import ArmProgress, atomic_write_text, read_json

# Table 1 columns: (key in a flattened row, header, scale to the paper's units, higher is better)
EDIT_COLUMNS = [
    ("efficacy", "Eff.↑", 100.0, True),
    ("paraphrase", "Para.↑", 100.0, True),
    ("neighborhood", "Neigh.↑", 100.0, True),
    ("fluency", "Flu.↑", 100.0, True),
    ("consistency", "Consis.↑", 100.0, True),
]
GENERAL_COLUMNS = [
    ("glue_avg", "GLUE↑", 100.0, True),
    ("ppl", "PPL↓", 1.0, False),
    ("probe", "Probe↑", 100.0, True),
    ("repr_cos", "Repr.↑", 1.0, True),
    ("ls_mean", "LS↑", 1.0, True),
    ("dom_share_mean", "DomΔ↓", 100.0, False),
]
_NEAR_ZERO = 0.01  # raw units (1 point of a % column, 0.01 of a 0–1 one): a plain score below it gets ↑↑ / ↓↓

def load_run(run_dir) -> dict:
    """Baseline, per-arm checkpoint lists (sorted by round) and progress of a run folder."""
    run_dir = Path(run_dir)
    cfg = read_json(run_dir / "config.json")
    baseline = read_json(run_dir / "baseline.json") if (run_dir / "baseline.json").exists() else None
    arms = {}
    for name in cfg.get("arms", []):
        arm_dir = run_dir / "arms" / name
        cps = sorted((read_json(p) for p in (arm_dir / "checkpoints").glob("round-*.json")),
                     key=lambda r: r["round"]) if (arm_dir / "checkpoints").is_dir() else []
        prog = ArmProgress.load(arm_dir)
        arms[name] = {"checkpoints": cps, "progress": prog}
    return {"config": cfg, "baseline": baseline, "arms": arms, "run_dir": str(run_dir)}


def merge_runs(run: dict, others) -> dict:
    """One report over run folders made with the same settings that differ only in their arms, e.g. a τ
    sweep run with ``--no-plain`` next to the run that holds the plain arm. Arms and τ values are united,
    the baseline is the first folder's (same settings, same unedited model). Raises ValueError naming
    what differs, or the arm two folders both hold."""
    from .config import config_diff

    record = dict(run["config"], config=dict(run["config"]["config"]), arms=list(run["config"]["arms"]))
    cfg, arms = record["config"], dict(run["arms"])
    for other in others:
        b = other["config"]
        diff = [k for k in config_diff(record["hash_payload"], b["hash_payload"]) if k not in ("taus", "plain")]
        diff += [what for key, what in (("hparams", "hparams (method YAML contents)"),
                                        ("data_fingerprint", "data (edit records)")) if record.get(key) != b.get(key)]
        if diff:
            raise ValueError(f"{other['run_dir']} and {run['run_dir']} differ in {', '.join(diff)}; only runs "
                             "that differ in their arms (--tau, --no-plain) can be reported together")
        both = sorted(set(cfg["taus"]) & set(b["config"]["taus"]))
        if both or (cfg["plain"] and b["config"]["plain"]):
            what = f"REVIVE τ={both[0]:g}" if both else "the plain method"
            raise ValueError(f"{run['run_dir']} and {other['run_dir']} both hold {what}; report one of them")
        cfg["taus"] = sorted(cfg["taus"] + b["config"]["taus"])
        cfg["plain"] = cfg["plain"] or b["config"]["plain"]
        record["arms"] += b["arms"]
        arms.update(other["arms"])
    for a in arms.values():  # several τ now: every REVIVE curve names its τ
        for cp in a["checkpoints"]:
            if cp["mode"] == "revive":
                cp["label"] = f"{cp['method']}+REVIVE (τ={cp['tau']:g})"
    return dict(run, config=record, arms=arms)


def rows(run: dict) -> list[dict]:
    out = []
    if run["baseline"] is not None:
        out.append(flatten(run["baseline"]))
    for arm in run["arms"].values():
        out += [flatten(cp) for cp in arm["checkpoints"]]
    return out


def to_csv(rows_: list[dict]) -> str:
    fields = list(BASE_FIELDS)
    for r in rows_:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows_:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    return buf.getvalue()


def _finished(arm: dict) -> bool:
    return arm["progress"] is not None and arm["progress"].status in ("done", "stopped")


def matched_edits(run: dict) -> int | None:
    """While some arm is still running: the most edits every arm with a checkpoint has been evaluated at
    (the table compares arms there); None once every arm has finished."""
    arms = [a for a in run["arms"].values() if a["checkpoints"]]
    if all(_finished(a) for a in run["arms"].values()) or not arms:
        return None
    return min(a["checkpoints"][-1]["edits"] for a in arms)


def final_rows(run: dict) -> dict:
    """Last checkpoint row of every arm that has one; while the run is going, each arm's checkpoint at
    :func:`matched_edits` (so no arm is compared after more edits than another)."""
    cap = matched_edits(run)
    out = {}
    for name, a in run["arms"].items():
        cps = [c for c in a["checkpoints"] if cap is None or c["edits"] <= cap]
        if cps:
            out[name] = flatten(cps[-1])
    return out


def _fmt(v, scale) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v * scale:.2f}"


def relative_change(new, old) -> str:
    """'↑ 53.5%' / '↓ 0.1%' as in Table 1; '↑↑' where the plain score is near zero.

    Works on raw values, so a 0–1 column (Repr., LS) gets a percentage like a % column."""
    if new is None or old is None:
        return ""
    if abs(old) < _NEAR_ZERO:
        return "↑↑" if new > old + _NEAR_ZERO else ("↓↓" if new < old - _NEAR_ZERO else "=")
    rel = (new - old) / abs(old) * 100.0
    return f"{'↑' if rel >= 0 else '↓'} {abs(rel):.1f}%"


def table1_markdown(run: dict) -> str:
    """Table 1 shape: unedited model, then per method the plain row and '+REVIVE' rows with changes."""
    cfg = run["config"]["config"]
    finals = final_rows(run)
    columns = [c for c in EDIT_COLUMNS + GENERAL_COLUMNS if _has(c[0], finals, run["baseline"])]
    n_edits = max((r["edits"] for r in finals.values()), default=0)
    when = ("evaluated after the last round" if matched_edits(run) is None else
            f"run in progress: arms compared at {n_edits} of {cfg['n_edits']} edits")
    lines = [f"Sequential editing of {cfg['model']}: {n_edits} edits in rounds of {cfg['batch_size']} "
             f"(retention of ALL edits, {when})", "",
             "| Method | " + " | ".join(c[1] for c in columns) + " |",
             "|---|" + "---|" * len(columns)]
    if run["baseline"] is not None:
        b = flatten(run["baseline"])
        lines.append(f"| {cfg['model']} (unedited) | " + " | ".join(_fmt(b.get(c[0]), c[2]) for c in columns) + " |")
    for method in cfg["methods"]:
        plain = next((r for r in finals.values() if r["method"] == method and r["mode"] == "plain"), None)
        if plain is not None:
            lines.append(f"| {method}{_stopped(run, plain)} | " +
                         " | ".join(_fmt(plain.get(c[0]), c[2]) for c in columns) + " |")
        for r in sorted((r for r in finals.values() if r["method"] == method and r["mode"] == "revive"),
                        key=lambda r: r["tau"]):
            name = "+REVIVE" + (f" (τ={r['tau']:g})" if len(cfg["taus"]) > 1 else "")
            cells = []
            for key, _, scale, _ in columns:
                cell = _fmt(r.get(key), scale)
                if plain is not None:
                    change = relative_change(r.get(key), plain.get(key))
                    cell = f"{cell} {change}".strip()
                cells.append(cell)
            lines.append(f"| {name}{_stopped(run, r)} | " + " | ".join(cells) + " |")
    lines += ["", "Eff./Para./Neigh./Consis./GLUE/Probe in %, Flu. = 100 × n-gram entropy (bits), "
              "PPL on held-out text, Repr. = mean cosine of never-edited prompts' hidden states to the unedited "
              "model's (Fig 10), LS = mean Eq. 3 similarity of the edited matrices to the originals, "
              "DomΔ = % of the accumulated update ‖W_t − W_0‖² that lies in the original dominant subspace. "
              "Changes are relative to the plain method (↑↑/↓↓: plain score near zero).", "",
              generation_footnote(cfg)]
    return "\n".join(lines) + "\n"


def generation_footnote(cfg: dict) -> str:
    """Which generation protocol produced Flu. and Consis. (runs made before the option: the fast one)."""
    n = cfg.get("n_generation")
    if cfg.get("generation_protocol", "fast") == "memit":
        how = ("MEMIT's protocol: top-k 5 sampling (seeded) up to 100 tokens including the prompt, on every "
               "generation prompt")
    else:
        how = "the fast protocol: greedy decoding of 40 new tokens on the first 2 generation prompts"
    if "generation_protocol" not in cfg:  # a run folder from before the MEMIT protocol existed
        return (f"Flu./Consis.: {how} of the first {n} evaluated records; regex word tokens; Consis. = TF-IDF "
                "cosine with the new object's own summary.")
    return (f"Flu./Consis.: {how} of the first {n} evaluated records; nltk word tokens; Consis. = TF-IDF cosine "
            "with Wikipedia texts about other subjects sharing (relation, new object).")


def _stopped(run: dict, row: dict) -> str:
    prog = run["arms"][row["arm"]]["progress"]
    if prog is not None and prog.status == "stopped":
        return f" (stopped by drift alarm at {row['edits']} edits)"
    return ""


def _has(key, finals: dict, baseline) -> bool:
    vals = [r.get(key) for r in finals.values()]
    if baseline is not None:
        vals.append(flatten(baseline).get(key))
    return any(v is not None for v in vals)


def table2_markdown(run: dict) -> str | None:
    """Table 2 shape (τ sweep): per method, one row per threshold; None without a sweep."""
    cfg = run["config"]["config"]
    if len(cfg["taus"]) < 2:
        return None
    finals = final_rows(run)
    columns = [c for c in EDIT_COLUMNS + GENERAL_COLUMNS if _has(c[0], finals, None)]
    lines = [f"REVIVE threshold sweep on {cfg['model']} ({cfg['n_edits']} edits)", "",
             "| Method | Thresh | " + " | ".join(c[1] for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for method in cfg["methods"]:
        plain = next((r for r in finals.values() if r["method"] == method and r["mode"] == "plain"), None)
        if plain is not None:
            lines.append(f"| {method} | plain | " + " | ".join(_fmt(plain.get(c[0]), c[2]) for c in columns) + " |")
        for r in sorted((r for r in finals.values() if r["method"] == method and r["mode"] == "revive"),
                        key=lambda r: r["tau"]):
            lines.append(f"| {method}+REVIVE | {r['tau']:.2f} | " +
                         " | ".join(_fmt(r.get(c[0]), c[2]) for c in columns) + " |")
    return "\n".join(lines) + "\n"


# trajectory.md columns: (key in a flattened row, header, scale, format)
TRAJECTORY_COLUMNS = [
    ("efficacy", "Eff.", 100.0, "{:.1f}"), ("paraphrase", "Para.", 100.0, "{:.1f}"),
    ("neighborhood", "Neigh.", 100.0, "{:.1f}"), ("ppl", "PPL", 1.0, "{:.1f}"), ("probe", "Probe", 100.0, "{:.0f}"),
    ("repr_cos", "Repr. cos", 1.0, "{:.2f}"), ("repr_cka", "Repr. CKA", 1.0, "{:.2f}"),
    ("ls_mean", "LS", 1.0, "{:.2f}"), ("ss_left_mean", "SS (left)", 1.0, "{:.2f}"),
    ("dom_share_mean", "DomΔ %", 100.0, "{:.1f}"),
]


def trajectory_markdown(run: dict) -> str:
    """trajectory.md: per method, one line per checkpoint with every arm's value side by side
    ("plain / +REVIVE"), starting at the unedited model (0 edits); the curves of the plots as numbers."""
    cfg = run["config"]["config"]
    base = flatten(run["baseline"]) if run["baseline"] is not None else {}
    lines = []
    for method in cfg["methods"]:
        arms = [(name, [flatten(c) for c in a["checkpoints"]]) for name, a in run["arms"].items()
                if a["checkpoints"] and a["checkpoints"][0]["method"] == method]
        if not arms:
            continue
        arms.sort(key=lambda na: (na[1][0]["mode"] != "plain", na[1][0]["tau"] or 0.0))
        labels = [("plain" if r[0]["mode"] == "plain" else f"+REVIVE τ={r[0]['tau']:g}") for _, r in arms]
        columns = [c for c in TRAJECTORY_COLUMNS if any(c[0] in r for _, rs in arms for r in rs)]
        lines += [f"{method} on {cfg['model']}, rounds of {cfg['batch_size']}: each cell is "
                  f"{' / '.join(labels)} (– : not evaluated there)", "",
                  "| edits | " + " | ".join(c[1] for c in columns) + " |", "|---|" + "---|" * len(columns)]
        if base:
            lines.append("| 0 (unedited) | " + " | ".join(_cell(base.get(c[0]), c) for c in columns) + " |")
        by_edits = [{r["edits"]: r for r in rs} for _, rs in arms]
        for n in sorted(set().union(*by_edits)):
            lines.append(f"| {n} | " + " | ".join(
                " / ".join(_cell(rs.get(n, {}).get(c[0]), c) for rs in by_edits) for c in columns) + " |")
        lines.append("")
    return "\n".join(lines)


def _cell(v, column) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return column[3].format(v * column[2])


def run_markdown(run: dict, command: str | None = None) -> str:
    """run.md: the command that makes the run, each arm's progress and times, and the environment."""
    record = run["config"]
    cfg = record["config"]
    command = command or record.get("command")
    lines = [f"# {cfg['model']}: {', '.join(run['arms'])}; {cfg['n_edits']} edits "
             f"in rounds of {cfg['batch_size']}", ""]
    if command:
        lines += ["```", command, "```", "", "Continue after an interruption: `revive bench --resume RUN_DIR`.", ""]
    lines += ["| arm | status | edits | edit time (min) | evaluation time (min) | median s/round |",
              "|---|---|---|---|---|---|"]
    for name, a in run["arms"].items():
        prog = a["progress"]
        if prog is None:
            lines.append(f"| {name} | not started | 0 | – | – | – |")
            continue
        median = f"{statistics.median(prog.round_seconds):.1f}" if prog.round_seconds else "–"
        lines.append(f"| {name} | {prog.status} | {prog.edits_done} | {prog.edit_seconds / 60:.1f} | "
                     f"{prog.eval_seconds / 60:.1f} | {median} |")
    env = record.get("environment") or {}
    if env:
        lines += ["", "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()) + "."]
    return "\n".join(lines) + "\n"


def write_reports(run_dir, plots: bool = True, out_dir=None, command: str | None = None, with_runs=()) -> dict:
    """Write results.csv, table.md (+ tau_table.md), trajectory.md, run.md and plots of the run in ``run_dir`` into
    ``out_dir`` (default: the run folder), together with the arms of the run folders ``with_runs``
    (:func:`merge_runs`); works on an unfinished run. Returns the written paths."""
    run = load_run(run_dir)
    if with_runs:
        run = merge_runs(run, [load_run(d) for d in with_runs])
    out_dir = Path(out_dir) if out_dir is not None else Path(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = {"csv": out_dir / "results.csv", "table": out_dir / "table.md", "run": out_dir / "run.md"}
    atomic_write_text(out["csv"], to_csv(rows(run)))
    atomic_write_text(out["table"], table1_markdown(run))
    atomic_write_text(out["run"], run_markdown(run, command))
    out["trajectory"] = out_dir / "trajectory.md"
    atomic_write_text(out["trajectory"], trajectory_markdown(run))
    t2 = table2_markdown(run)
    if t2 is not None:
        out["tau_table"] = out_dir / "tau_table.md"
        atomic_write_text(out["tau_table"], t2)
    if plots:
        from .plots import write_plots
        out["plots"] = write_plots(run, out_dir / "plots")
    return out
