"""MEMIT (Meng et al., 2023): ΔW = R Kᵀ (λC + KKᵀ)⁻¹ per layer, residual spread over the layers."""

from __future__ import annotations

from .apply import apply_with
from .editor import Editor
from .hparams import MEMITHyperParams


class MEMITEditor(Editor):
    """Plain MEMIT on the shared core (no sequential memory beyond the weights)."""

    method = "MEMIT"
    hparams_cls = MEMITHyperParams


def apply_memit_to_model(model, tok, requests, hparams, copy=False, return_orig_weights=True, **kwargs):
    """EasyEdit contract: returns ``(model, weights_copy)``; see :func:`~.apply.apply_with`."""
    return apply_with(MEMITEditor, model, tok, requests, hparams, copy, return_orig_weights, **kwargs)
