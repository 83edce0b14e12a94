from exactflow import transforms as T

from casekit import Case, unit_interval

CASES = [
    Case("compose", lambda: T.Compose([T.Affine(2), T.Affine(2)])),
    Case("inverse-affine", lambda: T.Inverse(T.Affine(3)), event_shape=(3,)),
    Case(
        "inverse-sigmoid",
        lambda: T.Inverse(T.Sigmoid()),
        sample_x=unit_interval,
        density=False,
    ),
]
