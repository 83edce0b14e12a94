"""Linear transforms against explicit matrices, plus input validation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from exactflow import transforms as T


def _perturbed(t: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    t = t.double()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return t


def _lu_matrix(weight: torch.nn.Module) -> torch.Tensor:
    """``P L U`` built by hand from the stored factors."""
    d = weight.perm.numel()
    eye = torch.eye(d, dtype=torch.float64)
    p = eye[weight.perm]  # (P v)_i = v[perm[i]]
    lower = torch.tril(weight.lower, -1) + eye
    diagonal = weight.sign * (F.softplus(weight.raw_diagonal) + 1e-3)
    upper = torch.triu(weight.upper, 1) + torch.diag(diagonal)
    return p @ lower @ upper


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_lu_linear_is_the_stated_affine_map(bias: bool) -> None:
    t = _perturbed(T.LULinear(5, bias=bias))
    w = _lu_matrix(t.weight)
    b = t.bias if bias else torch.zeros(5, dtype=torch.float64)
    x = torch.randn(2, 7, 5, dtype=torch.float64)
    y, ladj = t(x)
    torch.testing.assert_close(t.matrix(), w)
    torch.testing.assert_close(y, x @ w.T + b)
    assert ladj.shape == (2, 7)
    torch.testing.assert_close(ladj, torch.linalg.slogdet(w)[1].expand(2, 7))
    x_back, ladj_inv = t.inverse(y)
    torch.testing.assert_close(x_back, torch.linalg.solve(w, (y - b).unsqueeze(-1)).squeeze(-1))
    torch.testing.assert_close(ladj_inv, -ladj)


def test_lu_linear_starts_as_its_permutation() -> None:
    torch.manual_seed(0)
    t = T.LULinear(4).double()
    w = t.matrix()
    torch.testing.assert_close(w, torch.eye(4, dtype=torch.float64)[t.weight.perm])
    torch.testing.assert_close(
        t(torch.randn(3, 4, dtype=torch.float64))[1], torch.zeros(3, dtype=torch.float64)
    )


@pytest.mark.parametrize("lu", [True, False], ids=["lu", "plain"])
def test_conv1x1_is_a_1x1_convolution(lu: bool) -> None:
    t = _perturbed(T.InvertibleConv1x1(3, lu=lu))
    w = _lu_matrix(t.weight) if lu else t.weight
    torch.testing.assert_close(t.matrix(), w)
    x = torch.randn(2, 4, 3, 5, 6, dtype=torch.float64)  # two batch dims, H=5, W=6
    y, ladj = t(x)
    expected = F.conv2d(x.reshape(8, 3, 5, 6), w.view(3, 3, 1, 1)).view(x.shape)
    torch.testing.assert_close(y, expected)
    assert ladj.shape == (2, 4)
    torch.testing.assert_close(ladj, (30 * torch.linalg.slogdet(w)[1]).expand(2, 4))
    x_back, ladj_inv = t.inverse(y)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(ladj_inv, -ladj)


@pytest.mark.parametrize("lu", [True, False], ids=["lu", "plain"])
def test_conv1x1_starts_orthogonal(lu: bool) -> None:
    torch.manual_seed(0)
    w = T.InvertibleConv1x1(4, lu=lu).double().matrix()
    torch.testing.assert_close(w @ w.T, torch.eye(4, dtype=torch.float64), atol=1e-5, rtol=0)


def test_householder_is_the_product_of_reflections() -> None:
    t = _perturbed(T.Householder(4, reflections=3))
    q = torch.eye(4, dtype=torch.float64)
    for v in t.vectors:  # v_1 is applied first, so it is the rightmost factor
        h = torch.eye(4, dtype=torch.float64) - 2 * torch.outer(v, v) / (v @ v)
        q = h @ q
    torch.testing.assert_close(q @ q.T, torch.eye(4, dtype=torch.float64))
    torch.testing.assert_close(t.matrix(), q)
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    y, ladj = t(x)
    torch.testing.assert_close(y, x @ q.T)
    assert torch.equal(ladj, torch.zeros(3, 2, dtype=torch.float64))
    x_back, ladj_inv = t.inverse(y)
    torch.testing.assert_close(x_back, x)
    assert torch.equal(ladj_inv, torch.zeros(3, 2, dtype=torch.float64))


def test_permutation_applies_the_given_indices() -> None:
    t = T.Permutation(4, permutation=torch.tensor([2, 0, 3, 1]))
    x = torch.tensor([[10.0, 11.0, 12.0, 13.0]])
    y, ladj = t(x)
    assert torch.equal(y, torch.tensor([[12.0, 10.0, 13.0, 11.0]]))
    assert torch.equal(t.inverse(y)[0], x)
    assert ladj.shape == (1,)


def test_permutation_seed_is_reproducible() -> None:
    a = T.Permutation(10, seed=3).permutation
    b = T.Permutation(10, seed=3).permutation
    assert torch.equal(a, b)
    assert torch.equal(a.sort().values, torch.arange(10))


def test_reverse_flips_the_last_dimension() -> None:
    x = torch.arange(6.0).view(2, 3)
    y, ladj = T.Reverse(3)(x)
    assert torch.equal(y, x.flip(-1))
    assert torch.equal(ladj, torch.zeros(2))


@pytest.mark.parametrize(
    "permutation",
    [[0, 0, 1], [0, 1], [0, 1, 2, 3], [1, 2, 3], [-1, 0, 1], [[0, 1, 2]]],
    ids=["duplicate", "short", "long", "out-of-range", "negative", "2-d"],
)
def test_permutation_rejects_a_bad_permutation(permutation: list) -> None:
    with pytest.raises(ValueError, match="Permutation"):
        T.Permutation(3, permutation=permutation)


def test_permutation_rejects_non_integers_and_ambiguous_arguments() -> None:
    with pytest.raises(TypeError, match="integers"):
        T.Permutation(3, permutation=[0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="either"):
        T.Permutation(3, permutation=[0, 1, 2], seed=1)


@pytest.mark.parametrize(
    "t",
    [T.Permutation(3), T.Reverse(3), T.LULinear(3), T.Householder(3)],
    ids=["permutation", "reverse", "lu-linear", "householder"],
)
def test_wrong_feature_count_is_a_value_error(t: T.Transform) -> None:
    with pytest.raises(ValueError, match="got \\(2, 4\\)"):
        t(torch.randn(2, 4))
    with pytest.raises(ValueError, match="got \\(2, 4\\)"):
        t.inverse(torch.randn(2, 4))


def test_conv1x1_rejects_wrong_channels() -> None:
    with pytest.raises(ValueError, match="InvertibleConv1x1"):
        T.InvertibleConv1x1(3)(torch.randn(2, 4, 5, 5))


@pytest.mark.parametrize("features", [0, -2])
def test_sizes_must_be_positive(features: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        T.LULinear(features)
    with pytest.raises(ValueError, match="reflections"):
        T.Householder(3, reflections=features)
