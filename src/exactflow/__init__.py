"""exactflow: normalizing flows with exact densities.

Example:
    >>> import torch, exactflow as ef
    >>> T = ef.transforms
    >>> flow = ef.Flow(T.Compose([T.Affine(2)]), ef.distributions.StandardNormal(2))
    >>> flow.log_prob(torch.zeros(1, 2)).shape
    torch.Size([1])

"""

from . import checkpoint, data, distributions, flow, flows, nn, train, transforms
from .flow import Flow

__all__ = [
    "Flow",
    "checkpoint",
    "data",
    "distributions",
    "flow",
    "flows",
    "nn",
    "train",
    "transforms",
]
__version__ = "0.1.0"
