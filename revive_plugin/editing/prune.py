"""PRUNE (Ma et al., 2025): restrain the large singular values of the accumulated update.

The state keeps, per parameter, the accumulated raw update D = Σ ΔW (of every round, as the MEMIT core
writes it) and σ_max of the ORIGINAL W₀. After each round the weight is set to W₀ + F(D) where
F(D) = U diag(f(σ)) Vᵀ with f(σ) = log_b(σ) + σ_max − log_b(σ_max) for σ > σ_max and f(σ) = σ otherwise
(the reference's ``log`` reduction, b = e). The bound σ_max can be scaled by ``prune_bound_scale``
(1.0 = the paper). Within a round the raw per-layer updates are applied first so that later layers are
computed on them, exactly as MEMIT does, and the restraint replaces them at the end of the round.
"""

from __future__ import annotations

import math

import torch

from .apply import apply_with
from .engine import Editor
from .hparams import PRUNEHyperParams


def restrain(delta: torch.Tensor, sigma_max: float, base: float = math.e) -> torch.Tensor:
    """F(Δ): singular values above ``sigma_max`` mapped by log_b(σ) + σ_max − log_b(σ_max) (float64 SVD)."""
    U, S, Vh = torch.linalg.svd(delta.double(), full_matrices=False)
    big = S > sigma_max
    if not bool(big.any()):
        return delta.clone()
    lb = math.log(base)
    S2 = torch.where(big, torch.log(S.clamp_min(1e-300)) / lb + sigma_max - math.log(sigma_max) / lb, S)
    return ((U * S2) @ Vh).to(delta.dtype)


def restrained_bound(sigma: float, sigma_max: float, base: float = math.e) -> float:
    """f(σ) for σ > σ_max (the largest singular value a restrained update can have)."""
    if sigma <= sigma_max:
        return sigma
    return math.log(sigma, base) + sigma_max - math.log(sigma_max, base)


class PRUNEEditor(Editor):
    method = "PRUNE"
    hparams_cls = PRUNEHyperParams
    needs_originals = True

    def setup(self):
        super().setup()
        for l in self.layers:
            name = self.param_name(l)
            if self.state.get(f"prune_sigma_max/{name}") is None:
                s = torch.linalg.matrix_norm(self.original(l).double(), ord=2)
                self.state.set(f"prune_sigma_max/{name}", s.reshape(1).float())
            if self.state.get(f"prune_D/{name}") is None:
                self.state.set(f"prune_D/{name}", torch.zeros_like(self.original(l), dtype=torch.float32))
                self.state.set(f"prune_applied/{name}", torch.zeros_like(self.original(l), dtype=torch.float32))

    def sigma_bound(self, layer: int) -> float:
        return float(self.state.get(f"prune_sigma_max/{self.param_name(layer)}")) * self.hparams.prune_bound_scale

    def run_round(self, requests, z):
        start = {l: self.weight(l).detach().clone() for l in self.layers}
        info = super().run_round(requests, z)
        with torch.no_grad():
            for l in self.layers:
                name = self.param_name(l)
                w = self.weight(l)
                raw = w.detach().float() - start[l].float()
                D = self.state.get(f"prune_D/{name}").to(w.device) + raw
                applied_old = self.state.get(f"prune_applied/{name}").to(w.device)
                applied_new = restrain(D, self.sigma_bound(l), self.hparams.prune_log_base)
                if self.hparams.use_revive:
                    applied_new = self.state.reviver.project(name, applied_new)
                w[...] = (start[l].float() + (applied_new - applied_old)).to(w.dtype)
                self.state.set(f"prune_D/{name}", D)
                self.state.set(f"prune_applied/{name}", applied_new)
                info[name]["prune_restrained"] = bool(torch.linalg.matrix_norm(D.double(), ord=2) > self.sigma_bound(l))
        return info


def apply_prune_to_model(model, tok, requests, hparams, copy=False, return_orig_weights=True, **kwargs):
    """EasyEdit contract; see :func:`~.apply.apply_with`."""
    return apply_with(PRUNEEditor, model, tok, requests, hparams, copy, return_orig_weights, **kwargs)
