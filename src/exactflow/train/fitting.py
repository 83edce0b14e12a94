"""The entry point of training: :func:`fit` and the :class:`FitResult` it returns."""

from __future__ import annotations

import copy
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import checkpoint, registry
from ..data import Standardize
from ..flow import DTYPES
from ..objectives import Objective
from .compiled import CompilePayoff, payoff
from .config import TrainConfig
from .distributed import Launch, gather, rank_seed, setup
from .inputs import Inputs, prepare
from .loop import Run, TrainingWorsenedWarning

__all__ = ["FitResult", "fit"]

logger = logging.getLogger("exactflow.train")


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        model: The trained model with its best weights, in eval mode (with ``standardize`` it
            wraps the flow that was passed in). Also available as :attr:`flow`.
        history: One dict per epoch with the columns of ``metrics.csv``.
        best_val: Best (lowest) validation metric; also :attr:`best_val_nll`.
        best_epoch: The epoch that reached it (1-based; 0 if no epoch ran).
        stopped_early: Whether the patience ran out.
        steps: Minibatch steps taken, skipped ones included.
        metric: The objective's metric name (``"nll"``).
        compile_seconds: Wall time of the first compiled step, compilation included (``None``
            without ``compile``; summed over the processes of a resumed run).
        compile_payoff: Whether compiling paid for itself (:class:`CompilePayoff`: compile
            time, eager and compiled ms/step, the break-even step); ``None`` without ``compile``
            or when the run was too short to time both.

    """

    model: nn.Module
    history: list[dict[str, Any]] = field(default_factory=list)
    best_val: float = math.inf
    best_epoch: int = 0
    stopped_early: bool = False
    steps: int = 0
    metric: str = "nll"
    compile_seconds: float | None = None
    compile_payoff: CompilePayoff | None = None

    @property
    def flow(self) -> nn.Module:
        """The trained model (the name of :attr:`model` for flows)."""
        return self.model

    @property
    def best_val_nll(self) -> float:
        """:attr:`best_val` (the validation NLL for :class:`~exactflow.objectives.NLL`)."""
        return self.best_val


def _check_spec(model: nn.Module, spec: dict) -> None:
    """Raise ``ValueError`` unless ``registry.build(spec)`` has the weights of ``model``."""
    reference = {k: tuple(v.shape) for k, v in registry.build(spec).state_dict().items()}
    actual = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if reference != actual:
        differ = sorted(
            k for k in reference.keys() | actual.keys() if reference.get(k) != actual.get(k)
        )
        raise ValueError(
            f"the spec {spec} builds a model whose weights differ from the model being trained"
            f" (first differences: {differ[:5]}); a checkpoint saved with it could not be loaded"
        )


def fit(
    model: nn.Module,
    objective: Objective,
    data: object = None,
    config: TrainConfig | None = None,
    *,
    val: object = None,
    spec: dict | None = None,
    resume: bool = False,
    progress: bool = True,
) -> FitResult:
    """Train a model by minimizing an objective's mean per-row loss.

    Every epoch takes Adam(W) steps on minibatches (skipping, without an update, any step whose
    loss or gradient norm is non-finite), then averages the objective's validation metric; the
    run stops after ``epochs``/``steps`` or when ``patience`` epochs pass without improvement,
    and the model ends with its best weights. For :class:`~exactflow.objectives.NLL` this is
    maximum likelihood, ``min_θ -(1/B) Σ_b log p_θ(x_b | c_b)``.

    The model is converted to ``config.dtype`` and moved to ``config.device`` in place. A fresh
    run seeds torch's generators with ``config.seed``: the same seed and the same initial model
    give the same history. Files written to ``config.out``: ``last.safetensors`` (full training
    state; ``resume=True`` starts from it), ``best.safetensors`` (best weights), ``metrics.csv``
    (columns :func:`~exactflow.train.logs.columns`) and ``tensorboard/``.

    Under ``torchrun`` (``WORLD_SIZE`` above 1) every process calls ``fit`` alike: the loss is
    wrapped in ``DistributedDataParallel`` (gloo on the CPU, nccl on ``cuda:LOCAL_RANK``),
    ``config.batch_size`` is the global batch, drawn as one process would draw it, of which each
    rank trains on its share, and rank 0 alone writes (:mod:`exactflow.train.distributed`).

    Args:
        model: The model to train (a :class:`~exactflow.Flow` for ``NLL``).
        objective: What to minimize, e.g. ``ef.objectives.NLL()``.
        data: Training data: a tensor ``x (N, *event)``, a pair ``(x, context)``, an
            :class:`exactflow.data.Dataset` (its ``train`` split; ``val`` defaults to its
            ``val`` split), or an :class:`exactflow.data.BatchSource` yielding fresh batches
            every epoch. ``None`` for an objective that draws its own samples. Tensors are
            checked (finite, shape, domain) once, before anything starts.
        config: Run settings (defaults: :class:`TrainConfig`).
        val: Validation data, a tensor or a pair (required when the objective needs data and
            ``data`` is not a ``Dataset``).
        spec: How checkpoints rebuild the model (``{"name": ..., "kwargs": ...}``, see
            :mod:`exactflow.registry`); ``None``: :func:`exactflow.registry.spec_of` the model
            (``None`` for a model of an unregistered class: its checkpoints load only into a
            model built by hand). When resuming, ``None`` keeps the spec saved in the checkpoint.
        resume: Continue from ``config.out/last.safetensors`` (weights, optimizer, scheduler, RNG
            and counters) if it exists; otherwise start afresh. ``lr``, ``weight_decay``,
            ``clip_grad``, ``patience``, ``epochs`` and ``steps`` are the current config's, so a
            finished run can be extended and a diverged one continued with a lower ``lr``.
        progress: Show a progress bar with the live training and validation metric.

    Returns:
        A :class:`FitResult` with the trained model and its history.

    Raises:
        ValueError: Bad data or config, an unavailable device, a spec that does not build this
            model, a checkpoint to resume from that is unreadable or does not match, a bad
            torchrun launch or batches too small to give every process a row.
        NonFiniteLossError: ``max_nonfinite`` consecutive non-finite steps, or a non-finite
            validation metric; the last checkpoint on disk is left as it was.

    Example:
        >>> import torch, exactflow as ef
        >>> from exactflow.train import TrainConfig, fit
        >>> flow = ef.flows.MAF(features=2, transforms=2, hidden=(16,))
        >>> x = 3 + 2 * torch.randn(512, 2)
        >>> config = TrainConfig(epochs=3, batch_size=128, lr=1e-2)
        >>> result = fit(flow, ef.objectives.NLL(), x[:400], config, val=x[400:], progress=False)
        >>> len(result.history), list(result.history[0])[:4]
        (3, ['epoch', 'step', 'train_nll', 'val_nll'])

    """
    config = TrainConfig() if config is None else config
    if not isinstance(objective, Objective):
        raise TypeError(
            "fit(model, objective, data, config, val=...): objective must be an"
            f" exactflow.objectives.Objective such as NLL(), got {type(objective).__name__}"
        )
    if not isinstance(model, nn.Module):
        raise TypeError(f"fit: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"fit: config must be a TrainConfig, got {type(config).__name__}")
    if resume and config.out is None:
        raise ValueError("resume=True needs config.out, the directory holding last.safetensors")
    objective.check_model(model)
    where, device = setup(config.device)
    dtype = DTYPES[config.dtype]
    inputs = prepare(data, val, objective.needs_data, config.batch_size, config.seed, dtype, device)
    if where.distributed:
        _check_alike(config, objective, inputs)
        _check_shares(inputs, config.batch_size, where.world)
    _check_inputs(objective, model, inputs)
    if spec is None:
        spec = registry.spec_of(model)
    model.to(device=device, dtype=dtype)
    if config.standardize:
        if inputs.train is None:
            raise ValueError("standardize=True needs the training data as tensors")
        model = Standardize.fit(inputs.train[0]).prepend(model)
    out = Path(config.out) if config.out is not None else None
    last = best = None
    if resume and _resumable(out / "last.safetensors", where):
        # Loaded into copies: the model is only touched once everything has been checked.
        last = checkpoint.load(out / "last.safetensors", copy.deepcopy(model))
        if (out / "best.safetensors").exists():
            best = checkpoint.load(out / "best.safetensors", copy.deepcopy(model))
        if last.spec is not None:
            spec = last.spec  # keep saving what the run was started with
    elif spec is not None:
        spec = {**spec, "standardize": True} if config.standardize else dict(spec)
    if spec is not None:
        _check_spec(model, spec)
    model.to(device=device, dtype=dtype)

    run = Run(model, objective, inputs, config, spec, where)
    if last is not None:
        run.restore(last, best)
    else:
        torch.manual_seed(rank_seed(config.seed, where.rank))
    if out is not None and where.main:
        out.mkdir(parents=True, exist_ok=True)
    try:
        run.run(progress)
    finally:
        run.replicas = None  # releases DDP and the gradient hooks it put on the model
    worse = run.worsened()
    if worse is not None:
        warnings.warn(worse, TrainingWorsenedWarning, stacklevel=2)
    if run.best_weights is not None:
        model.load_state_dict(run.best_weights)
    p = run.progress
    paid = payoff(p)
    if paid is not None and where.main:
        logger.info(paid.summary())
    return FitResult(
        model=model.eval(),
        history=p.history,
        best_val=p.best_val,
        best_epoch=p.best_epoch,
        stopped_early=p.stopped_early,
        steps=p.step,
        metric=objective.name,
        compile_seconds=p.compile_seconds,
        compile_payoff=paid,
    )


def _check_inputs(objective: Objective, model: nn.Module, inputs: Inputs) -> None:
    """The objective's checks of the data against the model, once, before training."""
    if inputs.train is not None:
        objective.check_data(model, *inputs.train, name="data")
    elif inputs.source is not None:
        x, context = next(inputs.batches(0))
        objective.check_data(model, x, context, name="a batch of the batch source")
    if inputs.val is not None:
        objective.check_data(model, *inputs.val, name="val")


