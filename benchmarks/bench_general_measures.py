"""Which general-ability measures are informative on a model: above chance before editing, and
moving when the edited matrices are damaged?

For every GLUE-style task x shots x {raw, calibrated} scoring, plus held-out perplexity, the
knowledge probe and representation drift, it prints the unedited score and the score after
Gaussian damage of relative Frobenius size eps on the edited FFN output matrices (paper §2.2's
perturbation, spread over the whole spectrum), for a few eps. A measure is informative when it
is clearly above chance at eps = 0 and falls as eps grows.

    python benchmarks/bench_general_measures.py --glue-dir DIR [--model smollm2-135m] [--n 200]
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--glue-dir", required=True, help="folder of GLUE-style *.jsonl subsets")
    ap.add_argument("--tasks", default="sst2,sentiment_analysis,mrpc,rte,cola,nli,mmlu")
    ap.add_argument("--shots", default="2,4")
    ap.add_argument("--n", type=int, default=200, help="items per task")
    ap.add_argument("--eps", default="0,0.05,0.1,0.2", help="relative Frobenius size of the damage")
    ap.add_argument("--ppl-texts", type=int, default=64)
    ap.add_argument("--probe-n", type=int, default=100)
    ap.add_argument("--repr-n", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the table as JSON here")
    args = ap.parse_args(argv)

    from revive_plugin.data.corpus import wiki_texts
    from revive_plugin.data.facts import load_facts
    from revive_plugin.editing import load_hparams
    from revive_plugin.evaluation import general
    from revive_plugin.evaluation.representation import drift_metrics, prompt_states
    from revive_plugin.models import load_model
    from revive_plugin.nethook import get_parameter

    model, tok = load_model(args.model)
    model.eval().requires_grad_(False)
    hp = load_hparams("MEMIT", args.model)
    names = [f"{hp.rewrite_module_tmp.format(layer)}.weight" for layer in hp.layers]
    originals = {n: get_parameter(model, n).detach().clone() for n in names}
    tasks = args.tasks.split(",")
    shots = [int(s) for s in args.shots.split(",")]
    texts = wiki_texts("heldout", n=args.ppl_texts)
    records = load_facts()[-4000:]
    probe = general.KnowledgeProbe.build(model, tok, general.probe_candidates(records), max_facts=args.probe_n,
                                         progress=False)
    repr_prompts = [c["prompt"] for c in general.probe_candidates(records[: args.repr_n])]
    ref_states = prompt_states(model, tok, repr_prompts)
    gen = torch.Generator().manual_seed(args.seed)
    noise = {n: torch.randn(w.shape, generator=gen, dtype=torch.float32) for n, w in originals.items()}

    table: dict[str, dict[float, float]] = {}
    for eps in [float(e) for e in args.eps.split(",")]:
        t0 = time.perf_counter()
        with torch.no_grad():
            for n, w in originals.items():
                z = noise[n].to(w.device, w.dtype)
                get_parameter(model, n).copy_(w + eps * w.norm() / z.norm() * z)
        for k in shots:
            for cal in (False, True):
                acc = general.glue_accuracy(model, tok, args.glue_dir, tasks=tuple(tasks), n_per_task=args.n,
                                            shots=k, seed=args.seed, progress=False, calibrate=cal)
                for t in tasks:
                    table.setdefault(f"{t} {k}-shot {'calibrated' if cal else 'raw'}", {})[eps] = acc[t]
        table.setdefault("held-out PPL", {})[eps] = general.perplexity(model, tok, texts, progress=False)
        table.setdefault("knowledge probe", {})[eps] = probe.score(model, tok, progress=False)
        for key, v in drift_metrics(ref_states, prompt_states(model, tok, repr_prompts)).items():
            table.setdefault(key, {})[eps] = v
        print(f"eps={eps:g} measured in {time.perf_counter() - t0:.0f}s", flush=True)

    eps_list = sorted({e for row in table.values() for e in row})
    print("| measure | " + " | ".join(f"ε={e:g}" for e in eps_list) + " |")
    print("|---|" + "---|" * len(eps_list))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[e]:.3f}" for e in eps_list) + " |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({k: {str(e): v for e, v in row.items()} for k, row in table.items()}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
