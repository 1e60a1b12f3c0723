"""Representation drift (Fig 10): mean cosine and linear CKA on hand-made hidden states."""

import math

import pytest
import torch

from revive_plugin.evaluation.representation import drift_metrics, linear_cka, mean_cosine, pca_2d


def _plane(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=torch.float64)


def test_identical_states_give_one():
    x = _plane()
    assert mean_cosine(x, x) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)
    assert drift_metrics(x, x.clone()) == pytest.approx({"repr_cos": 1.0, "repr_cka": 1.0})


def test_known_rotation():
    """A rotation by θ of every state: each cosine is cos θ; CKA is rotation invariant (1)."""
    theta = 0.7
    rot = torch.tensor([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]], dtype=torch.float64)
    x = _plane()
    y = x @ rot.T
    assert mean_cosine(x, y) == pytest.approx(math.cos(theta), abs=1e-9)
    assert linear_cka(x, y) == pytest.approx(1.0, abs=1e-9)
    assert linear_cka(x, 3.0 * y) == pytest.approx(1.0, abs=1e-9)


def test_cka_of_collapsed_direction_by_hand():
    """x has two centred, uncorrelated columns of variances a and b; y keeps only the first:
    CKA = a² / (sqrt(a² + b²) · a) = a / sqrt(a² + b²)."""
    x = torch.tensor([[1.0, 2.0], [-1.0, 2.0], [1.0, -2.0], [-1.0, -2.0]], dtype=torch.float64)
    y = x.clone()
    y[:, 1] = 0
    a, b = 4.0, 16.0   # column sums of squares
    assert linear_cka(x, y) == pytest.approx(a / math.sqrt(a * a + b * b), abs=1e-12)


def test_bad_inputs_are_clear_errors():
    x = _plane()
    with pytest.raises(ValueError, match="shape"):
        mean_cosine(x, x[:, :1])
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        linear_cka(x, bad)
    with pytest.raises(ValueError, match="constant"):
        linear_cka(torch.ones(5, 3), torch.ones(5, 3))


def test_pca_uses_the_reference_axes():
    x = torch.zeros(6, 3, dtype=torch.float64)
    x[:, 0] = torch.tensor([3.0, -3, 2, -2, 1, -1])
    x[:, 1] = torch.tensor([0.1, 0.1, 0, 0, -0.1, -0.1])  # uncorrelated with column 0
    ref2, moved = pca_2d(x, x + torch.tensor([0.0, 0.0, 5.0]))
    assert ref2.shape == (6, 2)
    assert torch.allclose(ref2[:, 0].abs(), x[:, 0].abs().float(), atol=1e-5)
    assert torch.allclose(moved, ref2, atol=1e-5)  # a shift along an axis the reference never uses is invisible
