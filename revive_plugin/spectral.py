"""Spectral metrics and probes of weight matrices (paper §2).

All functions are pure: they never modify their inputs. Decompositions use
``torch.linalg.svd`` (reduced, ``full_matrices=False``) in float32 (float64 inputs
stay float64) on the input's device. Singular vectors are defined up to sign, so
singular-vector similarities are absolute cosines.

Energy of an index set ``I`` is ``sum_{i in I} sigma_i`` (§2.2.1); the dominant rank
``k`` for a threshold ``tau`` is the smallest ``k`` with
``sum_{i<=k} sigma_i / sum_i sigma_i >= tau`` (Eq. 5, :func:`revive_plugin.projection.dominant_rank`).

For repeated comparisons against the same original matrix (one per editing round),
build a :class:`SpectralReference` once and pass it wherever ``W0`` is accepted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import torch

from revive_plugin.projection import dominant_rank, project_out

__all__ = [
    "SpectralReference",
    "SingularVectorSimilarity",
    "check_fraction",
    "low_rank_similarity",
    "singular_vector_similarity",
    "norm_growth",
    "energy_groups",
    "energy_reconstruction",
    "group_perturbation",
    "SpectralDetails",
    "energy_rank",
    "spectral_details",
    "spectral_report",
]

_SIDES = ("right", "left")
_PERTURB_SIDES = ("input", "output")


def _compute_dtype(weight: torch.Tensor) -> torch.dtype:
    return torch.float64 if weight.dtype == torch.float64 else torch.float32


def _check_matrix(weight, name: str) -> torch.Tensor:
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(weight.shape)}")
    if not torch.isfinite(weight).all():
        raise ValueError(f"{name} contains NaN or Inf values")
    return weight


def check_fraction(value, name: str, allow_one: bool) -> float:
    """``value`` as a float in (0, 1) (or (0, 1] with ``allow_one``), else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    upper_ok = value <= 1.0 if allow_one else value < 1.0
    if not (value > 0.0 and upper_ok):
        bound = "(0, 1]" if allow_one else "(0, 1)"
        raise ValueError(f"{name} must be in {bound}, got {value}")
    return value


def energy_rank(singular_values: torch.Tensor, fraction: float) -> int:
    """Eq. 5 rank for an energy share ``fraction`` in (0, 1]; ``fraction == 1`` keeps all ``r``."""
    fraction = check_fraction(fraction, "fraction", allow_one=True)
    return _rank_for(torch.as_tensor(singular_values).flatten(), fraction)


def _rank_for(singular_values: torch.Tensor, fraction: float) -> int:
    if fraction >= 1.0:
        return int(singular_values.numel())
    return int(dominant_rank(singular_values, fraction))


@dataclass(frozen=True)
class SpectralReference:
    """Reduced SVD of one matrix, computed once and reused (e.g. ``W0`` across rounds).

    ``U`` is (m, r), ``S`` is (r,), ``Vh`` is (r, n) with ``r = min(m, n)``; all in the
    compute dtype (float32, or float64 for float64 inputs) on the weight's device.
    """

    U: torch.Tensor
    S: torch.Tensor
    Vh: torch.Tensor
    tau: float
    k: int
    fro_norm: float
    shape: tuple
    dtype: torch.dtype

    @classmethod
    def from_weight(cls, weight: torch.Tensor, tau: float = 0.1) -> "SpectralReference":
        """Decompose ``weight`` (Eq. 1) and record its dominant rank for ``tau`` (Eq. 5)."""
        _check_matrix(weight, "weight")
        tau = check_fraction(tau, "tau", allow_one=False)
        w = weight.detach().to(_compute_dtype(weight))
        U, S, Vh = torch.linalg.svd(w, full_matrices=False)
        if float(S.sum()) <= 0.0:
            raise ValueError("weight is the zero matrix: its singular-value energy is 0")
        return cls(
            U=U, S=S, Vh=Vh, tau=tau, k=_rank_for(S, tau),
            fro_norm=float(torch.linalg.vector_norm(w)),
            shape=tuple(weight.shape), dtype=weight.dtype,
        )

    @property
    def V(self) -> torch.Tensor:
        """Right singular vectors as columns, (n, r)."""
        return self.Vh.T

    @property
    def rank(self) -> int:
        """Number of components ``r = min(m, n)``."""
        return int(self.S.numel())

    def dominant_rank(self, tau: float | None = None) -> int:
        """Eq. 5 rank for ``tau`` (the reference's own ``tau`` when None)."""
        if tau is None or float(tau) == self.tau:
            return self.k
        return _rank_for(self.S, check_fraction(tau, "tau", allow_one=False))

    def reconstruct(self, k: int) -> torch.Tensor:
        """Sum of the top-``k`` rank-one components, in the compute dtype."""
        return (self.U[:, :k] * self.S[:k]) @ self.Vh[:k]


