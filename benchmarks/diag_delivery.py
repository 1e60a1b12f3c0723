"""How much of its target one MEMIT round delivers, plain and with REVIVE (a diagnostic, not a speed goal).

Two copies of the model take the same round with the same target values z (computed once, Eq. 3's
value optimisation): for each edit layer, the mean ‖z − current output‖ over the round's requests before
that layer's write, and ‖ΔW‖ before and after the projection (Eq. 6); at the end, the part of z − z₀
left undelivered. The REVIVE arm removes a few percent of each ‖ΔW‖; what that costs in delivered
target is what this measures.

    python benchmarks/diag_delivery.py                              # bundled SmolLM2, 100 edits
    python benchmarks/diag_delivery.py --model gemma3-270m          # the scale-gemma run's round 1

Editors are built as ``revive bench --preset scale`` builds them (its hparams overrides, shared cache).
"""

from __future__ import annotations

import argparse

import torch
from _paired import add_arguments, paired_editors


def _recording(ed):
    """Wrap ``ed``'s residual and write steps to record ‖z − cur_z‖ per layer and ‖ΔW‖ before/after REVIVE."""
    rec = {"resid": [], "dw": []}
    residual, add = ed.layer_residual, ed.add_delta

    def layer_residual(i, layer, z, cur_z, keys):
        rec["resid"].append(float((z - cur_z).norm(dim=-1).mean()))
        return residual(i, layer, z, cur_z, keys)

    def add_delta(layer, d):
        before = float(d.float().norm())
        info = add(layer, d)
        rec["dw"].append((before, info["delta_norm"]))
        return info

    ed.layer_residual, ed.add_delta = layer_residual, add_delta
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="edits in the round (100 = the scale preset's round)")
    add_arguments(ap, "scale")
    args = ap.parse_args(argv)

    from revive_plugin.data.facts import load_facts
    from revive_plugin.editing import core

    eds = paired_editors(args, "scale")
    reqs = [core.normalize_request(r["requested_rewrite"]) for r in load_facts()[: args.n]]
    torch.manual_seed(args.seed)
    eds["plain"].prepare()
    z = eds["plain"].values(reqs)
    recs = {}
    for mode, ed in eds.items():
        recs[mode] = _recording(ed)
        ed.prepare()
        ed.run_round(reqs, z)
        _, cur = ed.layer_inputs(reqs, ed.layers[-1])
        recs[mode]["left"] = float((z - cur).norm(dim=-1).mean())

    print(f"\nMEMIT on {args.model}: one round of {len(reqs)} edits from the unedited model, the same z, tau={args.tau}")
    print("| layer | ‖z − cur‖ before write: plain | +REVIVE | ‖ΔW‖ plain | ‖ΔW‖ +REVIVE before → after projection |")
    print("|---|---|---|---|---|")
    for j, layer in enumerate(eds["plain"].layers):
        p, r = recs["plain"], recs["revive"]
        print(f"| {layer} | {p['resid'][j]:.1f} | {r['resid'][j]:.1f} | {p['dw'][j][1]:.3f} | "
              f"{r['dw'][j][0]:.3f} → {r['dw'][j][1]:.3f} ({1 - r['dw'][j][1] / r['dw'][j][0]:.1%} removed) |")
    print(f"| after the last write | {recs['plain']['left']:.1f} | {recs['revive']['left']:.1f} | | |")
    print(f"undelivered after the round: plain {recs['plain']['left'] / recs['plain']['resid'][0]:.0%}, "
          f"+REVIVE {recs['revive']['left'] / recs['revive']['resid'][0]:.0%} of ‖z − z₀‖")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
