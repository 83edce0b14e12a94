from exactflow import transforms as T

from casekit import Case, unit_interval

CASES = [
    Case("affine", lambda: T.Affine(2)),
    Case("affine-5d", lambda: T.Affine(5), event_shape=(5,)),
    Case("sigmoid", lambda: T.Sigmoid(), sample_y=unit_interval, density=False),
    Case(
        "sigmoid-image",
        lambda: T.Sigmoid(event_ndim=3),
        event_shape=(2, 3, 3),
        sample_y=lambda n: unit_interval(n, (2, 3, 3)),
        density=False,
    ),
    Case("logit", lambda: T.Logit(), sample_x=unit_interval),
    # With a squeeze the domain is a little wider than [0, 1], and the flow normalized on it.
    Case("logit-alpha", lambda: T.Logit(alpha=0.05), sample_x=unit_interval),
]
