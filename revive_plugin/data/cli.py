"""``revive data``: build the fact set, print its card, validate CounterFact / ZsRE files."""

from __future__ import annotations

import json
import time


def _build(args) -> int:
    from .facts import load_facts, relation_counts, write_facts

    t = time.perf_counter()
    path = write_facts(args.out, args.seed)
    counts = relation_counts(load_facts(path))
    print(f"wrote {sum(counts.values())} records to {path} in {time.perf_counter() - t:.1f}s")
    print(json.dumps(counts))
    return 0


def _card(args) -> int:
    from .facts import RELATIONS, _versions, build_facts, relation_counts

    records = build_facts(args.seed)
    counts = relation_counts(records)
    print(f"fact set v{_versions()['factset']} seed {args.seed}: {len(records)} records; sources {json.dumps(_versions())}")
    print("| relation | meaning | records |")
    print("|---|---|---|")
    for rel, n in counts.items():
        print(f"| {rel} | {RELATIONS[rel].name} | {n} |")
    return 0


def _validate(args) -> int:
    from .counterfact import load_counterfact, load_zsre

    records = (load_zsre if args.kind == "zsre" else load_counterfact)(args.path)
    print(f"{args.path}: {len(records)} valid {args.kind} records")
    return 0


def add_parser(subparsers) -> None:
    """Add the ``data`` subcommand."""
    parser = subparsers.add_parser("data", help="fact set and benchmark data")
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = sub.add_parser("build-facts", help="build the offline CounterFact-format fact set")
    p.add_argument("--out", required=True, help="output JSON path")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_build)
    p = sub.add_parser("card", help="print counts per relation (the data card's table)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_card)
    p = sub.add_parser("validate", help="validate a CounterFact/MCF or ZsRE file")
    p.add_argument("path")
    p.add_argument("--kind", choices=("counterfact", "zsre"), default="counterfact")
    p.set_defaults(func=_validate)
