"""The compiled training step, and whether compiling it paid for itself.

With ``TrainConfig.compile`` the three parts of a step run under ``torch.compile``: the loss
(its forward and, through AOTAutograd, its backward), the gradient-norm clipping with the
finiteness flag, and the optimizer's update (compiled as torch documents for optimizers, with a
tensor learning rate so that the schedule does not recompile it). The host synchronization
between them, which decides whether the optimizer steps, stays the step's only one. Everything
compiles on the CPU with torch 2.13; the compiled Adam(W) computes its bias corrections
``1 - β^t`` from the optimizer's float32 step counter where eager Adam reads it as a Python float,
so a compiled run agrees with an eager one to about 1e-7 relative, float64 runs included.

Whether compiling paid is measured, not guessed: the first :data:`CALIBRATION` steps of a run
run eagerly and are timed (the first of them, which warms caches up, is not counted), then
every compiled step is timed. With ``e`` and ``c`` the eager and compiled seconds per step and
``s`` the compile overhead (the steps that compiled minus ``c`` each), compiling pays
after ``s / (e - c)`` steps, and never when ``c >= e``. The clock is ``time.perf_counter`` read
around each step: the step's own host synchronization keeps it honest (on an accelerator the
update's kernels finish inside the next step's), and timing adds no synchronization.

Graphs are compiled for static shapes (``dynamic=False``): a batch of another size (the last one
of an epoch) gets a graph of its own, so a resumed run runs the kernels the uninterrupted run
ran, and resumption stays exact.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from .config import TrainConfig
from .state import Progress

__all__ = ["CALIBRATION", "CompilePayoff", "StepParts", "make_optimizer", "payoff", "tensor_lr"]

logger = logging.getLogger("exactflow.train")

CALIBRATION = 6  # eager steps at the start of a compiled run; all but the first are timed

Loss = Callable[[Tensor | None, Tensor | None, int | None], Tensor]


@dataclass(frozen=True)
class CompilePayoff:
    """Whether compiling the training step paid for itself in one run.

    Attributes:
        compile_seconds: Compile overhead: wall time of the compiled steps that compiled (each
            process's first on each batch shape) minus as many compiled steps' time.
        eager_ms: Milliseconds per eager step (the calibration steps, warm-up excluded).
        compiled_ms: Milliseconds per compiled step (those that did not compile).
        steps: Compiled steps this run took.
        break_even: Compiled steps after which ``compiled_ms * n + compile_seconds`` drops
            below ``eager_ms * n``; ``None`` when a compiled step is not faster.

    Example:
        >>> payoff = CompilePayoff(38.0, eager_ms=3.4, compiled_ms=2.1, steps=12_000,
        ...                        break_even=29_231)
        >>> payoff.paid
        False
        >>> for part in payoff.summary().split(": "):
        ...     print(part)
        compiled
        38.0 s to compile, 2.10 ms/step vs 3.40 eager
        pays for itself after 29,231 steps; this run took 12,000 (not paid, -22.4 s)

    """

    compile_seconds: float
    eager_ms: float
    compiled_ms: float
    steps: int
    break_even: int | None

    @property
    def paid(self) -> bool:
        """Whether this run was long enough for compiling to save time overall."""
        return self.break_even is not None and self.steps >= self.break_even

    @property
    def saved_seconds(self) -> float:
        """Seconds saved by compiling over this run (negative: it cost time)."""
        gain = (self.eager_ms - self.compiled_ms) * self.steps / 1000
        return gain - self.compile_seconds

    def summary(self) -> str:
        """One line: compile time, both step times, the break-even step and this run's length."""
        head = (
            f"compiled: {self.compile_seconds:.1f} s to compile, {self.compiled_ms:.2f} ms/step"
            f" vs {self.eager_ms:.2f} eager"
        )
        if self.break_even is None:
            return f"{head}: never pays for itself; this run took {self.steps:,} compiled steps"
        verdict = "paid" if self.paid else "not paid"
        return (
            f"{head}: pays for itself after {self.break_even:,} steps; this run took"
            f" {self.steps:,} ({verdict}, {self.saved_seconds:+.1f} s)"
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "paid": self.paid}


def payoff(progress: Progress) -> CompilePayoff | None:
    """The payoff of a compiled run from its timings (``None``: too few eager or compiled steps).

    Example:
        >>> p = Progress(eager_steps=5, eager_seconds=0.02, compiles=1, compile_seconds=3.002)
        >>> p.compiled_steps, p.compiled_seconds = 1000, 2.0
        >>> payoff(p).break_even
        1500

    """
    p = progress
    if p.compile_seconds is None or p.eager_steps == 0 or p.compiled_steps == 0:
        return None
    eager, compiled = p.eager_seconds / p.eager_steps, p.compiled_seconds / p.compiled_steps
    overhead = max(0.0, p.compile_seconds - p.compiles * compiled)
    gain = eager - compiled
    return CompilePayoff(
        compile_seconds=overhead,
        eager_ms=1000 * eager,
        compiled_ms=1000 * compiled,
        steps=p.compiled_steps + p.compiles,
        break_even=-int(-overhead // gain) if gain > 0 else None,
    )


def make_optimizer(
    config: TrainConfig, params: list[Tensor], device: torch.device
) -> torch.optim.Optimizer:
    """``config.optimizer`` (Adam or AdamW), set up for a compiled update with ``config.compile``.

    A compiled update gets its learning rate as a tensor (a float is a constant to the compiler,
    and the schedule would recompile it every step); on CUDA the optimizer is then
    ``capturable`` (its step counters live on the device), as torch requires for a tensor
    learning rate there.

    Example:
        >>> w = torch.nn.Parameter(torch.zeros(3))
        >>> config = TrainConfig(lr=1e-3, compile=True)
        >>> make_optimizer(config, [w], torch.device("cpu")).param_groups[0]["lr"]
        tensor(0.0010, dtype=torch.float64)

    """
    optimizer = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    extra = {"capturable": True} if config.compile and device.type == "cuda" else {}
    made = optimizer(params, lr=config.lr, weight_decay=config.weight_decay, **extra)
    if config.compile:
        tensor_lr(made, device)
    return made


def tensor_lr(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """Hold each group's ``lr`` (and the schedule's ``initial_lr``) as a float64 tensor.

    A resumed run calls it again: a checkpoint of an eager run holds Python floats.
    """
    for group in optimizer.param_groups:
        for key in ("lr", "initial_lr"):
            value = group.get(key)
            if value is not None and not isinstance(value, Tensor):
                group[key] = torch.tensor(float(value), dtype=torch.float64, device=device)


class StepParts:
    """The loss, the clipping and the update of a training step, eager or compiled.

    ``torch.compile`` is lazy: nothing compiles before the first compiled step, whose time
    (compilation included) goes to ``progress.compile_seconds``.
    """

    def __init__(
        self,
        progress: Progress,
        params: list[Tensor],
        clip_grad: float | None,
        optimizer: torch.optim.Optimizer,
        compile: bool,
    ) -> None:
        self.progress, self.params, self.compile = progress, params, compile
        self.limit = clip_grad if clip_grad is not None else float("inf")
        self.seen: set[Any] = set()  # batch shapes this process has compiled the step for
        self.warm = False  # this process has run an eager calibration step
        self.eager_update = optimizer.step
        self.compiled_update = self.compiled(optimizer.step)
        self.compiled_clip = self.compiled(self.eager_clip)
        self.eager_loss: Loss | None = None
        self.compiled_loss: Loss | None = None

    def compiled(self, function: Callable[..., Any]) -> Callable[..., Any]:
        return torch.compile(function, dynamic=False) if self.compile else function

    def set_loss(self, loss: Loss) -> None:
        self.eager_loss, self.compiled_loss = loss, self.compiled(loss)

    def eager_clip(self, loss: Tensor) -> Tensor:
        """Clip the gradient norm; whether the loss and the norm are finite (a 0-d bool)."""
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.limit)
        return torch.isfinite(loss) & torch.isfinite(norm)

    @property
    def calibrating(self) -> bool:
        """Whether the current step (``progress.step``, already counted) runs eagerly."""
        return self.compile and self.progress.step <= CALIBRATION

    def parts(self) -> tuple[Loss, Callable[[Tensor], Tensor], Callable[[], Any]]:
        """The loss, the clipping and the update to use for the current step."""
        if self.calibrating or not self.compile:
            return self.eager_loss, self.eager_clip, self.eager_update
        return self.compiled_loss, self.compiled_clip, self.compiled_update

    def record(self, seconds: float, shape: Any) -> None:
        """Add one step's wall time, on a batch of ``shape``, to the run's timings.

        The first compiled step on each batch shape compiles (graphs are static) and counts as
        compilation.
        """
        p = self.progress
        if not self.compile:
            return
        if self.calibrating:
            if self.warm:
                p.eager_seconds += seconds
                p.eager_steps += 1
            self.warm = True
        elif shape not in self.seen:
            p.compile_seconds = (p.compile_seconds or 0.0) + seconds
            p.compiles += 1
            self.seen.add(shape)
            first = "first compiled step" if len(self.seen) == 1 else f"compiled step on {shape}"
            logger.info("the %s took %.2f s", first, seconds)
        else:
            p.compiled_seconds += seconds
            p.compiled_steps += 1
