"""AlphaEdit (Fang et al., 2025): MEMIT's update projected onto the null space of the preserved keys.

P = Û Ûᵀ with Û the eigenvectors of C = E[kkᵀ] whose eigenvalues are below ``nullspace_threshold``;
ΔW = Xᵀ with X = (P(KKᵀ + K_pK_pᵀ) + L2·I)⁻¹ P K Rᵀ, where K_pK_pᵀ accumulates the keys of earlier
rounds (recomputed on the edited model after each round, as the reference does). Because PX = X,
ΔW k = 0 for every k with Pk = 0 (the preserved space). P and K_pK_pᵀ live in the edit state, never in
module globals or files in the working directory (``P_loc`` is accepted for EasyEdit compatibility and
ignored).
"""

from __future__ import annotations

import torch

from .apply import apply_with
from .editor import Editor
from .hparams import AlphaEditHyperParams

#: edit-state kind (see :meth:`~.state.EditState.of`): the null-space projector P of a rewrite module
PROJECTOR = "P"


def nullspace_projector(cov: torch.Tensor, threshold: float) -> torch.Tensor:
    """P onto the span of C's eigenvectors with eigenvalue < ``threshold`` (float32)."""
    evals, evecs = torch.linalg.eigh(cov.double())
    small = evecs[:, evals < threshold]
    return (small @ small.T).float()


class AlphaEditEditor(Editor):
    method = "AlphaEdit"
    hparams_cls = AlphaEditHyperParams

    def setup(self) -> None:
        for l in self.layers:
            name = self.module_name(l)
            if self.state.of(PROJECTOR, name) is None:
                self.state.put(PROJECTOR, name, nullspace_projector(self.covariance(l), self.hparams.nullspace_threshold))
            self.init_edited_keys(l)

    def projector(self, layer: int) -> torch.Tensor:
        return self.state.of(PROJECTOR, self.module_name(layer)).to(self.weight(layer).device)

    def solve(self, i, layer, keys, resid):
        P = self.projector(layer).double()
        K = keys.T.double()
        R = resid.T.double()
        cache = self.edited_keys(layer).to(K.device).double()
        A = P @ (K @ K.T + cache) + self.hparams.L2 * torch.eye(K.shape[0], dtype=K.dtype, device=K.device)
        X = torch.linalg.solve(A, P @ K @ R.T)
        return X.T

    @torch.no_grad()
    def after_round(self, requests):
        self.accumulate_edited_keys(requests)


def apply_AlphaEdit_to_model(model, tok, requests, hparams, copy=False, return_orig_weights=True, **kwargs):
    """EasyEdit contract (name as in EasyEdit's ALG_DICT); see :func:`~.apply.apply_with`."""
    return apply_with(AlphaEditEditor, model, tok, requests, hparams, copy, return_orig_weights, **kwargs)


apply_alphaedit_to_model = apply_AlphaEdit_to_model
