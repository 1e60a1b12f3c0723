"""Energy rank (Eq. 5) and the dominant-subspace projection (Eq. 6) against Algorithm 1."""

import math

import pytest
import torch

from revive_plugin import DominantBasis, check_tau, dominant_rank, literal_algorithm1


def rel_err(a, b):
    return float(torch.linalg.matrix_norm(a - b) / max(float(torch.linalg.matrix_norm(b)), 1e-30))


@pytest.mark.parametrize(
    "sigma, tau, k",
    [
        ([4.0, 3.0, 2.0, 1.0], 0.1, 1),    # 0.4 ≥ 0.1
        ([4.0, 3.0, 2.0, 1.0], 0.4, 1),    # exactly reached
        ([4.0, 3.0, 2.0, 1.0], 0.41, 2),   # 0.7
        ([4.0, 3.0, 2.0, 1.0], 0.95, 4),   # 0.9 < 0.95 ≤ 1.0
        ([1.0, 4.0, 2.0, 3.0], 0.41, 2),   # order does not matter
        ([5.0, 0.0, 0.0], 0.99, 1),
    ],
)
def test_dominant_rank_uses_sums_of_singular_values(sigma, tau, k):
    assert dominant_rank(sigma, tau) == k


def test_dominant_rank_is_not_squared_energy():
    # σ = (3, 1, 1, 1): Σσ gives 0.5 at k=1 so τ=0.6 needs k=2; with σ² it would already be k=1 (0.75).
    assert dominant_rank([3.0, 1.0, 1.0, 1.0], 0.6) == 2


@pytest.mark.parametrize("tau", [0.0, 1.0, -0.1, 1.5, float("nan"), "x", None])
def test_tau_outside_open_interval_is_rejected(tau):
    with pytest.raises(ValueError, match="revive_tau"):
        check_tau(tau)
    with pytest.raises(ValueError):
        dominant_rank([1.0, 2.0], tau)


def test_zero_matrix_has_no_dominant_subspace():
    with pytest.raises(ValueError, match="all singular values are zero"):
        DominantBasis.from_weight(torch.zeros(5, 4), 0.1)


@pytest.mark.parametrize("bad", [[float("nan"), 1.0], [float("inf")], [-1.0, 2.0], []])
def test_bad_singular_values(bad):
    with pytest.raises(ValueError):
        dominant_rank(bad, 0.1)


@pytest.mark.parametrize("shape", [(30, 50), (50, 30), (40, 40), (1, 7), (64, 16)])
@pytest.mark.parametrize("tau", [0.05, 0.1, 0.5, 0.9])
def test_projection_equals_literal_algorithm1(shape, tau):
    g = torch.Generator().manual_seed(sum(shape) + int(tau * 100))
    W = torch.randn(*shape, generator=g, dtype=torch.float64)
    dW = torch.randn(*shape, generator=g, dtype=torch.float64)
    ref = literal_algorithm1(W, dW, tau)
    for weight, delta, expected in ((W, dW, ref), (W.T, dW.T, ref.T)):  # both storage orientations
        basis = DominantBasis.from_weight(weight, tau)
        assert rel_err(basis.project(delta), expected) < 1e-5


def test_projection_equals_literal_on_real_ffn_weight(bundled_model):
    model, _ = bundled_model
    W = model.get_parameter("model.layers.6.mlp.down_proj.weight").detach().double()
    dW = torch.randn(W.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1e-3
    basis = DominantBasis.from_weight(W, 0.1)
    assert 1 < basis.k < 100
    assert rel_err(basis.project(dW), literal_algorithm1(W, dW, 0.1)) < 1e-5
    # float32 weight as the model stores it: same answer to float32 precision
    b32 = DominantBasis.from_weight(W.float(), 0.1)
    assert b32.k == basis.k
    assert rel_err(b32.project(dW.float()).double(), literal_algorithm1(W, dW, 0.1)) < 1e-4


def test_projected_update_is_orthogonal_to_dominant_subspace():
    g = torch.Generator().manual_seed(1)
    W, dW = torch.randn(80, 60, generator=g), torch.randn(80, 60, generator=g)
    b = DominantBasis.from_weight(W, 0.2)
    safe = b.project(dW)
    left, right = b.leakage(safe)
    assert left < 1e-5 and right < 1e-5
    assert min(b.leakage(dW)) > 1e-2  # the raw update did touch it
    assert rel_err(b.project(safe), safe) < 1e-6  # idempotent


def test_update_outside_dominant_subspace_is_unchanged():
    g = torch.Generator().manual_seed(2)
    W = torch.randn(40, 30, generator=g, dtype=torch.float64)
    U, S, Vh = torch.linalg.svd(W, full_matrices=True)
    b = DominantBasis.from_weight(W, 0.3)
    alpha = torch.randn(40, 30, generator=g, dtype=torch.float64)
    alpha[: b.k, :] = 0
    alpha[:, : b.k] = 0
    outside = U @ alpha @ Vh
    assert rel_err(b.project(outside), outside) < 1e-10
    inside = torch.outer(U[:, 0], Vh[1])  # touches u_1
    assert torch.linalg.matrix_norm(b.project(inside)) < 1e-10


def test_basis_attributes_and_shapes():
    W = torch.randn(12, 7)
    b = DominantBasis.from_weight(W, 0.5)
    assert b.U.shape == (12, b.k) and b.V.shape == (7, b.k)
    assert b.singular_values.shape == (7,)
    assert b.k == dominant_rank(torch.linalg.svdvals(W), 0.5)
    torch.testing.assert_close(b.U.T @ b.U, torch.eye(b.k), atol=1e-5, rtol=0)


def test_low_precision_weights_project_in_float32_and_keep_dtype():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(64, 48, generator=g)
    dW = torch.randn(64, 48, generator=g)
    b = DominantBasis.from_weight(W.bfloat16(), 0.1)
    assert b.U.dtype == torch.float32
    out = b.project(dW.bfloat16())
    assert out.dtype == torch.bfloat16
    ref = DominantBasis.from_weight(W.bfloat16().float(), 0.1).project(dW.bfloat16().float())
    assert rel_err(out.float(), ref) < 1e-2


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -math.inf])
def test_non_finite_updates_are_rejected(bad):
    b = DominantBasis.from_weight(torch.randn(6, 5), 0.1)
    d = torch.randn(6, 5)
    d[2, 3] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        b.project(d)


def test_finite_update_whose_sum_overflows_is_accepted_and_input_is_left_unchanged():
    b = DominantBasis.from_weight(torch.randn(6, 5), 0.1)
    d = torch.full((6, 5), 20000.0, dtype=torch.float16)  # finite, but the fp16 sum is inf
    before = d.clone()
    out = b.project(d)
    assert torch.equal(d, before) and out.data_ptr() != d.data_ptr()
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


def test_wrong_shape_is_rejected():
    b = DominantBasis.from_weight(torch.randn(6, 5), 0.1)
    with pytest.raises(ValueError, match="does not match"):
        b.project(torch.randn(5, 6))
    with pytest.raises(ValueError, match="2-D"):
        DominantBasis.from_weight(torch.randn(3, 4, 5), 0.1)
    with pytest.raises(ValueError, match="NaN or Inf"):
        DominantBasis.from_weight(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]), 0.1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_projection_runs_on_the_weights_device():
    W = torch.randn(64, 32, device="cuda")
    b = DominantBasis.from_weight(W, 0.1)
    out = b.project(torch.randn(64, 32, device="cuda", dtype=torch.float16))
    assert out.device == W.device and out.dtype == torch.float16
