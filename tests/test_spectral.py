"""Tests for revive_plugin.spectral (paper §2, Eq. 1-3)."""

import math

import pytest
import torch

from revive_plugin.spectral import (
    SpectralReference,
    energy_groups,
    energy_reconstruction,
    group_perturbation,
    low_rank_similarity,
    norm_growth,
    singular_vector_similarity,
    spectral_report,
)


def _orthogonal(n, seed):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    return q


def _matrix(m, n, sigmas, seed=0):
    U = _orthogonal(m, seed)[:, : len(sigmas)]
    V = _orthogonal(n, seed + 1)[:, : len(sigmas)]
    return U, torch.tensor(sigmas, dtype=torch.float64), V


def _rotated(theta, tau_sigmas=(4.0, 3.0, 2.0, 1.0)):
    """W0 = U diag(s) V^T and Wt with v_1 rotated by theta towards v_4."""
    U, S, V = _matrix(6, 5, list(tau_sigmas))
    W0 = U @ torch.diag(S) @ V.T
    Vt = V.clone()
    Vt[:, 0] = math.cos(theta) * V[:, 0] + math.sin(theta) * V[:, 3]
    Vt[:, 3] = -math.sin(theta) * V[:, 0] + math.cos(theta) * V[:, 3]
    Wt = U @ torch.diag(S) @ Vt.T
    return W0, Wt


def test_identical_matrices_give_ls_and_ss_of_one():
    W = torch.randn(40, 30, generator=torch.Generator().manual_seed(0))
    assert low_rank_similarity(W, W.clone()) == pytest.approx(1.0, abs=1e-6)
    for side in ("right", "left"):
        ss = singular_vector_similarity(W, W.clone(), side=side)
        assert ss.matrix.shape == (ss.k, 30)
        assert torch.allclose(ss.max, torch.ones(ss.k), atol=1e-5)
        assert ss.argmax.tolist() == list(range(ss.k))
    report = spectral_report(W, W.clone())
    for key in ("ls", "ss_right_mean_max", "ss_right_min_max", "ss_left_mean_max", "ss_left_min_max",
                "norm_growth"):
        assert report[key] == pytest.approx(1.0, abs=1e-5), key
    assert all(isinstance(v, float) for v in report.values())


def test_rotation_of_dominant_vector_matches_hand_computation():
    theta = math.pi / 6
    W0, Wt = _rotated(theta)
    # sigma = (4, 3, 2, 1): tau = 0.1 keeps k = 1, so LS = <v1, v1'> = cos(theta).
    assert low_rank_similarity(W0, Wt, tau=0.1) == pytest.approx(math.cos(theta), abs=1e-9)
    # tau = 0.5 keeps k = 2: LS = (16 cos + 9) / (16 + 9).
    assert low_rank_similarity(W0, Wt, tau=0.5) == pytest.approx((16 * math.cos(theta) + 9) / 25, abs=1e-9)
    ss = singular_vector_similarity(W0, Wt, tau=0.5, side="right")
    assert ss.k == 2
    assert ss.matrix[0, 0].item() == pytest.approx(math.cos(theta), abs=1e-6)
    assert ss.matrix[0, 3].item() == pytest.approx(math.sin(theta), abs=1e-6)
    assert ss.max.tolist() == pytest.approx([math.cos(theta), 1.0], abs=1e-6)
    left = singular_vector_similarity(W0, Wt, tau=0.5, side="left")
    assert left.max.tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    rep = spectral_report(W0, Wt, tau=0.5)
    assert rep["ss_right_min_max"] == pytest.approx(math.cos(theta), abs=1e-6)
    assert rep["ss_left_min_max"] == pytest.approx(1.0, abs=1e-6)
    assert rep["norm_growth"] == pytest.approx(1.0, abs=1e-9)


def test_orthogonal_rotation_drives_ss_to_expected_value():
    W0, Wt = _rotated(math.pi / 2)
    # v1 now points along the old v4: LS at k = 1 is 0, SS max is still 1 (found at index 3).
    assert low_rank_similarity(W0, Wt, tau=0.1) == pytest.approx(0.0, abs=1e-9)
    ss = singular_vector_similarity(W0, Wt, tau=0.1)
    assert ss.argmax.tolist() == [3]


def test_reference_reuse_matches_direct_computation():
    g = torch.Generator().manual_seed(3)
    W0 = torch.randn(50, 20, generator=g)
    Wt = W0 + 0.3 * torch.randn(50, 20, generator=g)
    ref = SpectralReference.from_weight(W0, tau=0.1)
    assert low_rank_similarity(ref, Wt) == pytest.approx(low_rank_similarity(W0, Wt), abs=1e-6)
    assert spectral_report(ref, Wt) == pytest.approx(spectral_report(W0, Wt), abs=1e-6)
    assert norm_growth(ref, Wt) == pytest.approx(float(Wt.norm() / W0.norm()), rel=1e-6)
    assert norm_growth(W0, 2 * W0) == pytest.approx(2.0, rel=1e-6)
    # A different tau on a reference recomputes k from its stored spectrum.
    assert low_rank_similarity(ref, Wt, tau=0.5) == pytest.approx(low_rank_similarity(W0, Wt, tau=0.5), abs=1e-6)


def test_ls_matches_explicit_reconstruction():
    g = torch.Generator().manual_seed(4)
    W0 = torch.randn(30, 45, generator=g, dtype=torch.float64)
    Wt = W0 + 0.5 * torch.randn(30, 45, generator=g, dtype=torch.float64)
    a = energy_reconstruction(W0, 0.2)
    b = energy_reconstruction(Wt, 0.2)
    expected = float((a * b).sum() / (a.norm() * b.norm()))
    assert low_rank_similarity(W0, Wt, tau=0.2) == pytest.approx(expected, abs=1e-10)


