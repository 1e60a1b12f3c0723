"""Batched target-value optimisation vs a per-request loop, on the bundled model (one run).

Prints edits/s of the value stage for: the per-request loop as the reference runs it (full forward
every step), the per-request loop with the truncated forward, all requests of the round together with
the truncated forward, and together with the prefix key/value cache (the default, ``forward="auto"``);
then the efficacy of a full MEMIT round built on the batched and on the reference-loop values (they
must agree). Usage:

    python benchmarks/bench_batched_values.py [--n 50] [--steps 10] [--prefixes 5] [--model smollm2-135m]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from revive_plugin.editing import core, load_hparams, make_editor
from revive_plugin.data.facts import load_facts
from revive_plugin.evaluation.counterfact import evaluate_counterfact
from revive_plugin.models import load_model

BATCHED = "batched, prefix-cached (default)"


def efficacy(model, tok, records) -> float:
    """CounterFact efficacy (new object more likely than the true one) on the edited prompts."""
    return evaluate_counterfact(model, tok, records, max_paraphrase=0, max_neighborhood=0, progress=False)["efficacy"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=50, help="edits (taken from the offline fact set); 50 = a round of the default bench")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--prefixes", type=int, default=5)
    ap.add_argument("--stats-samples", type=int, default=300)
    args = ap.parse_args()

    model, tok = load_model(args.model)
    records = load_facts()[: args.n]
    reqs = [core.normalize_request(r) for r in records]
    with tempfile.TemporaryDirectory() as stats_dir:
        hp = load_hparams("MEMIT", "smollm2-135m", stats_dir=stats_dir, mom2_n_samples=args.stats_samples,
                          v_num_grad_steps=args.steps, context_prefixes=args.prefixes, use_revive=False)
        editor = make_editor("MEMIT", model, tok, hp)
        editor.prepare()
        templates = editor.templates
        timings, values = {}, {}
        for label, chunk, mode in (("loop, full forward (reference)", 1, "full"),
                                   ("loop, truncated forward", 1, "truncated"),
                                   ("batched, truncated forward", None, "truncated"),
                                   (BATCHED, None, "auto")):
            t0 = time.perf_counter()
            values[label] = core.compute_target_values(model, tok, reqs, hp, editor.z_module, templates=templates,
                                                       chunk_size=chunk, forward=mode)
            timings[label] = time.perf_counter() - t0
        ref = "loop, full forward (reference)"
        print(f"value optimisation, {len(reqs)} requests x {args.steps} steps, {1 + args.prefixes} contexts, "
              f"{torch.get_num_threads()} threads")
        for label, secs in timings.items():
            print(f"  {label:34s} {len(reqs) / secs:8.3f} edits/s  ({secs:7.1f} s)  "
                  f"speed-up x{timings[ref] / secs:5.2f}")
        diff = (values[BATCHED] - values[ref]).norm() / values[ref].norm()
        print(f"  relative difference of the batched vs loop values: {float(diff):.2e}")

        pristine = {n: editor.weight(l).detach().clone() for n, l in zip(editor.edited_params, editor.layers)}
        print(f"efficacy before editing: {efficacy(model, tok, records):.3f}")
        for label in (ref, BATCHED):
            with torch.no_grad():
                for n, l in zip(editor.edited_params, editor.layers):
                    editor.weight(l).copy_(pristine[n])
            editor.run_round(reqs, values[label])
            print(f"efficacy after MEMIT with {label} values: {efficacy(model, tok, records):.3f}")


if __name__ == "__main__":
    main()
