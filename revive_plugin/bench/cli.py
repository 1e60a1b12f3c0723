"""``revive bench``: sequential-editing benchmark, methods x {plain, +REVIVE} (paper §4)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from pathlib import Path

import yaml

from ..editing import METHODS
from .config import PRESETS, BenchConfig, preset_config

_DESCRIPTION = """\
Sequential-editing benchmark (REVIVE paper §4): apply N edits in rounds of B with each method,
plain and with REVIVE, and after every R rounds evaluate ALL edits made so far (efficacy,
paraphrase, neighborhood; fluency/consistency at the end), general ability (GLUE-style subsets,
held-out perplexity, knowledge probe) and the spectral drift (LS, SS, norm growth) of every
edited matrix. Writes config.json, per-checkpoint JSON, results.csv, table.md (Table 1 shape),
tau_table.md (Table 2 shape, with several --tau) and plots/*.png into the run folder.
Interrupt at any time and continue with --resume RUN_DIR (same numbers as an uninterrupted run).

Default: the bundled SmolLM2-135M, the offline fact set, MEMIT vs MEMIT+REVIVE; sized for a
2-core CPU. --preset long runs longer; --preset paper is the paper's 10,000 edits x 6 methods
(use a GPU and --model for the paper's models)."""


def _int_or_none(s: str):
    return None if s.lower() in ("all", "none") else int(s)


def _csv(s: str) -> list[str]:
    return [x.strip() for x in s.split(",") if x.strip()]


def _taus(s: str) -> list[float]:
    try:
        return [float(x) for x in _csv(s)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--tau expects numbers separated by commas, got {s!r}") from None


def _methods(s: str) -> list[str]:
    return list(METHODS) if s.strip().lower() == "all" else _csv(s)


def _kv(s: str):
    if "=" not in s:
        raise argparse.ArgumentTypeError(f"--set expects KEY=VALUE, got {s!r}")
    k, v = s.split("=", 1)
    return k.strip(), yaml.safe_load(v)


def _d(name: str) -> str:
    return f"(default: {PRESETS['default'].get(name, getattr(BenchConfig(), name))})"


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand (called by revive_plugin.cli)."""
    p = subparsers.add_parser("bench", help="sequential-editing benchmark: methods vs methods+REVIVE",
                              description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("run")
    g.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="starting values: default (CPU, minutes), long (CPU, ~45 min), paper "
                        "(10k edits, 6 methods, GPU), smoke (seconds); flags below override them (default: default)")
    g.add_argument("--out", type=Path, default=None,
                   help="new run folder (default: ./revive-runs/bench-<time>); refused when not empty")
    g.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its last completed round; other flags must match its config")
    g.add_argument("--report", type=Path, default=None, metavar="RUN_DIR",
                   help="edit nothing: write the tables, CSV, plots and run.md (command, progress, times) of RUN_DIR "
                        "from the checkpoints it has so far, e.g. while a long run is going; with --out DIR, into DIR")
    g.add_argument("--with", dest="with_runs", type=lambda v: [Path(x) for x in v.split(",") if x], default=None,
                   metavar="RUN_DIR2,...", help="with --report: report these run folders' arms with RUN_DIR's, e.g. "
                   "a τ sweep made with --no-plain next to the run that has the plain arm (all other settings equal)")
    g.add_argument("--quiet", action="store_true", default=None, help="no progress bars")
    g.add_argument("--save-every", type=int, default=None, metavar="ROUNDS",
                   help="save the resumable state every ROUNDS rounds (default: 1)")
    g.add_argument("--no-plots", dest="plots", action="store_false", default=True,
                   help="skip the PNG plots (tables and CSV are still written)")
    g.add_argument("--device", default=None, help="torch device for the model, e.g. cpu or cuda (default: auto)")
    g.add_argument("--only-arms", type=_csv, default=None, metavar="ARM1,ARM2",
                   help="run only these arms (folder names under arms/, e.g. memit-revive) and leave the others to "
                        "another process on the same folder: one process per arm on several cores or GPUs "
                        "(default: every arm, one after the other)")
    g = p.add_argument_group("experiment")
    g.add_argument("--methods", type=_methods, default=None, metavar="M1,M2",
                   help=f"editing methods, comma-separated, or 'all' = {','.join(METHODS)} {_d('methods')}")
    g.add_argument("--model", default=None,
                   help="bundled name (smollm2-135m, gemma3-270m), local HF folder or hub id (default: smollm2-135m)")
    g.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="model dtype (default: float32)")
    g.add_argument("--data", default=None,
                   help="CounterFact-style JSON or ZsRE JSON file (default: the offline fact set)")
    g.add_argument("--data-format", default=None, choices=["auto", "counterfact", "zsre"],
                   help="format of --data; auto = zsre when the file name contains 'zsre' (default: auto)")
    g.add_argument("--zsre-target", default=None, choices=["answers", "alt"],
                   help="ZsRE edit target: answers = answers[0] as MEMIT/AlphaEdit, alt = the record's alt "
                        "(default: answers)")
    g.add_argument("-n", "--n-edits", type=int, default=None, metavar="N", help=f"total edits N {_d('n_edits')}")
    g.add_argument("-b", "--batch-size", type=int, default=None, metavar="B",
                   help=f"edits per round B (the paper: 100) {_d('batch_size')}")
    g.add_argument("--eval-every", type=int, default=None, metavar="R",
                   help=f"evaluate everything after every R rounds and after the last {_d('eval_every')}")
    g.add_argument("--seed", type=int, default=None, help="seed for value optimisation and sampling (default: 0)")
    g.add_argument("--tau", type=_taus, default=None, metavar="T1,T2",
                   help="REVIVE energy threshold(s) in (0,1) (Eq. 5); several values = τ sweep (Table 2, Fig 8) "
                        "(default: 0.1)")
    g.add_argument("--no-plain", dest="plain", action="store_false", default=None,
                   help="skip the plain (unprotected) arms, e.g. for a τ sweep only")
    g.add_argument("--host", choices=["native", "easyedit"], default=None,
                   help="native = this project's editors; easyedit = the same YAML through EasyEdit's BaseEditor "
                        "(needs EasyEdit importable) (default: native)")
    g.add_argument("--hparams-dir", default=None,
                   help="folder with <METHOD>/<model>.yaml, used before the YAMLs shipped in the package")
    g.add_argument("--set", dest="overrides", type=_kv, action="append", default=None, metavar="KEY=VALUE",
                   help="override one hparams key for every method (YAML value, e.g. --set layers=[4,5]); repeatable")
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval-max-edits", type=_int_or_none, default=None, metavar="K|all",
                   help="evaluate a fixed random K of the edits made so far instead of all (default: all)")
    g.add_argument("--n-paraphrase", type=_int_or_none, default=None, metavar="K|all",
                   help=f"paraphrase prompts per record {_d('n_paraphrase')}")
    g.add_argument("--n-neighborhood", type=_int_or_none, default=None, metavar="K|all",
                   help=f"neighborhood prompts per record {_d('n_neighborhood')}")
    g.add_argument("--eval-batch-size", type=int, default=None, help="prompts per forward pass (default: 32)")
    g.add_argument("--generation", choices=["none", "final", "checkpoints"], default=None,
                   help="when to measure fluency/consistency by generation (slow) (default: final)")
    g.add_argument("--n-generation", type=int, default=None,
                   help=f"records used for fluency/consistency {_d('n_generation')}")
    g.add_argument("--generation-protocol", choices=["memit", "fast"], default=None,
                   help="memit = MEMIT's protocol (top-k 5 sampling up to 100 tokens on every generation prompt); "
                        "fast = greedy 40 new tokens on the first 2 prompts (CI) (default: memit; smoke: fast)")
    g.add_argument("--glue-dir", default=None,
                   help="folder of GLUE-style <task>.jsonl subsets (default: $REVIVE_GLUE_DIR, else GLUE's "
                        "validation splits via Hugging Face `datasets` when online, else skipped)")
    g.add_argument("--glue-tasks", type=_csv, default=None, metavar="T1,T2",
                   help="GLUE-style tasks (default: sst2,mrpc,rte,cola)")
    g.add_argument("--glue-n", type=int, default=None, help=f"examples per GLUE task, 0 = skip {_d('glue_n')}")
    g.add_argument("--glue-shots", type=int, default=None, help="in-context examples per GLUE prompt (default: 2)")
    g.add_argument("--ppl-texts", type=int, default=None,
                   help=f"held-out Wikipedia texts for perplexity, 0 = skip {_d('ppl_texts')}")
    g.add_argument("--probe-n", type=int, default=None,
                   help=f"facts in the knowledge probe (known by the unedited model), 0 = skip {_d('probe_n')}")
    g.add_argument("--repr-n", type=int, default=None,
                   help="never-edited factual prompts whose hidden states are compared with the unedited model's "
                        f"(representation drift, Fig 10), 0 = skip {_d('repr_n')}")
    g.add_argument("--spectral-tau", type=float, default=None,
                   help="energy share defining the dominant subspace for LS/SS (§2.3) (default: 0.1)")
    g = p.add_argument_group("drift alarm (works on plain methods too)")
    g.add_argument("--alarm-ls", type=float, default=None, metavar="MIN",
                   help="alarm when LS (Eq. 3) of any edited matrix falls below MIN (default: off)")
    g.add_argument("--alarm-ss", type=float, default=None, metavar="MIN",
                   help="alarm when mean SS (left or right) of any edited matrix falls below MIN (default: off)")
    g.add_argument("--alarm-action", choices=["warn", "stop"], default=None,
                   help="warn: print and go on; stop: end that arm at the checkpoint (default: warn)")
    p.set_defaults(func=main)
    return p


#: BenchConfig fields set by a flag of another name (every other field's flag has the field's name)
_FIELD_FLAGS = {"taus": "tau"}
#: flags whose value "all" stands for None
_ALL_IS_NONE = ("eval_max_edits", "n_paraphrase", "n_neighborhood")
#: BenchConfig fields no flag sets through :func:`_given` (--preset picks the starting values)
_NOT_GIVEN = ("preset",)


def _given(args) -> dict:
    """The BenchConfig fields given on the command line (flags left at None are not given)."""
    out = {}
    for f in dataclasses.fields(BenchConfig):
        value = getattr(args, _FIELD_FLAGS.get(f.name, f.name), None)
        if f.name not in _NOT_GIVEN and value is not None:
            out[f.name] = value
    if getattr(args, "overrides", None):
        out["hparams_overrides"] = dict(args.overrides)
    return out


def command_line(cfg: BenchConfig) -> str:
    """The ``revive bench`` command that makes ``cfg``: its preset and a flag for every value that differs."""
    base = preset_config(cfg.preset)
    argv = ["revive", "bench"] + (["--preset", cfg.preset] if cfg.preset != "default" else [])
    for f in dataclasses.fields(BenchConfig):
        value, start = getattr(cfg, f.name), getattr(base, f.name)
        if f.name in _NOT_GIVEN or value == start:
            continue
        if f.name == "hparams_overrides":
            argv += [a for k, v in value.items() if start.get(k) != v for a in ("--set", f"{k}={json.dumps(v)}")]
        elif isinstance(value, bool):
            argv.append(f"--{f.name}" if value else f"--no-{f.name}")
        else:
            text = ("all" if value is None and f.name in _ALL_IS_NONE
                    else ",".join(map(str, value)) if isinstance(value, list) else str(value))
            argv += [f"--{_FIELD_FLAGS.get(f.name, f.name).replace('_', '-')}", text]
    return shlex.join(argv)


def config_from_args(args) -> tuple[BenchConfig, Path, bool]:
    """(config, run folder, resume?) from parsed flags; with --resume the stored config wins
    and every given result-relevant flag must agree with it (checked by the harness hash)."""
    given = _given(args)
    if args.resume is not None:
        if args.out is not None and Path(args.out) != Path(args.resume):
            raise ValueError("give either --out (new run) or --resume RUN_DIR, not both")
        from .harness import load_run_config

        stored = load_run_config(args.resume)
        if args.preset is not None and args.preset != stored.preset:
            raise ValueError(f"--resume: {args.resume} was made with --preset {stored.preset}, not {args.preset}")
        data = stored.to_dict()
        data.update(given)
        return BenchConfig.from_dict(data).validate(), Path(args.resume), True
    cfg = preset_config(args.preset or "default", **given)
    out = args.out or Path("revive-runs") / time.strftime("bench-%Y%m%d-%H%M%S")
    return cfg, Path(out), False


def report_from_args(args) -> int:
    """``--report RUN_DIR [--out DIR]``: reports of a run folder as it stands, without editing."""
    from .harness import load_run_config
    from .report import write_reports

    others = args.with_runs or []
    command = "\n".join(command_line(load_run_config(d)) for d in [args.report, *others])
    outputs = write_reports(args.report, plots=args.plots, out_dir=args.out, command=command, with_runs=others)
    print(Path(outputs["run"]).read_text(encoding="utf-8"))
    print(Path(outputs["table"]).read_text(encoding="utf-8"))
    print(f"written to {Path(outputs['table']).parent}")
    return 0


def run_from_args(args, components=None) -> int:
    from .harness import arms_for, run_bench

    if args.report is not None:
        if args.resume is not None:
            raise ValueError("give either --report RUN_DIR (no editing) or --resume RUN_DIR, not both")
        return report_from_args(args)
    if getattr(args, "with_runs", None):
        raise ValueError("--with RUN_DIR2 only goes with --report RUN_DIR")
    cfg, run_dir, resume = config_from_args(args)
    echo = print if not cfg.quiet else (lambda s: None)
    arms = [a.label for a in arms_for(cfg)]
    echo(f"revive bench: {cfg.model}, {len(arms)} arms ({', '.join(arms)}), "
         f"{cfg.n_edits} edits in rounds of {cfg.batch_size}, checkpoints every {cfg.eval_every} rounds "
         f"-> {run_dir}{' (resuming)' if resume else ''}")
    t0 = time.perf_counter()
    try:
        res = run_bench(cfg, run_dir, components=components, resume=resume, progress=not cfg.quiet,
                        plots=getattr(args, "plots", True), echo=echo, command=command_line(cfg))
    except KeyboardInterrupt:
        if (Path(run_dir) / "config.json").exists():
            print(f"\ninterrupted; continue with: revive bench --resume {run_dir}", file=sys.stderr)
        return 130
    wall = time.perf_counter() - t0
    print()
    print(Path(res.outputs["table"]).read_text(encoding="utf-8"))
    print(f"wall time {wall / 60:.1f} min. Run folder: {run_dir}")
    print(f"  table: {res.outputs['table']}")
    if "tau_table" in res.outputs:
        print(f"  tau table: {res.outputs['tau_table']}")
    print(f"  CSV: {res.outputs['csv']}")
    print(f"  command and times: {res.outputs['run']}")
    for name, path in res.outputs.get("plots", {}).items():
        print(f"  plot ({name}): {path}")
    return 0


def main(args) -> int:
    return run_from_args(args)