def _as_reference(W0, tau: float) -> SpectralReference:
    if isinstance(W0, SpectralReference):
        return W0
    return SpectralReference.from_weight(W0, tau=tau)


def _check_pair(ref: SpectralReference, Wt) -> torch.Tensor:
    _check_matrix(Wt, "Wt")
    if tuple(Wt.shape) != ref.shape:
        raise ValueError(f"Wt has shape {tuple(Wt.shape)} but W0 has shape {ref.shape}")
    return Wt


def _decompose(Wt: torch.Tensor, ref: SpectralReference):
    w = Wt.detach().to(device=ref.U.device, dtype=ref.U.dtype)
    U, S, Vh = torch.linalg.svd(w, full_matrices=False)
    if float(S.sum()) <= 0.0:
        raise ValueError("Wt is the zero matrix: its singular-value energy is 0")
    return U, S, Vh


def _ls_from(ref: SpectralReference, k0: int, Ut, St, Vht, kt: int) -> float:
    # <hat Wt, hat W0>_F = sum_ab St_a S0_b (ut_a . u0_b)(vt_a . v0_b): O((m+n) k^2), no m x n product.
    M = Ut[:, :kt].T @ ref.U[:, :k0]
    N = Vht[:kt] @ ref.Vh[:k0].T
    inner = (St[:kt, None] * ref.S[None, :k0] * M * N).sum()
    norms = torch.linalg.vector_norm(St[:kt]) * torch.linalg.vector_norm(ref.S[:k0])
    return float((inner / norms).clamp(-1.0, 1.0))


def low_rank_similarity(W0, Wt: torch.Tensor, tau: float = 0.1) -> float:
    """Low-rank Subspace Similarity LS (Eq. 3).

    Cosine similarity (Frobenius inner product) between the reconstructions of ``W0``
    and ``Wt`` from their own top components holding a ``tau`` share of singular-value
    energy (Eq. 5). ``W0`` may be a :class:`SpectralReference`. Returns a float in [-1, 1].
    """
    tau = check_fraction(tau, "tau", allow_one=False)
    ref = _as_reference(W0, tau)
    _check_pair(ref, Wt)
    Ut, St, Vht = _decompose(Wt, ref)
    return _ls_from(ref, ref.dominant_rank(tau), Ut, St, Vht, _rank_for(St, tau))


@dataclass(frozen=True)
class SingularVectorSimilarity:
    """SS (§2.3): |cos| between each dominant singular vector of ``Wt`` and every original one.

    ``matrix[a, j] = |<x_a(Wt), x_j(W0)>|`` for the top ``k`` vectors ``x_a`` of ``Wt``
    (``x = v`` for ``side="right"``, ``u`` for ``"left"``) and all ``r`` original vectors
    ``x_j``; ``max``/``argmax`` are taken over ``j``. Identical matrices give ``max == 1``.
    """

    side: str
    k: int
    matrix: torch.Tensor
    max: torch.Tensor
    argmax: torch.Tensor

    @property
    def mean_max(self) -> float:
        return float(self.max.mean())

    @property
    def min_max(self) -> float:
        return float(self.max.min())

    def to_dict(self, include_matrix: bool = False) -> dict:
        """JSON-able summary (the k x r matrix only when asked)."""
        out = {
            "side": self.side, "k": self.k, "mean_max": self.mean_max, "min_max": self.min_max,
            "max": self.max.tolist(), "argmax": self.argmax.tolist(),
        }
        if include_matrix:
            out["matrix"] = self.matrix.tolist()
        return out


def _ss_from(ref: SpectralReference, Ut, Vht, k: int, side: str) -> SingularVectorSimilarity:
    if side == "right":
        mat = (Vht[:k] @ ref.Vh.T).abs()
    else:
        mat = (Ut[:, :k].T @ ref.U).abs()
    mat = mat.clamp(max=1.0).float().cpu()
    best, idx = mat.max(dim=1)
    return SingularVectorSimilarity(side=side, k=k, matrix=mat, max=best, argmax=idx)


def _check_side(side: str, allowed: Sequence[str]) -> str:
    if side not in allowed:
        raise ValueError(f"side must be one of {list(allowed)}, got {side!r}")
    return side


