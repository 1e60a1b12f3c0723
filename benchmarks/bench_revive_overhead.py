"""REVIVE's cost inside a sequential-editing round (issue goals: projection <= 1% of a round,
edits/s with REVIVE >= 0.98x without).

Two copies of the model are edited side by side with the same requests and seeds, one with
MEMIT (or --method) plain and one with +REVIVE, alternating round by round so that machine
noise hits both alike. The projection (Eq. 6) times are the ones the editor reports per written
weight (``time_project_s``, also what ``revive bench`` sums); the one-time basis set-up (first
round) is reported apart.

    python benchmarks/bench_revive_overhead.py                 # bundled model, 3 rounds of 50
    python benchmarks/bench_revive_overhead.py --rounds 5 --batch 100 --model <hf-folder>

Editors are built exactly as ``revive bench`` builds them (default preset's hparams overrides, covariance
statistics in the shared cache folder).
"""

from __future__ import annotations

import argparse
import time

import torch
from _paired import add_arguments, paired_editors


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--method", default="MEMIT")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=50, help="edits per round (50 = the default bench's round)")
    add_arguments(ap, "default")
    args = ap.parse_args(argv)

    from revive_plugin.data.facts import load_facts

    eds = paired_editors(args, "default", args.method)
    records = load_facts()[: args.rounds * args.batch]
    round_s = {"plain": [], "revive": []}
    proj_s: list[list[float]] = []  # per round: the editor's own time_project_s of each written weight
    for r in range(args.rounds):
        batch = records[r * args.batch:(r + 1) * args.batch]
        for mode in ("plain", "revive") if r % 2 == 0 else ("revive", "plain"):
            torch.manual_seed(args.seed + r)
            t0 = time.perf_counter()
            info = eds[mode].edit(batch)
            round_s[mode].append(time.perf_counter() - t0)
            if mode == "revive":
                proj_s.append([v["time_project_s"] for v in info["layers"].values()
                               if isinstance(v, dict) and "time_project_s" in v])
        print(f"round {r + 1}/{args.rounds}: plain {round_s['plain'][-1]:.2f}s, +REVIVE {round_s['revive'][-1]:.2f}s, "
              f"projection {sum(proj_s[-1]) * 1e3:.1f} ms over {len(proj_s[-1])} matrices")

    print(f"\n{args.method} on {args.model}: {args.rounds} rounds of {args.batch} edits, tau={args.tau}, "
          f"{torch.get_num_threads()} threads, device {next(eds['plain'].model.parameters()).device}")
    print("| round | plain s | +REVIVE s | projection ms | projection share |")
    print("|---|---|---|---|---|")
    for r in range(args.rounds):
        share = sum(proj_s[r]) / round_s["revive"][r]
        print(f"| {r + 1}{' (setup: covariance, SVD)' if r == 0 else ''} | {round_s['plain'][r]:.2f} | {round_s['revive'][r]:.2f} "
              f"| {sum(proj_s[r]) * 1e3:.1f} | {share:.3%} |")
    steady = slice(1, None) if args.rounds > 1 else slice(0, None)
    p, v = sum(round_s["plain"][steady]), sum(round_s["revive"][steady])
    n = len(round_s["plain"][steady]) * args.batch
    share = sum(sum(b) for b in proj_s[steady]) / v
    ratio = (n / v) / (n / p)
    print(f"\nsteady state (rounds {'2' if args.rounds > 1 else '1'}..{args.rounds}): plain {n / p:.3f} edits/s, "
          f"+REVIVE {n / v:.3f} edits/s, ratio {ratio:.3f}x (goal >= 0.98x)")
    print(f"projection share of a REVIVE round: {share:.3%} (goal <= 1%)")
    print(f"one-time basis SVD + first projection (round 1 extra vs plain): "
          f"{round_s['revive'][0] - round_s['plain'][0]:+.2f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
