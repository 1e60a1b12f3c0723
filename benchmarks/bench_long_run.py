"""Where the time of a long `revive bench` arm goes, and what one 5,000-edit arm would take.

Runs the first rounds of the ``scale`` preset (rounds of 100, checkpoint on a fixed sample of up to 500
edits with general ability and representation drift) on the bundled model, timing every stage in one
run: per round the editor's own breakdown (preparation = keys and context templates, target values,
update = covariance solve and write, REVIVE projection) and the state save; per checkpoint the edit
evaluation, each general-ability measure and the spectral metrics; once, the final generation metrics.
From these it projects the wall time of a whole arm (``--arm-edits``, default 5,000, with the preset's
checkpoint every 10 rounds) against the goal of 60 minutes.

    python benchmarks/bench_long_run.py [--rounds 5] [--revive] [--glue-dir DIR] [--out RUN_DIR]

Time it alone: two torch processes on two cores distort every number.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager

GOAL_MIN = 60.0


class StageClock:
    """Accumulates wall seconds per stage name (and how often each ran)."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self.rounds: list[float] = []

    def reset(self) -> float:
        """Forget everything timed so far (setup and baseline evaluation); returns its total."""
        done = sum(v for k, v in self.seconds.items())
        self.seconds.clear()
        self.calls.clear()
        return done

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds
        self.calls[name] += 1

    def wrap(self, owner, attr: str, name: str) -> None:
        """Replace ``owner.attr`` (a module function or a class method) by a timed call of itself."""
        inner = getattr(owner, attr)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - t0)

        setattr(owner, attr, timed)

    @contextmanager
    def stage(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - t0)