def singular_vector_similarity(W0, Wt: torch.Tensor, tau: float = 0.1, side: str = "right",
                               k: int | None = None) -> SingularVectorSimilarity:
    """Singular Vector Similarity SS (§2.3; left side: Appendix F.3).

    Compares the top ``k`` singular vectors of ``Wt`` with the full original basis of ``W0``.
    ``k`` defaults to the dominant rank of ``W0`` for ``tau`` (Eq. 5), so the matrix shape
    is the same for every editing round. ``W0`` may be a :class:`SpectralReference`.
    """
    tau = check_fraction(tau, "tau", allow_one=False)
    _check_side(side, _SIDES)
    ref = _as_reference(W0, tau)
    _check_pair(ref, Wt)
    k = ref.dominant_rank(tau) if k is None else int(k)
    if not 1 <= k <= ref.rank:
        raise ValueError(f"k must be in [1, {ref.rank}], got {k}")
    Ut, _, Vht = _decompose(Wt, ref)
    return _ss_from(ref, Ut, Vht, k, side)


def norm_growth(W0, Wt: torch.Tensor) -> float:
    """Weight-norm growth ``||Wt||_F / ||W0||_F``. ``W0`` may be a :class:`SpectralReference`."""
    if isinstance(W0, SpectralReference):
        base = W0.fro_norm
        _check_pair(W0, Wt)
    else:
        _check_matrix(W0, "W0")
        _check_matrix(Wt, "Wt")
        if W0.shape != Wt.shape:
            raise ValueError(f"Wt has shape {tuple(Wt.shape)} but W0 has shape {tuple(W0.shape)}")
        base = float(torch.linalg.vector_norm(W0.detach().to(_compute_dtype(W0))))
    if base == 0.0:
        raise ValueError("W0 is the zero matrix: norm growth is undefined")
    return float(torch.linalg.vector_norm(Wt.detach().to(_compute_dtype(Wt)))) / base


def energy_groups(singular_values: torch.Tensor, n_groups: int = 10) -> list[range]:
    """Split components into ``n_groups`` consecutive groups by cumulative energy (§2.2.2).

    Group ``g`` is ``range(k(g/n), k((g+1)/n))`` with ``k`` the Eq. 5 rank (``k(0) = 0``,
    ``k(1) = r``), so group 0 is exactly the dominant set for ``tau = 1/n``. A group can be
    empty when one component alone holds more than a ``1/n`` share of the energy.
    """
    if isinstance(n_groups, bool) or not isinstance(n_groups, int) or n_groups < 1:
        raise ValueError(f"n_groups must be a positive int, got {n_groups!r}")
    s = torch.as_tensor(singular_values).detach().flatten()
    if s.numel() == 0 or float(s.sum()) <= 0.0:
        raise ValueError("singular_values must be non-empty with positive sum")
    bounds = [0] + [_rank_for(s, g / n_groups) for g in range(1, n_groups)] + [int(s.numel())]
    return [range(bounds[g], bounds[g + 1]) for g in range(n_groups)]


def energy_reconstruction(W, fraction: float) -> torch.Tensor:
    """Rebuild ``W`` from its top components holding ``fraction`` of the energy (§2.2.1).

    ``W~^n = sum_{i<=k} sigma_i u_i v_i^T`` with ``k`` by Eq. 5 (``fraction = 1`` keeps all).
    ``W`` may be a :class:`SpectralReference`; the result has the original dtype and device.
    """
    fraction = check_fraction(fraction, "fraction", allow_one=True)
    if isinstance(W, SpectralReference):
        ref, dtype = W, W.dtype
    else:
        _check_matrix(W, "W")
        ref, dtype = SpectralReference.from_weight(W), W.dtype
    return ref.reconstruct(_rank_for(ref.S, fraction)).to(dtype)


def _group_indices(ref: SpectralReference, group, n_groups: int) -> torch.Tensor:
    if isinstance(group, bool):
        raise TypeError("group must be an int group index or a sequence of component indices")
    if isinstance(group, int):
        if not 0 <= group < n_groups:
            raise ValueError(f"group index must be in [0, {n_groups}), got {group}")
        idx = list(energy_groups(ref.S, n_groups)[group])
    else:
        idx = [int(i) for i in group]
        if len(set(idx)) != len(idx):
            raise ValueError("group component indices must be distinct")
        bad = [i for i in idx if not 0 <= i < ref.rank]
        if bad:
            raise ValueError(f"component indices out of range [0, {ref.rank}): {bad[:5]}")
    if not idx:
        raise ValueError(f"group {group!r} is empty (one component holds more than its energy share)")
    return torch.tensor(idx, dtype=torch.long, device=ref.U.device)


