"""DeltaEdit (Cao et al., 2025): AlphaEdit with a dynamic orthogonal constraint on the target values.

Superimposed noise of a new request: n = D k, with D the sum of the updates written so far to the
last edit layer (out × in) and k the request's key there (bare prompt). ‖n‖ is tracked by an
exponential moving mean μ and variance s² (momentum ``noise_momentum``). After ``noise_warmup``
requests, a request with |‖n‖ − μ| > ``var``·s is constrained: U = the eigenvectors of D Dᵀ + n nᵀ
among its top ⌊``space``·d⌋ with eigenvalue > ``noise_threshold`` (at most ⌊(1 − ``space``)·d⌋),
and after every Adam step δ ← (I − UUᵀ)δ, so z − h ⟂ span(U); the other requests update μ and s².
Keys, the null-space solve and the accumulated keys K_pK_pᵀ are AlphaEdit's. D, μ and s² live in the
edit state.
"""

from __future__ import annotations

import math

import torch

from . import core
from .alphaedit import AlphaEditEditor
from .apply import apply_with
from .hparams import DeltaEditHyperParams

#: edit-state kinds (see :meth:`~.state.EditState.of`): the accumulated update of the last edit layer and
#: the running noise statistics (μ, s²) of its screening
DELTA_D = "delta_D"
NOISE_STATS = "noise_stats"


def screen_noise(norms, stats, first_index: int, var: float, momentum: float, warmup: int):
    """Flags (constrain or not) for noise norms seen in order, and the updated (μ, s²).

    ``stats``: (μ, s²) or None before the first norm (then μ = first norm, s² = 0);
    ``first_index``: 1-based position of ``norms[0]`` among all requests of the run."""
    flags = []
    for j, x in enumerate(norms):
        mean, sq = (x, 0.0) if stats is None else stats
        flag = first_index + j > warmup and sq != 0 and abs(x - mean) > var * math.sqrt(sq)
        if not flag:
            mean = momentum * mean + (1 - momentum) * x
            sq = momentum * sq + (1 - momentum) * (x - mean) ** 2
        stats = (mean, sq)
        flags.append(flag)
    return flags, stats


def noise_subspace(gram: torch.Tensor, noise: torch.Tensor, space: float, threshold: float) -> torch.Tensor:
    """Orthonormal U (out × r, float32): dominant eigenvectors of ``gram`` + n nᵀ, ``gram`` = D Dᵀ (r may be 0)."""
    M = gram.double() + torch.outer(noise.double(), noise.double())
    evals, evecs = torch.linalg.eigh(M)
    d = M.shape[0]
    top = torch.flip(evals, [0])[: int(d * space)]
    r = min(int((top > threshold).sum()), int(d * (1 - space)))
    return torch.flip(evecs, [1])[:, :r].float()


class DeltaEditEditor(AlphaEditEditor):
    method = "DeltaEdit"
    hparams_cls = DeltaEditHyperParams

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: last round's screening: noise norms, flagged request indices and the rank of each one's U
        self.noise_info: dict = {}

    @property
    def _last(self) -> str:
        return self.module_name(self.layers[-1])

    @torch.no_grad()
    def noise_bases(self, requests) -> list[torch.Tensor | None]:
        """Per request, the basis U its δ must stay orthogonal to (None: unconstrained); updates μ, s²."""
        hp = self.hparams
        D = self.state.of(DELTA_D, self._last)
        if D is None:  # nothing written yet: no noise
            self.noise_info = {"norms": [], "constrained": [], "ranks": []}
            return [None] * len(requests)
        keys, _ = core.compute_keys(self.model, self.tok, requests, [self._last], hp.fact_token,
                                    templates=core.context_templates(0))
        noise = keys[self._last] @ D.to(keys[self._last].device).T
        norms = noise.norm(dim=1).tolist()
        old = self.state.of(NOISE_STATS, self._last)
        flags, stats = screen_noise(norms, None if old is None else tuple(old.tolist()),
                                    int(self.state.meta.get("edits", 0)) + 1, hp.var, hp.noise_momentum,
                                    hp.noise_warmup)
        self.state.put(NOISE_STATS, self._last, torch.tensor(stats, dtype=torch.float64))
        flagged = [j for j, f in enumerate(flags) if f]
        gram = D.double() @ D.double().T if flagged else None
        bases: list[torch.Tensor | None] = [None] * len(requests)
        for j in flagged:
            u = noise_subspace(gram, noise[j], hp.space, hp.noise_threshold)
            bases[j] = u if u.shape[1] else None
        self.noise_info = {"norms": norms, "constrained": flagged,
                           "ranks": [0 if bases[j] is None else bases[j].shape[1] for j in flagged]}
        return bases

    def values(self, requests):
        return core.compute_target_values(self.model, self.tok, requests, self.hparams, self.z_module,
                                          templates=self.templates, chunk_size=self.values_chunk,
                                          orth_bases=self.noise_bases(requests),
                                          stop_prob=self.hparams.v_prob_stop)

    @torch.no_grad()
    def run_round(self, requests, z):
        before = self.weight_out_in(self.layers[-1]).float().clone()
        info = super().run_round(requests, z)
        written = self.weight_out_in(self.layers[-1]).float() - before
        old = self.state.of(DELTA_D, self._last)
        self.state.put(DELTA_D, self._last, written if old is None else old.to(written.device) + written)
        return info


def apply_deltaedit_to_model(model, tok, requests, hparams, copy=False, return_orig_weights=True, **kwargs):
    """EasyEdit contract; see :func:`~.apply.apply_with`."""
    return apply_with(DeltaEditEditor, model, tok, requests, hparams, copy, return_orig_weights, **kwargs)
