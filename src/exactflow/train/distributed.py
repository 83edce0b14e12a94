"""Training on several processes launched by ``torchrun``: ranks, the process group, sharding.

``torchrun`` starts one process per device and tells each its place through the environment:
``WORLD_SIZE`` processes in all, this one's global ``RANK`` and its ``LOCAL_RANK`` on its node.
:func:`launch` reads them; a plain ``python`` process is rank 0 of 1, and
:func:`exactflow.train.fit` then trains exactly as it does without this module. With more
than one process :func:`setup` joins the process group (gloo on the CPU, nccl on CUDA with device
``cuda:LOCAL_RANK``) and the trainer:

* wraps the objective's loss in :class:`torch.nn.parallel.DistributedDataParallel`
  (:class:`Replicas`), so gradients are all-reduced during the backward pass;
* draws every global batch as one process would (same seed, same permutation, same noise) and
  gives rank ``r`` its contiguous share (:meth:`~exactflow.train.inputs.Inputs.shards`); each
  rank's loss is ``world · Σ_{rows of r} loss / B``, so the averaged gradient is the gradient of
  the mean over the whole batch of ``B`` rows, even when ``B`` does not divide evenly;
* sums validation metrics over the ranks, so every rank takes the same early-stopping decisions;
* writes files from rank 0 only.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..objectives import Objective
from ..transforms.normalization import ActNorm
from .config import resolve_device

__all__ = [
    "Launch",
    "Replicas",
    "all_sum",
    "finish",
    "first_pass",
    "gather",
    "launch",
    "rank_seed",
    "setup",
]


@dataclass(frozen=True)
class Launch:
    """Where this process stands among the processes of a run.

    Attributes:
        rank: This process's global rank, ``0 <= rank < world``.
        world: Number of processes.
        local_rank: Its rank on its own node (its CUDA device index).

    Example:
        >>> Launch().distributed, Launch(rank=1, world=2).main
        (False, False)

    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """Whether more than one process trains."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """Whether this process is rank 0, the one that writes files."""
        return self.rank == 0


def _integer(environ: Mapping[str, str], name: str, lowest: int) -> int:
    text = environ.get(name)
    if text is None:
        raise ValueError(
            f"torchrun launch: WORLD_SIZE is set but {name} is not; start the processes with"
            " torchrun (or set WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT)"
        )
    try:
        value = int(text)
    except ValueError:
        value = lowest - 1
    if value < lowest:
        raise ValueError(f"torchrun launch: {name} must be an integer >= {lowest}, got {text!r}")
    return value


def launch(environ: Mapping[str, str] | None = None) -> Launch:
    """The place of this process, read from torchrun's ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``.

    Without ``WORLD_SIZE`` the process group already joined (if any) says it; otherwise the
    process is alone. ``ValueError`` for an inconsistent environment.

    Example:
        >>> launch({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
        Launch(rank=2, world=4, local_rank=0)
        >>> launch({})
        Launch(rank=0, world=1, local_rank=0)

    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        if environ is None and dist.is_available() and dist.is_initialized():
            rank = dist.get_rank()
            return Launch(rank, dist.get_world_size(), int(env.get("LOCAL_RANK", rank)))
        return Launch()
    world = _integer(env, "WORLD_SIZE", 1)
    rank = _integer(env, "RANK", 0)
    local_rank = _integer(env, "LOCAL_RANK", 0)
    if rank >= world:
        raise ValueError(f"torchrun launch: RANK must be below WORLD_SIZE={world}, got {rank}")
    return Launch(rank, world, local_rank)


def setup(device: str) -> tuple[Launch, torch.device]:
    """The place and device of this process; joins the process group when there are several.

    Under torchrun, ``device="cuda"`` means ``cuda:LOCAL_RANK`` (one device per process) and the
    backend is nccl; on the CPU it is gloo. A process group joined before (by the caller) is
    used as it is.

    Raises:
        ValueError: An inconsistent launch, ``cuda:N`` under torchrun, an unavailable device, or
            a process group that cannot be joined.

    """
    where = launch()
    if not where.distributed:
        return where, resolve_device(device)
    resolve_device(device)  # the name and availability, in the usual words
    if device.startswith("cuda:"):
        raise ValueError(
            f"device {device!r} under torchrun: each process uses cuda:LOCAL_RANK; pass"
            " device='cuda'"
        )
    target = (
        resolve_device(f"cuda:{where.local_rank}") if device == "cuda" else torch.device(device)
    )
    if target.type == "cuda":
        torch.cuda.set_device(target)
    if not dist.is_initialized():
        backend = "nccl" if target.type == "cuda" else "gloo"
        try:
            dist.init_process_group(backend, device_id=target if target.type == "cuda" else None)
        except (ValueError, RuntimeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
            raise ValueError(
                f"rank {where.rank} of {where.world} cannot join the {backend} process group:"
                f" {first}"
            ) from None
    return where, target


def finish() -> None:
    """End a distributed command: wait for every rank, then leave the process group."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of torch's generator on ``rank``: ``seed`` itself on rank 0.

    The other ranks get seeds derived from ``(seed, rank)``, so their random draws (samples of a
    variational objective, noise of a stochastic estimator) differ from rank 0's.

    Example:
        >>> rank_seed(7, 0), rank_seed(7, 1) == rank_seed(7, 1) != 7
        (7, True)

    """
    if rank == 0:
        return seed
    key = hashlib.blake2b(f"{seed}:rank:{rank}".encode(), digest_size=8).digest()
    return int.from_bytes(key, "little") >> 1


def gather(value: Any) -> list[Any]:
    """``value`` of every rank, in rank order (a host-side exchange: call it outside steps)."""
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def all_sum(value: Tensor) -> Tensor:
    """``value`` summed over the ranks, in place (on the device: no host synchronization)."""
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value


class _Loss(nn.Module):
    """An objective's per-row loss as a module's ``forward``, for DDP to see the computation.

    DDP all-reduces the gradients of the work done inside its wrapped module's ``forward``; the
    objectives call ``model.log_prob`` (or ``rsample_and_log_prob``, ``log_weights``) rather than
    ``model(...)``, so the objective itself becomes the forward pass.
    """

    def __init__(self, model: nn.Module, objective: Objective) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, x: Tensor | None, context: Tensor | None) -> Tensor:
        return self.objective.loss(self.model, x, context)


class Replicas:
    """The loss of one training step across the ranks, with gradients all-reduced by DDP.

    With ``unused`` (:func:`first_pass` found a trainable parameter the loss does not reach: a
    conditional branch, a base parameter the objective never reads) DDP is told
    ``find_unused_parameters=True``, so such parameters are marked ready instead of stalling
    the all-reduce.

    Args:
        model: The model (already on ``device``); DDP broadcasts rank 0's weights at creation.
        objective: This rank's objective (:meth:`~exactflow.objectives.Objective.shard`).
        where: This process's place.
        device: Its device.
        unused: Whether some trainable parameter gets no gradient from the loss.

    """

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        where: Launch,
        device: torch.device,
        unused: bool,
    ) -> None:
        self.where = where
        ids = [device] if device.type == "cuda" else None
        self.ddp = nn.parallel.DistributedDataParallel(
            _Loss(model, objective), device_ids=ids, find_unused_parameters=unused
        )
        self.rows: int | None = None  # rows of a step summed over the ranks, without data

    def loss(self, x: Tensor | None, context: Tensor | None, rows: int | None) -> Tensor:
        """The part of the global mean loss on this rank: ``Σ_{its rows} loss / rows``.

        ``rows`` is the global batch's row count; ``None`` for an objective drawing its own
        samples, whose total is exchanged once, at the first step.
        """
        losses = self.ddp(x, context)
        if rows is None:
            if self.rows is None:
                self.rows = sum(gather(len(losses)))
            rows = self.rows
        return losses.sum() / rows

    def backward(self, part: Tensor) -> Tensor:
        """Backpropagate ``world · part`` and return the global mean loss (all-reduced).

        DDP averages the ranks' gradients, so the gradient of ``world · part`` averaged is the
        gradient of the sum of the parts: the global mean loss.
        """
        (part * self.where.world).backward()
        return all_sum(part.detach().clone())


def first_pass(
    model: nn.Module,
    loss: Callable[[nn.Module, Tensor | None, Tensor | None], Tensor],
    x: Tensor | None,
    context: Tensor | None,
    where: Launch,
) -> bool:
    """Settle what DDP needs before it wraps the model; whether some parameter gets no gradient.

    * Data-dependent initialization (:class:`~exactflow.transforms.ActNorm`): one process
      initializes each ActNorm on the first batch it trains on, but a rank trains on its share
      of it only, and the ranks' initializations would differ (DDP never re-synchronizes
      parameters). So every rank first runs the model without gradients on the whole batch
      ``x``: the ActNorms initialize as one process's would.
    * Which trainable parameters the loss does not reach, from a backward pass on this rank's
      share of ``x`` (``find_unused_parameters`` costs a traversal of the graph at every step,
      so DDP is asked for it only when needed).

    Every other weight, buffer (running averages) and the random generators are then put back
    as they were, so the first step starts from the state it would start from without this pass.

    Args:
        model: The model, in training mode.
        loss: ``loss(model, x, context)``, the per-row loss (this rank's objective).
        x: The whole first batch (``None`` for an objective without data).
        context: Its context, or ``None``.
        where: This process's place.

    """
    actnorms = {
        name for name, m in model.named_modules() if isinstance(m, ActNorm) and not m.initialized
    }
    kept = tuple(f"{name}." if name else "" for name in actnorms)
    saved = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith(kept)}
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    if actnorms and x is not None:
        with torch.no_grad():
            loss(model, x, context)
    if x is not None:
        x = x.tensor_split(where.world)[where.rank]
        context = None if context is None else context.tensor_split(where.world)[where.rank]
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss(model, x, context).sum(), params, allow_unused=True)
    with torch.no_grad():
        state = model.state_dict()
        for key, value in saved.items():
            state[key].copy_(value)
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)
    return any(g is None for g in grads)