def instrument(clock: StageClock):
    """Time the harness's stages where they are looked up at call time (module attributes)."""
    from revive_plugin import spectral
    from revive_plugin.bench import components, harness
    from revive_plugin.evaluation import general, representation

    clock.wrap(general, "glue_accuracy", "checkpoint: GLUE")
    clock.wrap(general, "perplexity", "checkpoint: held-out PPL")
    clock.wrap(general.KnowledgeProbe, "score", "checkpoint: knowledge probe")
    clock.wrap(representation, "prompt_states", "checkpoint: representation drift")
    clock.wrap(spectral, "spectral_report", "checkpoint: spectral metrics")
    clock.wrap(harness, "write_round_state", "round: state save")

    class Timed(components.ProjectComponents):
        def make_editor(self, cfg, method, model, tok, revive_tau=None):
            clock.reset()  # what ran before belongs to setup and the baseline evaluation
            editor = super().make_editor(cfg, method, model, tok, revive_tau=revive_tau)
            edit = editor.edit

            def timed_edit(batch):
                t0 = time.perf_counter()
                info = edit(batch) or {}
                clock.rounds.append(time.perf_counter() - t0)
                clock.add("round: total edit", clock.rounds[-1])
                for key, stage in (("time_prepare_s", "keys + templates"), ("time_values_s", "target values"),
                                   ("time_update_s", "solve + write")):
                    if key in info:
                        clock.add(f"round: {stage}", float(info[key]))
                clock.add("round: REVIVE projection", harness._projection_seconds(info))
                return info

            editor.edit = timed_edit
            return editor

        def evaluate_edits(self, cfg, model, tok, records, generation):
            name = "final: generation (Flu./Consis.)" if generation else "checkpoint: edit evaluation"
            with clock.stage(name):
                return super().evaluate_edits(cfg, model, tok, records, generation)

    return Timed()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the scale preset to run (>= 2)")
    ap.add_argument("--revive", action="store_true", help="time the +REVIVE arm (default: plain MEMIT)")
    ap.add_argument("--glue-dir", default=None, help="GLUE-style subsets (else GLUE is left out)")
    ap.add_argument("--arm-edits", type=int, default=5000, help="length of the arm to project")
    ap.add_argument("--out", default=None, help="run folder (default: a temporary folder)")
    ap.add_argument("--smoke", action="store_true",
                    help="rounds of 2 edits with the smoke preset's evaluation sizes and a 40-text covariance: "
                         "checks that the script runs, its numbers mean nothing")
    args = ap.parse_args(argv)
    if args.rounds < 2:
        ap.error("--rounds must be at least 2 (the first round also pays one-time costs)")

    import torch

    from revive_plugin.bench.config import CPU_HPARAMS, preset_config
    from revive_plugin.bench.harness import run_bench

    scale = preset_config("scale")
    base = preset_config("smoke") if args.smoke else scale
    n = args.rounds * base.batch_size
    small = dict(CPU_HPARAMS, mom2_n_samples=40, v_num_grad_steps=2) if args.smoke else None
    arm = "memit-revive" if args.revive else "memit-plain"  # one arm: what a process of a long run does
    cfg = preset_config(base.preset, methods=["MEMIT"], n_edits=n, eval_every=args.rounds, taus=[0.1],
                        only_arms=[arm], glue_dir=args.glue_dir, glue_n=base.glue_n if args.glue_dir else 0,
                        quiet=True, hparams_overrides=small)
    clock = StageClock()
    comps = instrument(clock)
    print(f"threads={torch.get_num_threads()}  {args.rounds} rounds of {cfg.batch_size} "
          f"({'MEMIT+REVIVE' if args.revive else 'MEMIT'}), checkpoint on {min(n, cfg.eval_max_edits or n)} edits")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="revive-longrun-") as tmp:
        run_bench(cfg, args.out or tmp, components=comps, progress=False, plots=False)
    wall = time.perf_counter() - t0

    arm_rounds = math.ceil(args.arm_edits / scale.batch_size)
    arm_checkpoints = len(range(scale.eval_every, arm_rounds + 1, scale.eval_every)) or 1
    # edit evaluation is linear in the records it scores: here min(n, cap); in the arm, at every checkpoint
    # (>= eval_every rounds of edits), min(edits so far, cap)
    cap = scale.eval_max_edits or args.arm_edits
    eval_here = min(n, cfg.eval_max_edits or n)
    eval_arm = min(scale.eval_every * scale.batch_size, cap)
    steady = statistics.median(clock.rounds[1:])  # the first round also fills the template/covariance caches
    print(f"\nmeasured wall {wall / 60:.1f} min (model load, baseline evaluation and one-time caches included)")
    print(f"rounds: {', '.join(f'{r:.1f}' for r in clock.rounds)} s; steady round (median after the first) "
          f"{steady:.1f} s\n")
    print(f"| stage | s per call | calls here | calls in a {args.arm_edits}-edit arm | projected min |")
    print("|---|---|---|---|---|")
    projected = 0.0
    names = sorted(clock.seconds, key=lambda k: (not k.startswith("round:"), k != "round: total edit", k))
    for name in names:
        each = clock.seconds[name] / clock.calls[name]
        if name.startswith("round:"):
            count = arm_rounds * clock.calls[name] // len(clock.rounds)
            total = (steady if name == "round: total edit" else each) * count
        else:  # one checkpoint ran here (the last round); the final generation runs once per arm
            count = clock.calls[name] * (1 if name.startswith("final:") else arm_checkpoints)
            total = each * count * (eval_arm / eval_here if name == "checkpoint: edit evaluation" else 1.0)
        top = name in ("round: total edit", "round: state save") or not name.startswith("round:")
        projected += total / 60 if top else 0.0
        print(f"| {name if top else ' ' + name} | {each:.2f} | {clock.calls[name]} | {count} | {total / 60:.1f} |")
    values_share = clock.seconds["round: target values"] / max(clock.seconds["round: total edit"], 1e-9)
    print(f"\nprojected arm: {projected:.1f} min for {args.arm_edits} edits in rounds of {scale.batch_size} with "
          f"{arm_checkpoints} checkpoints (goal <= {GOAL_MIN:.0f} min: "
          f"{'met' if projected <= GOAL_MIN else f'{projected / GOAL_MIN:.2f}x the goal'}); target values are "
          f"{100 * values_share:.0f}% of editing time; the edit evaluation is scaled from {eval_here} records "
          f"here to the arm's {eval_arm} per checkpoint")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
