"""NSE (Jiang et al., 2025): neuron-level sequential editing.

* Weights rewinding: target values z are optimised on the ORIGINAL (unedited) weights of the edit
  layers (kept in the state), then reached on the current model.
* Neuron selection: per layer, neurons (inputs of the FFN output matrix = columns of ΔW in (out × in))
  are ranked by Σ_requests |k| and taken until their cumulative score reaches ``neuron_threshold`` of
  the total; only those columns are updated, solving the sub-system
  (λC_SS + K_pK_pᵀ_SS + K_S K_Sᵀ) with the accumulated keys of earlier rounds K_pK_pᵀ.
* Iterative editing: up to ``max_iterations`` passes; each pass re-edits only requests whose residual
  ‖z − h‖ lies in (``alpha``, ``upper_bound``); the last pass only checks (as the reference).
"""

from __future__ import annotations

import torch

from . import core
from .apply import apply_with
from .editor import Editor, swapped_weights
from .hparams import NSEHyperParams


def select_neurons(keys: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices (sorted) of the neurons whose |activation| summed over requests covers ``threshold``
    of the total, largest first (at least one)."""
    scores = keys.abs().sum(0)
    vals, idx = torch.sort(scores, descending=True)
    within = torch.nonzero(torch.cumsum(vals, 0) <= threshold * scores.sum()).flatten()
    n = int(within[-1]) + 1 if within.numel() else 1
    return torch.sort(idx[:n]).values


class NSEEditor(Editor):
    method = "NSE"
    hparams_cls = NSEHyperParams
    needs_originals = True

    def setup(self):
        super().setup()
        for l in self.layers:
            self.init_edited_keys(l)

    def values(self, requests):
        originals = {self.param_name(l): self.original(l) for l in self.layers}
        with swapped_weights(self.model, originals):
            return super().values(requests)

    def run_round(self, requests, z):
        hp = self.hparams
        info = {self.param_name(l): {"neurons": [], "delta_norm": 0.0} for l in self.layers}
        info["iterations"] = 0
        for it in range(hp.max_iterations):
            _, cur = core.compute_keys(self.model, self.tok, requests, [self.module_name(self.layers[-1])],
                                       hp.fact_token, z_module=self.z_module, templates=self.templates)
            err = (z - cur).norm(dim=1)
            active = torch.nonzero((err > hp.alpha) & (err < hp.upper_bound)).flatten().tolist()
            if not active or it == hp.max_iterations - 1:
                break
            info["iterations"] = it + 1
            reqs = [requests[i] for i in active]
            z_act = z[active]
            for i, layer in enumerate(self.layers):
                keys, cur_z = self.layer_inputs(reqs, layer)
                sel = select_neurons(keys, hp.neuron_threshold)
                resid = self.layer_residual(i, layer, z_act, cur_z, keys)
                keys_sel = keys.T.double()[sel].T  # n × |sel|, the selected neurons' keys
                cov = self.covariance(layer).double()[sel][:, sel]
                cache = self.edited_keys(layer).to(keys.device).double()[sel][:, sel]
                w_oi = self.weight_out_in(layer)
                delta = torch.zeros(w_oi.shape, dtype=torch.float64, device=keys.device)
                delta[:, sel] = core.memit_solve(keys_sel, resid, cov, hp.mom2_update_weight, extra=cache)
                out = self.write(layer, delta)
                entry = info[self.param_name(layer)]
                entry["neurons"].append(sel.tolist())
                for key in ("delta_norm", "time_project_s"):
                    if key in out:
                        entry[key] = entry.get(key, 0.0) + out[key]
        return info

    def after_round(self, requests):
        self.accumulate_edited_keys(requests)


def apply_nse_to_model(model, tok, requests, hparams, copy=False, return_orig_weights=True, **kwargs):
    """EasyEdit contract; see :func:`~.apply.apply_with`."""
    return apply_with(NSEEditor, model, tok, requests, hparams, copy, return_orig_weights, **kwargs)