def group_perturbation(W, group: Union[int, Sequence[int]], eps: float, side: str = "input",
                       generator: torch.Generator | None = None, n_groups: int = 10) -> torch.Tensor:
    """Structured random perturbation of one energy group, Frobenius norm ``eps`` (Eq. 2).

    ``side="input"``: ``Delta = sum_{j in G} sum_i alpha_ij u_i v_j^T`` remaps the group's input
    directions ``v_j`` to random mixtures of output directions (§2.2.2).
    ``side="output"``: ``Delta = sum_{i in H} sum_j beta_ij u_i v_j^T`` (Appendix F.1).
    Coefficients are N(0, 1) drawn from ``generator`` (CPU) and the result is rescaled to
    ``||Delta||_F = eps``. ``group`` is an index into :func:`energy_groups` (``n_groups``
    groups) or explicit component indices. ``W`` may be a :class:`SpectralReference`.
    Returns ``Delta`` in W's dtype and device; ``W`` itself is not modified.
    """
    _check_side(side, _PERTURB_SIDES)
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite non-negative number, got {eps!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if isinstance(W, SpectralReference):
        ref, dtype = W, W.dtype
    else:
        _check_matrix(W, "W")
        ref, dtype = SpectralReference.from_weight(W), W.dtype
    idx = _group_indices(ref, group, n_groups)
    shape = (ref.rank, idx.numel()) if side == "input" else (idx.numel(), ref.rank)
    coeff = torch.randn(shape, generator=generator, dtype=ref.U.dtype).to(ref.U.device)
    coeff = coeff * (float(eps) / float(torch.linalg.vector_norm(coeff)))
    if side == "input":
        delta = (ref.U @ coeff) @ ref.Vh[idx]
    else:
        delta = (ref.U[:, idx] @ coeff) @ ref.Vh
    return delta.to(dtype)


@dataclass(frozen=True)
class SpectralDetails:
    """Everything one comparison computes: the scalar ``report`` and both SS objects."""

    report: dict
    right: SingularVectorSimilarity
    left: SingularVectorSimilarity


def dominant_update_share(ref: "SpectralReference", Wt: torch.Tensor, k: int | None = None) -> float:
    """Share of ‖W_t − W_0‖²_F in the original dominant blocks (coefficients α_ij with i ≤ k or j ≤ k).

    It is what REVIVE removes (Eq. 6): 0 for a REVIVE-protected sequence, whatever the order of
    W_t's own singular values (SS and LS also move when complement directions outgrow σ_k).
    """
    k = ref.k if k is None else k
    w = Wt.detach().to(device=ref.U.device, dtype=ref.U.dtype)
    delta = w - (ref.U * ref.S) @ ref.Vh
    total = float(torch.linalg.matrix_norm(delta)) ** 2
    if total <= (1e-5 * ref.fro_norm) ** 2:  # below the reconstruction error of U S Vh: no update
        return 0.0
    safe = project_out(delta, ref.U[:, :k], ref.Vh[:k].T)
    return max(0.0, 1.0 - float(torch.linalg.matrix_norm(safe)) ** 2 / total)


def spectral_details(W0, Wt: torch.Tensor, tau: float = 0.1) -> SpectralDetails:
    """Like :func:`spectral_report`, also keeping the SS matrices (for plots)."""
    tau = check_fraction(tau, "tau", allow_one=False)
    ref = _as_reference(W0, tau)
    _check_pair(ref, Wt)
    Ut, St, Vht = _decompose(Wt, ref)
    k0, kt = ref.dominant_rank(tau), _rank_for(St, tau)
    right = _ss_from(ref, Ut, Vht, k0, "right")
    left = _ss_from(ref, Ut, Vht, k0, "left")
    report = {
        "ls": _ls_from(ref, k0, Ut, St, Vht, kt),
        "ss_right_mean_max": right.mean_max,
        "ss_right_min_max": right.min_max,
        "ss_left_mean_max": left.mean_max,
        "ss_left_min_max": left.min_max,
        "norm_growth": float(torch.linalg.vector_norm(St)) / ref.fro_norm,
        "dom_share": dominant_update_share(ref, Wt, k0),
        "k_w0": float(k0),
        "k_wt": float(kt),
    }
    return SpectralDetails(report=report, right=right, left=left)


def spectral_report(W0, Wt: torch.Tensor, tau: float = 0.1) -> dict:
    """All per-checkpoint spectral metrics from one SVD of ``Wt`` (plus a cached one of ``W0``).

    Keys: ``ls`` (Eq. 3), ``ss_right_mean_max``, ``ss_right_min_max``, ``ss_left_mean_max``,
    ``ss_left_min_max`` (SS maxima over the original basis, averaged / worst over the dominant
    vectors), ``norm_growth``, ``dom_share`` (:func:`dominant_update_share`), ``k_w0`` and ``k_wt`` (Eq. 5 ranks). All values are floats.
    Pass a :class:`SpectralReference` as ``W0`` to avoid re-decomposing it every round.
    """
    return spectral_details(W0, Wt, tau).report
