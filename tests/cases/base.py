"""Cases of the protocol itself: composition, inversion, shape changes, and test-only toys.

The toys exercise the suite's capability flags before any public family needs them: an
estimated log-determinant (``exact_ladj=False``) and a transform without an inverse.
"""

import torch
from torch import Tensor, nn

from exactflow import transforms as T
from exactflow.numerics import hutchinson_trace, rademacher

from casekit import Case, unit_interval

IMAGE = (2, 4, 4)


class HutchinsonExpLinear(T.Transform):
    """Toy estimator: ``y = exp(A) x``, ``log|det J| = tr(A)``, estimated in training mode.

    Train mode returns Hutchinson's ``vᵀ A v`` with one probe per event (unbiased for
    ``probe="rademacher"``; ``probe="uniform"`` draws ``v ~ U(-1, 1)``, ``E[v vᵀ] = I/3``, a
    deliberately biased estimator). Eval mode returns ``tr(A)`` exactly.
    """

    exact_ladj = False

    def __init__(self, features: int, probe: str = "rademacher") -> None:
        super().__init__()
        self.log_matrix = nn.Parameter(0.3 * torch.randn(features, features))
        self.probe = probe

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        a = self.log_matrix
        y = x @ torch.linalg.matrix_exp(a).T
        if not self.training:
            return y, torch.trace(a).expand(x.shape[:-1])
        v = rademacher(x) if self.probe == "rademacher" else 2 * torch.rand_like(x) - 1
        return y, hutchinson_trace(lambda v: v @ a.T, v)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        a = self.log_matrix
        return y @ torch.linalg.matrix_exp(-a).T, (-torch.trace(a)).expand(y.shape[:-1])


def hutchinson_exp_linear(features: int, probe: str = "rademacher") -> HutchinsonExpLinear:
    return HutchinsonExpLinear(features, probe)


class ForwardOnly(T.Transform):
    """Toy without an inverse: ``y = x + σ(a) tanh(x)``, ``log|dy/dx| = log(1 + σ(a) sech²x)``."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        s = torch.sigmoid(self.a)
        slope = 1 + s * (1 - torch.tanh(x).square())
        return x + s * torch.tanh(x), slope.log().sum(-1)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(
            "ForwardOnly has no closed-form inverse; use it in the data -> base direction only"
        )


CASES = [
    Case("compose", lambda: T.Compose([T.Affine(2), T.Affine(2)])),
    Case("inverse-affine", lambda: T.Inverse(T.Affine(3)), event_shape=(3,)),
    Case(
        "inverse-sigmoid",
        lambda: T.Inverse(T.Sigmoid()),
        sample_x=unit_interval,
        density=False,
    ),
    Case("reshape", lambda: T.Reshape((2, 3), (3, 2)), event_shape=(2, 3), out_shape=(3, 2)),
    Case("flatten-image", lambda: T.Flatten(IMAGE), event_shape=IMAGE, out_shape=(32,)),
    Case(
        "inverse-flatten",
        lambda: T.Inverse(T.Flatten((3, 2))),
        event_shape=(6,),
        out_shape=(3, 2),
    ),
    Case(
        "compose-image-to-vector",
        lambda: T.Compose(
            [
                T.ActNorm(2, event_ndim=3),
                T.InvertibleConv1x1(2),
                T.Coupling(T.AffineMap(), "checkerboard", shape=IMAGE, hidden=(4,)),
                T.Coupling(T.AffineMap(), "channel", shape=IMAGE, hidden=(4,)),
                T.Reshape(IMAGE, (8, 2, 2)),
                T.Flatten((8, 2, 2)),
                T.Affine(32),
                T.Coupling(T.AffineMap(), "alternating", features=32, hidden=(8,)),
            ]
        ),
        event_shape=IMAGE,
        out_shape=(32,),
        covers=("Reshape", "Flatten"),
    ),
    Case(
        "compose-mixed-ranks",
        lambda: T.Compose([T.Sigmoid(), T.Logit(), T.ActNorm(3, event_ndim=2), T.Affine(4)]),
        event_shape=(3, 4),
    ),
    Case(
        "toy-hutchinson-estimator",
        lambda: hutchinson_exp_linear(3),
        event_shape=(3,),
        estimated=True,
    ),
    Case("toy-no-inverse", lambda: ForwardOnly(), event_shape=(3,), inverse=False),
]
