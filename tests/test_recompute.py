"""``Recompute``: the memory-saving backward gives the plain transform's gradients, with less saved.

Every check runs in training mode with gradients on, where the wrapped transform's activations
are rebuilt from its output in the backward pass (the conformance suite covers eval mode, where
``Recompute`` is a plain call).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import Tensor

import exactflow as ef
from exactflow import transforms as T
from exactflow.transforms.recompute import saved_bytes

from cases.recompute import glow_steps

IMAGE = (2, 4, 4)
N = 5


def squeeze_level() -> T.Transform:
    return T.Compose([T.Squeeze((1, 4, 4)), glow_steps((4, 2, 2), 2), T.Flatten((4, 2, 2))])


def factor_out_level() -> T.Transform:
    inner = T.Compose([glow_steps((1, 4, 4), 2), T.Flatten((1, 4, 4))])
    return T.Compose([glow_steps(IMAGE, 1, context=3), T.FactorOut(IMAGE, inner, context=3)])


def shared_coupling() -> T.Transform:
    coupling = T.Coupling(T.AffineMap(), "checkerboard", hidden=4, shape=IMAGE)
    return T.Compose([coupling, T.InvertibleConv1x1(2), coupling])  # one module, twice


# (id, builder, event shape, context width)
MODELS: list[tuple[str, Callable[[], T.Transform], tuple[int, ...], int]] = [
    (
        "coupling-checkerboard-context",
        lambda: T.Coupling(T.AffineMap(), "checkerboard", hidden=4, context=3, shape=IMAGE),
        IMAGE,
        3,
    ),
    (
        "spline-coupling",
        lambda: T.Coupling(
            T.RationalQuadraticSpline(bins=4, bound=3.0), "channel", hidden=4, shape=IMAGE
        ),
        IMAGE,
        0,
    ),
    ("glow-steps-context", lambda: glow_steps(IMAGE, 3, context=2), IMAGE, 2),
    ("squeeze-level", squeeze_level, (1, 4, 4), 0),
    ("factor-out-level-context", factor_out_level, IMAGE, 3),
    ("shared-parameters", shared_coupling, IMAGE, 0),
]
ids = [m[0] for m in MODELS]


def pair(make: Callable[[], T.Transform], dtype: torch.dtype) -> tuple[T.Transform, T.Transform]:
    """The plain transform and a ``Recompute`` of an identical copy, perturbed off identity."""
    torch.manual_seed(0)
    plain = make().to(dtype)
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(0.3 * torch.randn_like(p))
    twin = make().to(dtype)
    twin.load_state_dict(plain.state_dict())
    return plain.train(), T.Recompute(twin).train()


def gradients(
    t: T.Transform, x: Tensor, context: Tensor | None
) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """Output, ``ladj`` and the gradients of a loss using both, for ``x``, context, parameters."""
    x = x.clone().requires_grad_()
    c = None if context is None else context.clone().requires_grad_()
    y, ladj = t(x, c)
    (0.5 * y.square().sum() - 3.0 * ladj.sum() + y.sin().sum()).backward()
    grads = {"x": x.grad}
    if c is not None:
        grads["context"] = c.grad
    # Recompute's parameters are named "transform.<name>": strip the prefix to compare.
    for name, p in t.named_parameters():
        grads[name.removeprefix("transform.")] = p.grad
    return y.detach(), ladj.detach(), grads


def close(actual: Tensor, expected: Tensor, name: str, rtol: float, atol: float) -> None:
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def data(shape: tuple[int, ...], context: int, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
    g = torch.Generator().manual_seed(1)
    x = (1.0 + 2.0 * torch.randn((N, *shape), generator=g)).to(dtype)
    c = None if not context else torch.randn(N, context, generator=g).to(dtype)
    return x, c


def compare(
    make: Callable[[], T.Transform],
    shape: tuple[int, ...],
    context: int,
    dtype: torch.dtype,
    rtol: float,
    atol: float,
) -> None:
    plain, wrapped = pair(make, dtype)
    x, c = data(shape, context, dtype)
    y0, ladj0, expected = gradients(plain, x, c)
    y1, ladj1, actual = gradients(wrapped, x, c)
    # The same computation, though kernels may round differently without autograd recording.
    torch.testing.assert_close(y1, y0, rtol=rtol, atol=atol)
    torch.testing.assert_close(ladj1, ladj0, rtol=rtol, atol=atol)
    assert actual.keys() == expected.keys()
    for name, grad in expected.items():
        assert grad is not None, f"{name} got no gradient from the plain transform"
        assert actual[name] is not None, f"{name} got no gradient through Recompute"
        close(actual[name], grad, name, rtol, atol)


@pytest.mark.parametrize(("name", "make", "shape", "context"), MODELS, ids=ids)
def test_gradients_equal_the_plain_transform_float64(name, make, shape, context) -> None:
    # Gradients reach ~1e5 here (perturbed scales): 1e-10 absolute plus 1e-10 relative.
    compare(make, shape, context, torch.float64, rtol=1e-10, atol=1e-10)


def test_gradients_in_float32_within_the_reconstruction_error() -> None:
    # Four perturbed Glow steps rebuilt from one output in float32: the round trip is off by
    # ~2e-4 and each gradient by ~2e-5 of its norm (measured); allowed: 1e-3 of its norm.
    plain, wrapped = pair(lambda: glow_steps(IMAGE, 4, context=2), torch.float32)
    x, c = data(IMAGE, 2, torch.float32)
    _, _, expected = gradients(plain, x, c)
    _, _, actual = gradients(wrapped, x, c)
    for name, grad in expected.items():
        error = (actual[name] - grad).norm() / grad.norm().clamp_min(1e-30)
        assert error < 1e-3, f"{name}: relative error {error:.2e}"


def test_the_backward_really_rebuilds_the_input() -> None:
    """A deliberately wrong inverse shows up in the gradients: the backward does use it."""

    class WrongInverse(T.Transform):
        def __init__(self) -> None:
            super().__init__()
            self.log_scale = torch.nn.Parameter(torch.tensor(0.5))

        def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
            return x.square() * self.log_scale.exp(), x.sum(-1) * 0 + self.log_scale

        def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
            return y + 1.0, -self.log_scale.expand(y.shape[:-1])  # not the inverse

    x = torch.rand(4, 3, dtype=torch.float64) + 0.5
    _, _, plain = gradients(WrongInverse().double().train(), x, None)
    _, _, rebuilt = gradients(T.Recompute(WrongInverse().double()).train(), x, None)
    assert not torch.allclose(plain["x"], rebuilt["x"])


def test_saves_fewer_bytes_for_backward() -> None:
    torch.manual_seed(0)
    plain = glow_steps((4, 8, 8), 4).train()
    wrapped = T.Recompute(glow_steps((4, 8, 8), 4)).train()
    x = torch.randn(16, 4, 8, 8)
    for t in (plain, wrapped):  # initialize ActNorm outside the measurement
        t(x)
    without = saved_bytes(lambda: plain(x)[0].sum())
    with_recompute = saved_bytes(lambda: wrapped(x)[0].sum())
    parameters = sum(p.numel() * p.element_size() for p in plain.parameters())
    output = x.numel() * x.element_size()
    # The wrapped graph holds the output and the parameters (as inputs of the rebuilt pass).
    assert with_recompute <= output + parameters
    assert with_recompute < without / 4, (with_recompute, without)


def test_saved_bytes_counts_a_storage_once() -> None:
    x = torch.randn(100, 10, requires_grad=True)
    assert saved_bytes(lambda: (x * x).sum()) == 4000  # x saved twice, one storage
    assert saved_bytes(lambda: x.exp().exp().sum()) == 8000  # two outputs saved


def test_actnorm_initializes_on_the_real_input() -> None:
    plain, wrapped = pair(lambda: glow_steps(IMAGE, 2), torch.float64)
    actnorms = [m for m in wrapped.modules() if isinstance(m, T.ActNorm)]
    assert not any(bool(m.initialized) for m in actnorms)
    x = 3.0 + 2.0 * torch.randn(32, *IMAGE, dtype=torch.float64)
    y0, _, expected = gradients(plain, x, None)  # the first training step initializes
    y1, _, actual = gradients(wrapped, x, None)
    assert all(bool(m.initialized) for m in actnorms)
    # The same statistics as the plain step's, from the real batch (not from a rebuilt one).
    for name, value in plain.state_dict().items():
        close(wrapped.transform.state_dict()[name], value, name, 0, 0)
    standardized, _ = actnorms[0](x)
    torch.testing.assert_close(standardized.mean((0, 2, 3)), torch.zeros(2, dtype=x.dtype))
    torch.testing.assert_close(y1, y0, rtol=0, atol=0)
    for name, grad in expected.items():
        close(actual[name], grad, name, 1e-10, 1e-10)


@pytest.mark.parametrize(
    "make",
    [
        lambda: glow_steps(IMAGE, 2),
        lambda: T.Recompute(glow_steps(IMAGE, 1)),  # nested
        lambda: T.Inverse(glow_steps(IMAGE, 1)),  # a child named "transform" of its own
        lambda: T.Compose([T.Recompute(glow_steps(IMAGE, 1)), glow_steps(IMAGE, 1)]),
    ],
    ids=["compose", "nested", "inverse", "inside-compose"],
)
def test_the_weights_file_is_the_wrapped_transforms(make) -> None:
    torch.manual_seed(0)
    plain = make()
    with torch.no_grad():
        for p in plain.parameters():
            p.add_(torch.randn_like(p))
    wrapped = T.Recompute(make())
    assert list(wrapped.state_dict()) == list(plain.state_dict())
    wrapped.load_state_dict(plain.state_dict())  # strict: every key matched
    for key, value in plain.state_dict().items():
        assert torch.equal(wrapped.state_dict()[key], value), key
    fresh = make()
    fresh.load_state_dict(wrapped.state_dict())
    x = torch.randn(3, *IMAGE)
    assert torch.equal(fresh.eval()(x)[0], plain.eval()(x)[0])


def test_estimated_log_determinant_is_refused() -> None:
    class Estimated(T.Transform):
        exact_ladj = False

    with pytest.raises(ValueError, match="exact_ladj=False"):
        T.Recompute(Estimated())
    with pytest.raises(ValueError, match="exact_ladj=False"):
        T.Recompute(T.Compose([T.ActNorm(2), Estimated()]))


def test_a_step_without_inverse_says_so_in_the_backward_pass() -> None:
    class NoInverse(T.Transform):
        def __init__(self) -> None:
            super().__init__()
            self.shift = torch.nn.Parameter(torch.zeros(2))

        def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
            return x + self.shift, x.new_zeros(x.shape[:-1])

    y, _ = T.Recompute(T.Compose([T.ActNorm(2), NoInverse()])).train()(torch.randn(4, 2))
    with pytest.raises(NotImplementedError, match="NoInverse has no inverse"):
        y.sum().backward()


def test_batchnorm_is_refused() -> None:
    with pytest.raises(ValueError, match="BatchNorm"):
        T.Recompute(T.Compose([T.ActNorm(2), T.BatchNorm(2)]))


def test_a_non_transform_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="expected a Transform, got Linear"):
        T.Recompute(torch.nn.Linear(2, 2))


def test_plain_call_in_eval_mode_without_grad_and_inverse() -> None:
    t = T.Recompute(glow_steps(IMAGE, 1)).train()
    x = torch.randn(N, *IMAGE)
    assert type(t(x)[0].grad_fn).__name__ == "_RecomputedBackward"
    with torch.no_grad():
        assert t(x)[0].grad_fn is None
    assert type(t.inverse(x)[0].grad_fn).__name__ != "_RecomputedBackward"
    t.eval()
    assert type(t(x)[0].grad_fn).__name__ != "_RecomputedBackward"


def test_plain_call_under_torch_func() -> None:
    # A torch.func transform is a tracer: Recompute steps aside and its gradients are plain.
    plain, wrapped = pair(lambda: glow_steps(IMAGE, 1), torch.float64)
    x = torch.randn(N, *IMAGE, dtype=torch.float64)
    for t in (plain, wrapped):
        t(x)  # initialize ActNorm outside the transform

    def loss(t: T.Transform) -> Callable[[Tensor], Tensor]:
        return lambda x: t(x)[1].sum() + t(x)[0].square().sum()

    torch.testing.assert_close(torch.func.grad(loss(wrapped))(x), torch.func.grad(loss(plain))(x))


def test_context_broadcast_over_more_batch_dimensions() -> None:
    make = lambda: T.Coupling(T.AffineMap(), "channel", hidden=4, context=3, shape=IMAGE)  # noqa: E731
    plain, wrapped = pair(make, torch.float64)
    x = torch.randn(N, *IMAGE, dtype=torch.float64)
    c = torch.randn(2, N, 3, dtype=torch.float64)  # (S, N, K): y is (S, N, *IMAGE)
    _, _, expected = gradients(plain, x, c)
    y, _, actual = gradients(wrapped, x, c)
    assert y.shape == (2, N, *IMAGE)
    for name, grad in expected.items():
        close(actual[name], grad, name, 1e-10, 1e-10)


def test_flow_nll_gradients_and_delegated_attributes() -> None:
    level = factor_out_level
    plain, wrapped = pair(level, torch.float64)
    assert wrapped.event_shape == plain.event_shape == torch.Size(IMAGE)
    assert wrapped.event_ndim == 3 and wrapped.event_ndim_out == 1
    assert wrapped.forward_shape(IMAGE) == plain.forward_shape(IMAGE)
    assert wrapped.inverse_shape((32,)) == torch.Size(IMAGE)
    assert wrapped.context == 3 and wrapped.exact_ladj
    base = ef.distributions.StandardNormal(32).double()
    x, c = data(IMAGE, 3, torch.float64)
    losses = []
    for t in (plain, wrapped):
        flow = ef.Flow(t, base)
        loss = -flow.log_prob(x, c).mean()
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=0, atol=0)
    for (name, p), q in zip(plain.named_parameters(), wrapped.parameters(), strict=True):
        close(q.grad, p.grad, name, 1e-10, 1e-10)
