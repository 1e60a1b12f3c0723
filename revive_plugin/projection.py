"""Dominant-subspace projection of weight updates (REVIVE, paper §3, Eq. 4-6).

The paper writes every update in the outer-product basis {u_i v_jᵀ} of the ORIGINAL weight
(Eq. 4) and zeroes each coefficient α_ij with i ≤ k or j ≤ k (Eq. 6). That equals

    ΔW_safe = (I − U_k U_kᵀ) ΔW (I − V_k V_kᵀ),

which needs only the top-k singular vectors, so it costs O(mnk) instead of the O(m²n + mn²) of
the literal double loop of Algorithm 1 (Appendix D).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .config import check_tau

_COMPUTE_DTYPES = (torch.float32, torch.float64)


def dominant_rank(singular_values: torch.Tensor | Sequence[float], tau: float) -> int:
    """Smallest k with Σ_{i≤k} σ_i / Σ_i σ_i ≥ τ (Eq. 5; sums of σ, not of σ²).

    ``singular_values`` may be in any order; they are sorted in descending order first.
    """
    tau = check_tau(tau)
    s = torch.as_tensor(singular_values, dtype=torch.float64).flatten()
    if s.numel() == 0:
        raise ValueError("dominant_rank needs at least one singular value")
    if not torch.isfinite(s).all():
        raise ValueError("singular values contain NaN or Inf")
    if (s < 0).any():
        raise ValueError("singular values must be non-negative")
    s = torch.sort(s, descending=True).values
    total = s.sum()
    if total <= 0:
        raise ValueError("all singular values are zero: the matrix has no dominant subspace")
    energy = torch.cumsum(s, 0) / total
    # A tiny tolerance keeps exact ties (e.g. τ = 0.5 on two equal σ) on the "≥" side.
    k = int(torch.searchsorted(energy, torch.tensor([tau - 1e-12], dtype=torch.float64)).item()) + 1
    return min(k, s.numel())


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype if t.dtype in _COMPUTE_DTYPES else torch.float32


def _check_finite(t: torch.Tensor, what: str) -> None:
    # A NaN/Inf anywhere makes the sum non-finite; the sum is a single read of t, no mask is built.
    # Only when it is non-finite (or overflowed) is the exact elementwise test run.
    if not torch.isfinite(t.sum()) and not torch.isfinite(t).all():
        raise ValueError(f"{what} contains NaN or Inf values")


def project_out(delta: torch.Tensor, U: torch.Tensor, V: torch.Tensor) -> torch.Tensor:
    """(I − U Uᵀ) ΔW (I − V Vᵀ) (Eq. 6) for orthonormal U (m×k) and V (n×k) of ΔW's dtype and device."""
    d = delta.clone()
    d.addmm_(U, U.T @ d, alpha=-1)  # in place on the one copy: no further m×n temporaries
    return d.addmm_(d @ V, V.T, alpha=-1)


@dataclass
class DominantBasis:
    """Top-k singular vectors of an original weight W (shape m×n, as stored).

    Attributes: ``U`` (m×k), ``V`` (n×k), ``singular_values`` (all of them, descending), ``k``
    (Eq. 5) and ``tau``. ``nn.Linear`` (out, in) and GPT-2 ``Conv1D`` (in, out) weights both work
    as stored: the projection is symmetric in the two sides.
    """

    U: torch.Tensor
    V: torch.Tensor
    singular_values: torch.Tensor
    k: int
    tau: float

    @classmethod
    def from_weight(cls, weight: torch.Tensor, tau: float = 0.1) -> "DominantBasis":
        """SVD of ``weight`` (on its own device, float32 or better) and the dominant rank k."""
        tau = check_tau(tau)
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise ValueError(
                f"REVIVE needs a 2-D weight matrix, got {tuple(getattr(weight, 'shape', ()))}"
            )
        w = weight.detach()
        _check_finite(w, "weight")
        w = w.to(_compute_dtype(w))
        U, S, Vh = torch.linalg.svd(w, full_matrices=False)
        k = dominant_rank(S, tau)
        return cls(
            U=U[:, :k].contiguous(),
            V=Vh[:k].T.contiguous(),
            singular_values=S,
            k=k,
            tau=tau,
        )

    @property
    def shape(self) -> tuple[int, int]:
        return (self.U.shape[0], self.V.shape[0])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "DominantBasis":
        return DominantBasis(
            U=self.U.to(device=device, dtype=dtype),
            V=self.V.to(device=device, dtype=dtype),
            singular_values=self.singular_values.to(device=device),
            k=self.k,
            tau=self.tau,
        )

    def _check_delta(self, delta: torch.Tensor) -> None:
        if not isinstance(delta, torch.Tensor) or tuple(delta.shape) != self.shape:
            raise ValueError(
                f"update shape {tuple(getattr(delta, 'shape', ()))} does not match the basis "
                f"of a {self.shape[0]}x{self.shape[1]} weight"
            )
        _check_finite(delta, "weight update ΔW")

    def _factors(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
        dtype = torch.promote_types(_compute_dtype(like), self.U.dtype)
        return self.U.to(like.device, dtype), self.V.to(like.device, dtype), dtype

    def project(self, delta: torch.Tensor) -> torch.Tensor:
        """ΔW_safe = (I − U_k U_kᵀ) ΔW (I − V_k V_kᵀ) (Eq. 6), in ΔW's dtype and device."""
        self._check_delta(delta)
        U, V, dtype = self._factors(delta)
        return project_out(delta.detach().to(dtype), U, V).to(delta.dtype)

    def leakage(self, delta: torch.Tensor) -> tuple[float, float]:
        """(‖U_kᵀ ΔW‖/‖ΔW‖, ‖ΔW V_k‖/‖ΔW‖): how much of ΔW touches the dominant subspace."""
        self._check_delta(delta)
        U, V, dtype = self._factors(delta)
        d = delta.detach().to(dtype)
        norm = torch.linalg.matrix_norm(d)
        if norm == 0:
            return 0.0, 0.0
        left = torch.linalg.matrix_norm(U.T @ d) / norm
        right = torch.linalg.matrix_norm(d @ V) / norm
        return float(left), float(right)


def literal_algorithm1(weight: torch.Tensor, delta: torch.Tensor, tau: float) -> torch.Tensor:
    """Algorithm 1 as printed (full U, V; α_ij = u_iᵀ ΔW v_j; keep i > k and j > k).

    O(m²n + mn²): a reference for tests and benchmarks only, never for editing.
    """
    w = weight.detach().to(torch.float64)
    U, S, Vh = torch.linalg.svd(w, full_matrices=True)
    k = dominant_rank(S, tau)
    alpha = U.T @ delta.detach().to(torch.float64) @ Vh.T
    alpha[:k, :] = 0
    alpha[:, :k] = 0
    return (U @ alpha @ Vh).to(delta.dtype)