def test_energy_reconstruction_full_energy_is_identity_and_keeps_dtype():
    W = torch.randn(24, 16, generator=torch.Generator().manual_seed(1))
    full = energy_reconstruction(W, 1.0)
    assert full.dtype == W.dtype and full.shape == W.shape
    assert torch.allclose(full, W, atol=1e-5)
    low = energy_reconstruction(W, 0.3)
    assert torch.linalg.matrix_rank(low, rtol=1e-4).item() < 16
    U, S, V = _matrix(8, 8, [5.0, 3.0, 1.0, 1.0])
    W2 = U @ torch.diag(S) @ V.T
    # 5 / 10 = 0.5 energy: the 50 % reconstruction is the first component exactly.
    assert torch.allclose(energy_reconstruction(W2, 0.5), 5.0 * torch.outer(U[:, 0], V[:, 0]), atol=1e-10)


def test_energy_groups_partition_by_cumulative_energy():
    s = torch.ones(20)
    groups = energy_groups(s, 10)
    assert [list(g) for g in groups] == [[2 * i, 2 * i + 1] for i in range(10)]
    s = torch.tensor([10.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    groups = energy_groups(s, 10)
    covered = [i for g in groups for i in g]
    assert covered == list(range(6))
    assert list(groups[0]) == [0]
    assert any(len(g) == 0 for g in groups)
    with pytest.raises(ValueError):
        energy_groups(torch.zeros(3))
    with pytest.raises(ValueError):
        energy_groups(s, 0)


@pytest.mark.parametrize("side", ["input", "output"])
def test_group_perturbation_norm_and_support(side):
    W = torch.randn(12, 12, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    U, S, Vh = torch.linalg.svd(W)
    ref = SpectralReference.from_weight(W)
    groups = energy_groups(ref.S, 10)
    for gi, g in enumerate(groups):
        if len(g) == 0:
            continue
        delta = group_perturbation(W, gi, eps=0.7, side=side, generator=torch.Generator().manual_seed(gi))
        assert delta.dtype == W.dtype and delta.shape == W.shape
        assert float(delta.norm()) == pytest.approx(0.7, rel=1e-9)
        coeff = U.T @ delta @ Vh.T  # alpha_ij = <delta, u_i v_j^T>
        mask = torch.zeros(12, dtype=torch.bool)
        mask[list(g)] = True
        outside = coeff[:, ~mask] if side == "input" else coeff[~mask, :]
        inside = coeff[:, mask] if side == "input" else coeff[mask, :]
        assert outside.abs().max().item() < 1e-10
        assert float(inside.norm()) == pytest.approx(0.7, rel=1e-9)


def test_group_perturbation_is_seeded_and_leaves_weight_untouched():
    W = torch.randn(10, 14, generator=torch.Generator().manual_seed(6))
    before = W.clone()
    a = group_perturbation(W, [0, 2], eps=1.0, generator=torch.Generator().manual_seed(1))
    b = group_perturbation(W, [0, 2], eps=1.0, generator=torch.Generator().manual_seed(1))
    c = group_perturbation(W, [0, 2], eps=1.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(W, before)
    with pytest.raises(ValueError):
        group_perturbation(W, [0, 99], eps=1.0)
    with pytest.raises(ValueError):
        group_perturbation(W, 0, eps=-1.0)
    with pytest.raises(ValueError):
        group_perturbation(W, 0, eps=1.0, side="sideways")
    with pytest.raises(ValueError):
        group_perturbation(W, 10, eps=1.0)


def test_input_errors_are_clear():
    W = torch.randn(5, 4)
    with pytest.raises(ValueError, match="shape"):
        low_rank_similarity(W, torch.randn(4, 5))
    with pytest.raises(ValueError, match="side"):
        singular_vector_similarity(W, W, side="up")
    with pytest.raises(ValueError, match="tau"):
        spectral_report(W, W, tau=1.5)
    with pytest.raises(ValueError, match="fraction"):
        energy_reconstruction(W, 0.0)
    with pytest.raises(ValueError, match="zero"):
        SpectralReference.from_weight(torch.zeros(3, 3))
    with pytest.raises(TypeError):
        norm_growth(W, "not a tensor")


def test_dominant_update_share_is_zero_for_revive_updates_only():
    from revive_plugin import DominantBasis
    from revive_plugin.spectral import SpectralReference, dominant_update_share

    g = torch.Generator().manual_seed(11)
    W0 = torch.randn(40, 30, generator=g, dtype=torch.float64)
    ref = SpectralReference.from_weight(W0, tau=0.2)
    raw = torch.randn(40, 30, generator=g, dtype=torch.float64)
    safe = DominantBasis.from_weight(W0, 0.2).project(raw)
    assert dominant_update_share(ref, W0) == 0.0
    assert dominant_update_share(ref, W0 + safe) < 1e-12
    # a random update puts roughly its share of coefficients (i ≤ k or j ≤ k) in the dominant blocks
    k = ref.k
    expected = 1 - (40 - k) * (30 - k) / (40 * 30)
    assert dominant_update_share(ref, W0 + raw) == pytest.approx(expected, abs=0.15)
    inside = torch.outer(ref.U[:, 0], ref.Vh[3])
    assert dominant_update_share(ref, W0 + inside) == pytest.approx(1.0, abs=1e-9)
