import torch

from exactflow import transforms as T

from casekit import Case


def shifted(shape: tuple[int, ...]):
    """Data away from zero mean and unit variance (so the warm-up moves the statistics), yet
    narrow enough for the integration window of the flow tests."""

    def sample(n: int) -> torch.Tensor:
        return 1.0 + 2.0 * torch.randn((n, *shape), dtype=torch.float64)

    return sample


CASES = [
    Case("actnorm-2", lambda: T.ActNorm(2), sample_x=shifted((2,)), warmup=True),
    Case(
        "actnorm-5",
        lambda: T.ActNorm(5),
        event_shape=(5,),
        sample_x=shifted((5,)),
        warmup=True,
    ),
    Case("actnorm-3-uninitialized", lambda: T.ActNorm(3), event_shape=(3,)),
    Case(
        "actnorm-image",
        lambda: T.ActNorm(3, event_ndim=3),
        event_shape=(3, 4, 4),
        sample_x=shifted((3, 4, 4)),
        warmup=True,
    ),
    Case("batchnorm-2", lambda: T.BatchNorm(2), sample_x=shifted((2,)), warmup=True),
    Case(
        "batchnorm-4-momentum1",
        lambda: T.BatchNorm(4, momentum=1.0),
        event_shape=(4,),
        sample_x=shifted((4,)),
        warmup=True,
    ),
    Case(
        "batchnorm-image",
        lambda: T.BatchNorm(2, event_ndim=3),
        event_shape=(2, 3, 3),
        sample_x=shifted((2, 3, 3)),
        warmup=True,
    ),
]
