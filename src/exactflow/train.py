"""Maximum-likelihood training of flows, with safe checkpoints and exact resumption.

A flow's density is exact, so training is plain maximum likelihood: :func:`fit` minimizes the mean
negative log-likelihood of minibatches,

    L(θ) = -(1/B) Σ_b log p_θ(x_b | c_b),

with Adam or AdamW, an optional cosine or reduce-on-plateau learning-rate schedule, gradient-norm
clipping and early stopping on the validation NLL (the best weights are restored at the end).

Everything a run needs to continue is checkpointed (see :mod:`exactflow.checkpoint`): weights,
optimizer and scheduler state, torch's RNG state, step counters and the position inside the current
epoch (each epoch's shuffle is a pure function of the seed and the epoch number). A run resumed
with ``resume=True`` therefore continues exactly where its last checkpoint left it: its loss
history is the one the uninterrupted run would have produced.

Files written to ``config.out``:

* ``last.safetensors`` — the full training state, every ``checkpoint_every`` steps and at each
  epoch end; ``resume=True`` starts from it;
* ``best.safetensors`` — the weights with the lowest validation NLL so far;
* ``metrics.csv`` — one row per epoch: ``epoch, step, train_nll, val_nll, lr, time, skipped``;
* ``tensorboard/`` — the same curves, when ``torch.utils.tensorboard`` can be imported.

Example:
    >>> import torch, exactflow as ef
    >>> from exactflow.train import TrainConfig, fit
    >>> T = ef.transforms
    >>> flow = ef.Flow(T.Compose([T.Affine(2)]), ef.distributions.StandardNormal(2))
    >>> x = 3 + 2 * torch.randn(512, 2)
    >>> config = TrainConfig(epochs=3, batch_size=128, lr=1e-2)
    >>> result = fit(flow, x[:400], x[400:], config, progress=False)
    >>> len(result.history)
    3

"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from .checkpoint import Checkpoint, build, load, save, standardized
from .flow import DTYPES, Flow, placement

__all__ = ["FitResult", "NonFiniteLossError", "TrainConfig", "fit"]

_COLUMNS = ("epoch", "step", "train_nll", "val_nll", "lr", "time", "skipped")
# Changing these between a run and its resumption would silently change what is being trained.
_RESUME_FIXED = ("optimizer", "schedule", "batch_size", "dtype", "seed", "standardize")

Data = Tensor | tuple[Tensor, Tensor]


class NonFiniteLossError(FloatingPointError):
    """Training met too many consecutive non-finite losses (or gradients) and stopped."""


@dataclass
class TrainConfig:
    """Settings of a maximum-likelihood run; serializes to JSON with :meth:`to_json`.

    Attributes:
        optimizer: ``"adam"`` or ``"adamw"``.
        lr: Learning rate.
        weight_decay: L2 penalty (Adam) or decoupled weight decay (AdamW).
        schedule: ``"cosine"`` (annealed to 0 over the run, stepped every optimizer step),
            ``"plateau"`` (×0.5 after ``max(1, patience // 4)`` epochs without validation
            improvement) or ``"none"``.
        epochs: Number of passes over the training data (``None``: limited by ``steps`` only).
        steps: Number of minibatch steps (``None``: limited by ``epochs`` only). With both, the
            run stops at whichever comes first; a partial last epoch is still validated.
        batch_size: Minibatch size (training and validation).
        clip_grad: Largest gradient norm (``None``: no clipping).
        patience: Stop after this many epochs without a lower validation NLL (``None``: never).
        seed: Seeds the epoch shuffles and torch's global generator at the start of a run.
        dtype: ``"float32"`` or ``"float64"``; the flow and the data are converted to it.
        checkpoint_every: Also write ``last.safetensors`` every this many **steps** (it is always
            written at the end of each epoch); ``None``: epoch ends only.
        max_nonfinite: Stop with :class:`NonFiniteLossError` once this many consecutive steps
            had a non-finite loss or gradient norm (each such step is skipped: no update).
        out: Directory for checkpoints and logs (``None``: keep nothing on disk).
        standardize: Prepend a frozen standardization fitted on the training data
            (:func:`exactflow.checkpoint.standardized`), so ``log_prob`` stays in data units.
        tensorboard: Log to ``out/tensorboard`` if ``torch.utils.tensorboard`` imports.

    """

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    epochs: int | None = 100
    steps: int | None = None
    batch_size: int = 256
    clip_grad: float | None = 5.0
    patience: int | None = 20
    seed: int = 0
    dtype: str = "float32"
    checkpoint_every: int | None = None
    max_nonfinite: int = 10
    out: str | None = None
    standardize: bool = False
    tensorboard: bool = True

    def __post_init__(self) -> None:
        if self.optimizer not in ("adam", "adamw"):
            raise ValueError(f"optimizer must be 'adam' or 'adamw', got {self.optimizer!r}")
        if self.schedule not in ("cosine", "plateau", "none"):
            raise ValueError(
                f"schedule must be 'cosine', 'plateau' or 'none', got {self.schedule!r}"
            )
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        if self.epochs is None and self.steps is None:
            raise ValueError("set epochs or steps (or both); got neither")
        positive = {
            "epochs": self.epochs,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "patience": self.patience,
            "checkpoint_every": self.checkpoint_every,
            "max_nonfinite": self.max_nonfinite,
        }
        for name, value in positive.items():
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if self.clip_grad is not None and not self.clip_grad > 0:
            raise ValueError(f"clip_grad must be positive or None, got {self.clip_grad}")
        if self.out is not None:
            self.out = os.fspath(self.out)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str) -> TrainConfig:
        return cls.from_dict(json.loads(text))


@dataclass
class FitResult:
    """What :func:`fit` returns.

    Attributes:
        flow: The trained flow with its best weights, in eval mode (with ``standardize`` it wraps
            the flow that was passed in).
        history: One dict per epoch with the keys of ``metrics.csv``.
        best_val_nll: Lowest validation NLL (nats per data point).
        best_epoch: The epoch that reached it (1-based; 0 if no epoch ran).
        stopped_early: Whether the patience ran out.
        steps: Minibatch steps taken, skipped ones included.

    """

    flow: Flow
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_nll: float = math.inf
    best_epoch: int = 0
    stopped_early: bool = False
    steps: int = 0


# ---------------------------------------------------------------------------- data


def _check_tensor(
    name: str, value: object, trailing: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.is_complex() or value.dtype == torch.bool:
        raise TypeError(f"{name} must hold real numbers, got {value.dtype}")
    if value.dim() != 1 + len(trailing) or tuple(value.shape[1:]) != trailing:
        expected = ", ".join(["N", *map(str, trailing)])
        raise ValueError(f"{name} must have shape ({expected}), got {tuple(value.shape)}")
    if value.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows)")
    value = value.detach().to(device=device, dtype=dtype)
    finite = torch.isfinite(value)
    if not bool(finite.all()):
        row, *column = (~finite).nonzero()[0].tolist()
        where = f"row {row}, column {column[0] if len(column) == 1 else tuple(column)}"
        raise ValueError(
            f"{name} has a non-finite value ({value[(row, *column)].item()}) at {where}"
        )
    return value


def _prepare(
    name: str, data: object, flow: Flow, dtype: torch.dtype
) -> tuple[Tensor, Tensor | None]:
    """Check ``data`` (``x`` or ``(x, context)``) against the flow; cast it to its dtype, device."""
    device = placement(flow)[1]
    if isinstance(data, Tensor):
        x, context = data, None
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, context = data
    else:
        raise TypeError(
            f"{name} must be a tensor x or a pair (x, context), got {type(data).__name__}"
        )
    x = _check_tensor(name, x, tuple(flow.event_shape), dtype, device)
    if flow.context == 0 and context is not None:
        raise ValueError(f"the flow is unconditional but {name} comes with a context")
    if flow.context > 0:
        if context is None:
            raise ValueError(
                f"the flow is conditional (context width {flow.context}): pass {name} as"
                " (x, context)"
            )
        context = _check_tensor(f"{name} context", context, (flow.context,), dtype, device)
        if context.shape[0] != x.shape[0]:
            raise ValueError(f"{name} has {x.shape[0]} rows but its context has {context.shape[0]}")
    inside = flow.transform.domain.check(x)
    if not bool(inside.all()):
        row, *column = (~inside).nonzero()[0].tolist()
        raise ValueError(
            f"{name} is outside the flow's domain {flow.transform.domain} at row {row},"
            f" column {column[0] if len(column) == 1 else tuple(column)}"
        )
    return x, context


def _permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The shuffle of epoch ``epoch``: a pure function of the seed, so a resumed run replays it."""
    key = hashlib.blake2b(f"{seed}:{epoch}".encode(), digest_size=8).digest()
    generator = torch.Generator().manual_seed(int.from_bytes(key, "little") >> 1)
    return torch.randperm(n, generator=generator)


# ---------------------------------------------------------------------------- logging


def _write_csv(path: Path, history: list[dict[str, float]]) -> None:
    """Rewrite the metrics file atomically from a history."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=_COLUMNS)
        writer.writeheader()
        writer.writerows(history)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _append_csv(path: Path, row: dict[str, float]) -> None:
    with open(path, "a", newline="") as f:
        csv.DictWriter(f, fieldnames=_COLUMNS).writerow(row)


def _tensorboard(out: Path) -> Any:
    """A ``SummaryWriter`` on ``out/tensorboard``, or ``None`` when tensorboard is unavailable."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=os.fspath(out / "tensorboard"))


# ---------------------------------------------------------------------------- the run


class _Run:
    """The mutable state of one training run and the loop that advances it."""

    def __init__(
        self,
        flow: Flow,
        train: tuple[Tensor, Tensor | None],
        val: tuple[Tensor, Tensor | None],
        config: TrainConfig,
        spec: dict | None,
    ) -> None:
        self.flow, self.config, self.spec = flow, config, spec
        self.x, self.c = train
        self.xv, self.cv = val
        self.out = Path(config.out) if config.out is not None else None
        self.params = [p for p in flow.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the flow has no trainable parameters (all have requires_grad=False)")
        optimizer = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = optimizer(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.batches = math.ceil(len(self.x) / config.batch_size)
        self.total = config.steps if config.steps is not None else math.inf
        if config.epochs is not None:
            self.total = min(self.total, config.epochs * self.batches)
        self.scheduler: Any = None
        if config.schedule == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, self.total)
        elif config.schedule == "plateau":
            plateau = max(1, (config.patience or 20) // 4)
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, factor=0.5, patience=plateau
            )
        # Progress; everything here is saved in the checkpoint.
        self.epoch = 0  # completed epochs
        self.step = 0  # minibatch steps, skipped ones included
        self.batch = 0  # steps done in the current epoch
        self.loss_sum = 0.0  # sum of the current epoch's finite losses
        self.loss_count = 0
        self.skipped = 0  # skipped steps in the current epoch
        self.consecutive = 0  # consecutive non-finite steps
        self.best_val = math.inf
        self.best_epoch = 0
        self.bad_epochs = 0
        self.elapsed = 0.0
        self.finished = False
        self.stopped_early = False
        self.history: list[dict[str, float]] = []
        self.best_weights: dict[str, Tensor] | None = None
        self.saved_step: int | None = None  # step of the checkpoint on disk

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "batch": self.batch,
            "loss_sum": self.loss_sum,
            "loss_count": self.loss_count,
            "skipped": self.skipped,
            "consecutive_nonfinite": self.consecutive,
            "best_val_nll": self.best_val,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "elapsed": self.elapsed,
            "finished": self.finished,
            "stopped_early": self.stopped_early,
            "history": self.history,
            "torch_rng": torch.get_rng_state(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "config": self.config.to_dict(),
        }

    def restore(self, last: Checkpoint, best: Checkpoint | None) -> None:
        """Take over a checkpointed run; raises before modifying the flow if anything is off."""
        state = last.state
        try:
            saved = state["config"]
            differ = {k: (saved[k], getattr(self.config, k)) for k in _RESUME_FIXED}
            differ = {k: v for k, v in differ.items() if v[0] != v[1]}
            if differ:
                raise ValueError(
                    f"cannot resume {last.path}: the config changed in {differ} (saved, now);"
                    " these must stay the same, or start a new run in another directory"
                )
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scheduler is not None:
                self.scheduler.load_state_dict(state["scheduler"])
            for name in ("epoch", "step", "batch", "loss_count", "skipped", "best_epoch"):
                setattr(self, name, int(state[name]))
            self.consecutive = int(state["consecutive_nonfinite"])
            self.bad_epochs = int(state["bad_epochs"])
            self.loss_sum = float(state["loss_sum"])
            self.best_val = float(state["best_val_nll"])
            self.elapsed = float(state["elapsed"])
            self.stopped_early = bool(state["stopped_early"])
            self.history = list(state["history"])
            rng = state["torch_rng"]
        except (KeyError, TypeError) as error:
            raise ValueError(
                f"cannot resume from {last.path}: it holds no complete training state"
                f" (missing or malformed {error})"
            ) from error
        torch.set_rng_state(rng)
        # Limits come from the current config, so a finished run can be extended.
        epochs_done = self.config.epochs is not None and self.epoch >= self.config.epochs
        self.finished = self.stopped_early or epochs_done or self.step >= self.total
        self.flow.load_state_dict(last.flow.state_dict())
        # A best file predating this run's first validation may come from an older run in the
        # same directory; the replayed first epoch rewrites it.
        if best is not None and self.best_epoch > 0:
            self.best_weights = {k: v.clone() for k, v in best.flow.state_dict().items()}
        self.saved_step = self.step

    # ------------------------------------------------------------------ saving
    def save_last(self) -> None:
        if self.out is not None:
            save(self.out / "last.safetensors", self.flow, spec=self.spec, state=self.state())
            self.saved_step = self.step

    def save_best(self) -> None:
        if self.out is not None:
            state = {"epoch": self.epoch, "step": self.step, "val_nll": self.best_val}
            save(self.out / "best.safetensors", self.flow, spec=self.spec, state=state)

    # ------------------------------------------------------------------ loop
    def train_step(self, index: Tensor) -> None:
        x = self.x[index]
        context = None if self.c is None else self.c[index]
        self.step += 1
        loss = -self.flow.log_prob(x, context).mean()
        finite = bool(torch.isfinite(loss))
        if finite:
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            limit = self.config.clip_grad if self.config.clip_grad is not None else math.inf
            norm = torch.nn.utils.clip_grad_norm_(self.params, limit)
            finite = bool(torch.isfinite(norm))
        if not finite:
            self.optimizer.zero_grad(set_to_none=True)
            self.skipped += 1
            self.consecutive += 1
            if self.consecutive >= self.config.max_nonfinite:
                raise NonFiniteLossError(self.nonfinite_message())
            return
        self.optimizer.step()
        if self.config.schedule == "cosine":
            self.scheduler.step()
        self.consecutive = 0
        self.loss_sum += loss.item()
        self.loss_count += 1

    def nonfinite_message(self) -> str:
        if self.saved_step is None:
            kept = (
                "no checkpoint had been written yet"
                if self.out is not None
                else "no checkpoint is kept (config.out is None)"
            )
        else:
            kept = (
                f"the last good checkpoint is kept: {self.out / 'last.safetensors'}"
                f" (step {self.saved_step}); fix the cause and rerun with resume=True"
            )
        return (
            f"training stopped at step {self.step}: {self.consecutive} consecutive steps had a"
            f" non-finite loss or gradient (max_nonfinite={self.config.max_nonfinite}); those"
            f" steps were skipped without updating the flow, and {kept}. Lower lr, set"
            " clip_grad, standardize the data or use dtype='float64'"
        )

    @torch.no_grad()
    def evaluate(self) -> float:
        was_training = self.flow.training
        self.flow.eval()
        total = 0.0
        size = self.config.batch_size
        for i in range(0, len(self.xv), size):
            context = None if self.cv is None else self.cv[i : i + size]
            total -= self.flow.log_prob(self.xv[i : i + size], context).double().sum().item()
        self.flow.train(was_training)
        return total / len(self.xv)

    def end_epoch(self, clock: float) -> dict[str, float]:
        val_nll = self.evaluate()
        lr = float(self.optimizer.param_groups[0]["lr"])
        if self.config.schedule == "plateau":
            self.scheduler.step(val_nll)
        self.epoch += 1
        improved = val_nll < self.best_val
        if improved:
            self.best_val, self.best_epoch, self.bad_epochs = val_nll, self.epoch, 0
            self.best_weights = {k: v.detach().clone() for k, v in self.flow.state_dict().items()}
        else:
            self.bad_epochs += 1
        self.elapsed = time.perf_counter() - clock
        row = {
            "epoch": self.epoch,
            "step": self.step,
            "train_nll": self.loss_sum / self.loss_count if self.loss_count else math.nan,
            "val_nll": val_nll,
            "lr": lr,
            "time": round(self.elapsed, 3),
            "skipped": self.skipped,
        }
        self.history.append(row)
        self.batch, self.loss_sum, self.loss_count, self.skipped = 0, 0.0, 0, 0
        patience = self.config.patience
        self.stopped_early = patience is not None and self.bad_epochs >= patience
        epochs_done = self.config.epochs is not None and self.epoch >= self.config.epochs
        self.finished = self.stopped_early or epochs_done or self.step >= self.total
        if improved:  # best before last: "last" may then refer to it
            self.save_best()
        self.save_last()
        return row

    def run(self, progress: bool) -> None:
        every = self.config.checkpoint_every
        size = self.config.batch_size
        clock = time.perf_counter() - self.elapsed
        csv_path = None if self.out is None else self.out / "metrics.csv"
        if csv_path is not None:
            _write_csv(csv_path, self.history)
        board = _tensorboard(self.out) if self.out is not None and self.config.tensorboard else None
        bar = tqdm(total=self.total, initial=self.step, disable=not progress, unit="step")
        validate_inputs = self.flow.validate
        self.flow.validate = False  # the data were checked once, up front
        self.flow.train()
        try:
            while not self.finished:
                order = _permutation(len(self.x), self.config.seed, self.epoch)
                while self.batch < self.batches and self.step < self.total:
                    self.train_step(order[self.batch * size : (self.batch + 1) * size])
                    self.batch += 1
                    bar.update(1)
                    if self.loss_count and self.step % 10 == 0:
                        bar.set_postfix(train=self.loss_sum / self.loss_count, refresh=False)
                    ends_epoch = self.batch == self.batches or self.step >= self.total
                    if every is not None and self.step % every == 0 and not ends_epoch:
                        self.save_last()
                row = self.end_epoch(clock)
                bar.set_postfix(train=row["train_nll"], val=row["val_nll"], refresh=False)
                if csv_path is not None:
                    _append_csv(csv_path, row)
                if board is not None:
                    for key in ("train_nll", "val_nll", "lr"):
                        board.add_scalar(key, row[key], row["step"])
        finally:
            self.flow.validate = validate_inputs
            bar.close()
            if board is not None:
                board.close()


# ---------------------------------------------------------------------------- fit


def _check_spec(flow: Flow, spec: dict) -> None:
    """Raise ``ValueError`` unless ``build(spec)`` has the weight names and shapes of ``flow``."""
    reference = {k: tuple(v.shape) for k, v in build(spec).state_dict().items()}
    actual = {k: tuple(v.shape) for k, v in flow.state_dict().items()}
    if reference != actual:
        differ = sorted(
            k for k in reference.keys() | actual.keys() if reference.get(k) != actual.get(k)
        )
        raise ValueError(
            f"the spec {spec} builds a flow whose weights differ from the flow being trained"
            f" (first differences: {differ[:5]}); a checkpoint saved with it could not be loaded"
        )


def fit(
    flow: Flow,
    train: Data,
    val: Data,
    config: TrainConfig | None = None,
    *,
    spec: dict | None = None,
    resume: bool = False,
    progress: bool = True,
) -> FitResult:
    """Train a flow by maximum likelihood.

    Every epoch shuffles the training rows, takes Adam(W) steps on the mean negative
    log-likelihood of each minibatch (skipping, without an update, any step whose loss or gradient
    norm is non-finite), then measures the validation NLL; the run stops after ``epochs``/``steps``
    or when ``patience`` epochs pass without improvement, and the flow ends with its best weights.

    The flow is converted to ``config.dtype`` in place. A fresh run seeds torch's global generator
    with ``config.seed``, so the same seed and the same initial flow give the same loss history.

    Args:
        flow: The flow to train.
        train: Training data ``(N, *event)``, or ``(x, context)`` for a conditional flow. It is
            checked (shape, finiteness, domain) before anything starts.
        val: Validation data, in the same form.
        config: Run settings (defaults: :class:`TrainConfig`).
        spec: How checkpoints rebuild the flow: ``{"preset": "MAF", "kwargs": {...}}`` naming a
            preset of :mod:`exactflow.flows`; ``None`` saves weights that load only into a flow
            built by hand (``checkpoint.load(path, flow=...)``). When resuming, ``None`` keeps
            the spec saved in the checkpoint.
        resume: Continue from ``config.out/last.safetensors`` (weights, optimizer, scheduler, RNG
            and counters) if it exists; otherwise start afresh. The limits (``epochs``,
            ``steps``, ``patience``) are the current config's, so a finished run can be extended.
            Without ``resume``, a run overwrites the files of an earlier run in ``config.out``.
        progress: Show a progress bar with the live train and validation NLL.

    Returns:
        A :class:`FitResult` with the trained flow and its history.

    Raises:
        ValueError: Bad data, a spec that does not build this flow, a checkpoint to resume from
            that is unreadable or does not match the data or the config.
        NonFiniteLossError: ``max_nonfinite`` consecutive non-finite steps; the last checkpoint
            on disk is left as it was.

    """
    config = TrainConfig() if config is None else config
    if not isinstance(flow, Flow):
        raise TypeError(f"fit: flow must be an exactflow Flow, got {type(flow).__name__}")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"fit: config must be a TrainConfig, got {type(config).__name__}")
    if resume and config.out is None:
        raise ValueError("resume=True needs config.out, the directory holding last.safetensors")
    dtype = DTYPES[config.dtype]
    x, c = _prepare("train", train, flow, dtype)
    xv, cv = _prepare("val", val, flow, dtype)

    if config.standardize:
        flow = standardized(flow, x.mean(0), x.std(0))
    out = Path(config.out) if config.out is not None else None
    last = best = None
    if resume and (out / "last.safetensors").exists():
        # Loaded into copies: the flow is only touched once everything has been checked.
        last = load(out / "last.safetensors", flow=copy.deepcopy(flow))
        if (out / "best.safetensors").exists():
            best = load(out / "best.safetensors", flow=copy.deepcopy(flow))
    if spec is None and last is not None:
        spec = last.spec  # keep saving what the run was started with
    elif spec is not None:
        spec = dict(spec)
        if config.standardize:
            spec["standardize"] = True
    if spec is not None:
        _check_spec(flow, spec)
    flow.to(dtype)

    run = _Run(flow, (x, c), (xv, cv), config, spec)
    if last is not None:
        run.restore(last, best)
    else:
        torch.manual_seed(config.seed)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    run.run(progress)
    if run.best_weights is not None:
        flow.load_state_dict(run.best_weights)
    return FitResult(
        flow=flow.eval(),
        history=run.history,
        best_val_nll=run.best_val,
        best_epoch=run.best_epoch,
        stopped_early=run.stopped_early,
        steps=run.step,
    )