def _check_shares(inputs: Inputs, batch_size: int, world: int) -> None:
    """Refuse batches that some of the ``world`` processes would get no row of."""
    if inputs.source is None:
        return
    if batch_size < world and inputs.train is not None:
        raise ValueError(
            f"batch_size {batch_size} is below the number of processes ({world}): each process"
            " needs at least one row of every batch (batch_size is the global batch)"
        )
    if inputs.train is not None:
        last = len(inputs.train[0]) % batch_size  # a last batch of one row joins the one before
        if 1 < last < world:
            raise ValueError(
                f"the last batch of each epoch has {last} rows ({len(inputs.train[0])} rows in"
                f" batches of {batch_size}), fewer than the {world} processes: each needs at least"
                " one row; change batch_size or the number of processes"
            )


def _check_alike(config: TrainConfig, objective: Objective, inputs: Inputs) -> None:
    """Refuse a launch whose processes were not given the same run (they would stall or drift)."""
    settings = {**config.to_dict(), "out": config.out is not None, "objective": repr(objective)}
    for name, pair in (("data", inputs.train), ("val", inputs.val)):
        settings[name] = None if pair is None else [tuple(t.shape) for t in pair if t is not None]
    settings["batches"] = None if inputs.source is None else len(inputs.source)
    every = gather(settings)
    for rank, other in enumerate(every):
        differ = sorted(k for k in settings if other[k] != every[0][k])
        if differ:
            first = differ[0]
            raise ValueError(
                f"the processes of this torchrun launch train different runs: rank {rank} has"
                f" {first}={other[first]!r}, rank 0 {first}={every[0][first]!r}; every process"
                " must call fit with the same data, objective and config"
            )


def _resumable(path: Path, where: Launch) -> bool:
    """Whether ``path`` exists; with several processes, every one of them must see it."""
    exists = path.exists()
    if not where.distributed:
        return exists
    seen = gather(exists)
    if any(seen) and not all(seen):
        blind = [rank for rank, saw in enumerate(seen) if not saw]
        raise ValueError(
            f"rank(s) {blind} cannot see {path}: resuming under torchrun needs the run folder on"
            " a file system that every node shares"
        )
    return exists
