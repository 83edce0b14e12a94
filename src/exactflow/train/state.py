"""The state of a training run: counters, random generators, and exact resumption.

Everything a run needs to continue is saved in ``last.safetensors``: the counters of
:class:`Progress`, the optimizer and scheduler states, and the CPU and CUDA random generators
(CUDA only when it was initialized). Each epoch's batches are a pure function of the seed and the
epoch number (:class:`exactflow.data.BatchSource`), so a resumed run replays the epoch it was
interrupted in and produces the loss history the uninterrupted run would have produced.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import RESUME_FIXED, TrainConfig

__all__ = ["Progress", "adopt_config", "restore_rng", "rng_state"]


@dataclass
class Progress:
    """The counters of a run; all of them are saved in every checkpoint.

    Attributes:
        epoch: Completed epochs.
        step: Minibatch steps taken, skipped ones included.
        batch: Steps taken in the current epoch.
        loss_sum: Sum of the current epoch's finite mean losses.
        loss_count: Number of those losses.
        skipped: Skipped (non-finite) steps in the current epoch.
        consecutive: Consecutive non-finite steps.
        best_val: Best validation metric so far.
        best_epoch: The epoch that reached it (0: none yet).
        bad_epochs: Epochs since the last improvement.
        elapsed: Seconds of training so far.
        stopped_early: Whether the patience ran out.
        compile_seconds: Wall time of the first compiled step of each process that ran one,
            compilation included (``None`` without compilation).
        compiles: Processes that ran compiled steps (each compiled the step afresh).
        eager_steps: Timed eager steps of a compiled run's calibration
            (:mod:`exactflow.train.compiled`); ``eager_seconds``: their wall time.
        compiled_steps: Compiled steps after each process's first; ``compiled_seconds``: their
            wall time.
        start_val: Validation metric of the model before its first step (``None``: not measured,
            as in runs saved before it was kept).
        history: One row per epoch (the columns of ``metrics.csv``).

    """

    epoch: int = 0
    step: int = 0
    batch: int = 0
    loss_sum: float = 0.0
    loss_count: int = 0
    skipped: int = 0
    consecutive: int = 0
    best_val: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    elapsed: float = 0.0
    stopped_early: bool = False
    compile_seconds: float | None = None
    compiles: int = 0
    eager_steps: int = 0
    eager_seconds: float = 0.0
    compiled_steps: int = 0
    compiled_seconds: float = 0.0
    start_val: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "batch": self.batch,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "skipped": self.skipped,
            "consecutive_nonfinite": self.consecutive,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "elapsed": self.elapsed,
            "stopped_early": self.stopped_early,
            "compile_seconds": self.compile_seconds,
            "compile_timing": [
                self.compiles,
                self.eager_steps,
                self.eager_seconds,
                self.compiled_steps,
                self.compiled_seconds,
            ],
            "start_val": self.start_val,
            "history": self.history,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Progress:
        """Read the counters saved by :meth:`to_state` (``KeyError``/``TypeError`` if absent)."""
        best = state["best_val"] if "best_val" in state else state["best_val_nll"]  # v1 name
        compiled = state.get("compile_seconds")
        start = state.get("start_val")
        timing = state.get("compile_timing", [0, 0, 0.0, 0, 0.0])  # absent before it was kept
        return cls(
            epoch=int(state["epoch"]),
            step=int(state["step"]),
            batch=int(state["batch"]),
            loss_sum=float(state["loss_sum"]),
            loss_count=int(state["loss_count"]),
            skipped=int(state["skipped"]),
            consecutive=int(state["consecutive_nonfinite"]),
            best_val=float(best),
            best_epoch=int(state["best_epoch"]),
            bad_epochs=int(state["bad_epochs"]),
            elapsed=float(state["elapsed"]),
            stopped_early=bool(state["stopped_early"]),
            compile_seconds=None if compiled is None else float(compiled),
            compiles=int(timing[0]),
            eager_steps=int(timing[1]),
            eager_seconds=float(timing[2]),
            compiled_steps=int(timing[3]),
            compiled_seconds=float(timing[4]),
            start_val=None if start is None else float(start),
            history=[dict(row) for row in state["history"]],
        )


def rng_state() -> dict[str, Any]:
    """The CPU generator's state, and every CUDA generator's when CUDA was initialized."""
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: object, path: Path) -> None:
    """Set the generators saved by :func:`rng_state` (CUDA ones only where CUDA is present)."""
    cpu = state.get("cpu") if isinstance(state, dict) else None
    cuda = state.get("cuda") if isinstance(state, dict) else None
    states = [cpu, *(cuda if isinstance(cuda, list) else [])]
    if not all(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in states) or (
        cuda is not None and not isinstance(cuda, list)
    ):
        raise ValueError(f"cannot resume from {path}: its random generator state is malformed")
    try:
        torch.set_rng_state(cpu)
    except RuntimeError:
        raise ValueError(
            f"cannot resume from {path}: its random generator state is malformed"
        ) from None
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def adopt_config(
    path: Path,
    saved: dict[str, Any],
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
) -> None:
    """Check that a resumed run may continue under ``config``, and make its changes take effect.

    The settings in :data:`~exactflow.train.config.RESUME_FIXED` must not change. A new ``lr``
    rescales the current learning rate (and the cosine schedule's base) by ``new / saved``, so a
    schedule continues from where it was, at the new level; ``weight_decay`` is set; the other
    settings are read from ``config`` as the run goes.
    """
    try:
        old_lr = float(saved["lr"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"cannot resume from {path}: its saved config is malformed") from None
    differ = {k: (saved.get(k), getattr(config, k)) for k in RESUME_FIXED}
    differ = {k: v for k, v in differ.items() if v[0] != v[1]}
    if differ:
        changes = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in differ.items())
        raise ValueError(
            f"cannot resume {path}: {changes} changed; these must stay the same (lr,"
            " weight_decay, clip_grad, patience, epochs and steps may change), or start a new run"
        )
    if config.lr != old_lr:
        factor = config.lr / old_lr
        for group in optimizer.param_groups:  # new values: a tensor lr may be shared
            group["lr"] = group["lr"] * factor
            if "initial_lr" in group:
                group["initial_lr"] = group["initial_lr"] * factor
        if isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler):
            scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
            scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["weight_decay"] = config.weight_decay
