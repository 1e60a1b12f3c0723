"""PRUNE (Ma et al., 2025): restrain the large singular values of the accumulated update.

With D = W − W₀ the accumulated update of a layer (W₀ = the ORIGINAL weight), the restrained weight is
W₀ + F(D), F(D) = U diag(f(σ)) Vᵀ with f(σ) = log_b(σ) + σ_max − log_b(σ_max) for σ > σ_max and
f(σ) = σ otherwise (the reference's ``log`` reduction, b = e; σ_max = σ_max(W₀) · ``prune_bound_scale``).

``prune_timing``:

* ``"reference"`` (default, as the official PRUNE code): edits are applied unrestrained, rounds are
  solved on W₀ + D, and F is applied only to the weights used for evaluation
  (:meth:`PRUNEEditor.evaluation_view`). Under EasyEdit's ``apply_prune_to_model`` contract, whose host
  evaluates the model right after the call, the model is left holding W₀ + F(D) and the next call puts
  W₀ + D back before editing (D kept in the state).
* ``"per_round"``: after every round the weight is set to W₀ + F(D), so later rounds are solved on
  restrained weights. Within a round the raw per-layer updates are applied first so that later layers
  are computed on them, exactly as MEMIT does, and the restraint replaces them at the end of the round.
"""

from __future__ import annotations

import contextlib
import math

import torch

from .apply import apply_with
from .editor import Editor, swapped_weights
from .hparams import PRUNEHyperParams
from .state import ORIGINAL

#: edit-state kinds (see :meth:`~.state.EditState.of`): σ_max of the original weight, the accumulated raw
#: update D and its restrained form F(D) (per-round timing), and D under EasyEdit's reference timing
SIGMA_MAX = "prune_sigma_max"
PRUNE_D = "prune_D"
PRUNE_APPLIED = "prune_applied"
HOST_D = "prune_host_D"


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

    @property
    def per_round(self) -> bool:
        return self.hparams.prune_timing == "per_round"

    def setup(self):
        super().setup()
        for l in self.layers:
            name = self.param_name(l)
            if self.state.of(SIGMA_MAX, name) is None:
                s = torch.linalg.matrix_norm(self.original(l).double(), ord=2)
                self.state.put(SIGMA_MAX, name, s.reshape(1).float())
            if self.per_round and self.state.of(PRUNE_D, name) is None:
                self.state.put(PRUNE_D, name, torch.zeros_like(self.original(l), dtype=torch.float32))
                self.state.put(PRUNE_APPLIED, name, torch.zeros_like(self.original(l), dtype=torch.float32))

    def sigma_bound(self, layer: int) -> float:
        return float(self.state.of(SIGMA_MAX, self.param_name(layer))) * self.hparams.prune_bound_scale

    def restrained_update(self, layer: int, D: torch.Tensor) -> torch.Tensor:
        """F(D) (float32, storage layout), projected by REVIVE when it is on."""
        out = restrain(D.float(), self.sigma_bound(layer), self.hparams.prune_log_base)
        if self.hparams.use_revive:
            out = self.state.reviver.project(self.param_name(layer), out)
        return out

    def run_round(self, requests, z):
        if not self.per_round:
            return super().run_round(requests, z)
        start = {l: self.weight(l).detach().clone() for l in self.layers}
        info = super().run_round(requests, z)
        with torch.no_grad():
            for l in self.layers:
                name = self.param_name(l)
                w = self.weight(l)
                raw = w.detach().float() - start[l].float()
                D = self.state.of(PRUNE_D, name).to(w.device) + raw
                applied_old = self.state.of(PRUNE_APPLIED, name).to(w.device)
                applied_new = self.restrained_update(l, D)
                w[...] = (start[l].float() + (applied_new - applied_old)).to(w.dtype)
                self.state.put(PRUNE_D, name, D)
                self.state.put(PRUNE_APPLIED, name, applied_new)
                info[name]["prune_restrained"] = bool(torch.linalg.matrix_norm(D.double(), ord=2) > self.sigma_bound(l))
        return info

    @torch.no_grad()
    def restrained_weights(self) -> dict[str, torch.Tensor]:
        """W₀ + F(W − W₀) of every edited parameter (storage layout, the weight's dtype)."""
        out = {}
        for l in self.layers:
            w0 = self.original(l).to(self.weight(l).device)
            D = self.weight(l).detach().float() - w0.float()
            out[self.param_name(l)] = (w0.float() + self.restrained_update(l, D)).to(w0.dtype)
        return out

    @contextlib.contextmanager
    def evaluation_view(self):
        """Reference timing: the model holds W₀ + F(D) inside the block, the unrestrained W₀ + D after it.
        Per-round timing (or before the first edit): the weights as they are."""
        if self.per_round or any(self.state.of(ORIGINAL, self.param_name(l)) is None for l in self.layers):
            yield self.model
            return
        with swapped_weights(self.model, self.restrained_weights()):
            yield self.model

    def host_edit(self, requests) -> dict:
        """EasyEdit contract under reference timing: edit W₀ + D, then leave W₀ + F(D) in the model."""
        if self.per_round:
            return self.edit(requests)
        with torch.no_grad():
            for l in self.layers:
                D = self.state.of(HOST_D, self.param_name(l))
                if D is not None:
                    w = self.weight(l)
                    w[...] = (self.original(l).to(w.device).float() + D.to(w.device)).to(w.dtype)
        info = self.edit(requests)
        with torch.no_grad():
            restrained = self.restrained_weights()
            for l in self.layers:
                name = self.param_name(l)
                w = self.weight(l)
                self.state.put(HOST_D, name, w.detach().float() - self.original(l).to(w.device).float())
                w[...] = restrained[name]
        return info


def apply_prune_to_model(model, tok, requests, hparams, copy=False, return_orig_weights=True, **kwargs):
    """EasyEdit contract; see :func:`~.apply.apply_with` and :meth:`PRUNEEditor.host_edit`."""
    return apply_with(PRUNEEditor, model, tok, requests, hparams, copy, return_orig_weights, **kwargs)
