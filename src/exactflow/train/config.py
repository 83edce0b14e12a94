"""The settings of a training run: a dataclass that checks itself and serializes to JSON."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any

import torch

from ..flow import DTYPES

__all__ = ["RESUME_FIXED", "TrainConfig", "resolve_device"]

# Changing these between a run and its resumption would silently change what is being trained;
# the others (lr, weight_decay, clip_grad, patience, epochs, steps, ...) take effect on resume.
RESUME_FIXED = ("optimizer", "schedule", "batch_size", "dtype", "seed", "standardize")

_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def resolve_device(name: str) -> torch.device:
    """The ``torch.device`` called ``name``; ``ValueError`` when this machine does not have it.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')

    """
    if not isinstance(name, str) or not _DEVICE.fullmatch(name):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {name!r}")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} is not available: torch.cuda.is_available() is False"
                f" (torch {torch.__version__}); use device='cpu'"
            )
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ValueError(
                f"device {name!r} is not available: this machine has {count} CUDA device(s),"
                f" cuda:0 to cuda:{count - 1}"
            )
    return device


@dataclass
class TrainConfig:
    """Settings of a training run; serializes to JSON with :meth:`to_json`.

    Attributes:
        optimizer: ``"adam"`` or ``"adamw"``.
        lr: Learning rate (finite, positive).
        weight_decay: L2 penalty (Adam) or decoupled weight decay (AdamW); finite, ``>= 0``.
        schedule: ``"cosine"`` (annealed to 0 over the run, stepped every optimizer step),
            ``"plateau"`` (×0.5 after ``max(1, patience // 4)`` epochs without validation
            improvement) or ``"none"``.
        epochs: Number of passes over the training data (``None``: limited by ``steps`` only).
        steps: Number of minibatch steps (``None``: limited by ``epochs`` only). With both, the
            run stops at whichever comes first; a partial last epoch is still validated.
        batch_size: Minibatch size (training and validation).
        epoch_steps: Steps per epoch (between validations) for an objective that needs no data.
        clip_grad: Largest gradient norm (finite, positive; ``None``: no clipping).
        patience: Stop after this many epochs without a better validation metric
            (``None``: never).
        seed: Seeds the epoch shuffles and torch's global generator at the start of a run.
        dtype: ``"float32"`` or ``"float64"``; the model and the data are converted to it.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; the model and the data move there.
        compile: Compile the loss with ``torch.compile`` (its compile time is reported).
        checkpoint_every: Also write ``last.safetensors`` every this many **steps** (it is always
            written at the end of each epoch); ``None``: epoch ends only.
        max_nonfinite: Stop with :class:`~exactflow.train.NonFiniteLossError` once this many
            consecutive steps had a non-finite loss or gradient norm (each is skipped).
        out: Directory for checkpoints and logs (``None``: keep nothing on disk).
        standardize: Prepend a frozen standardization fitted on the training data
            (:meth:`exactflow.data.Standardize.prepend`), so ``log_prob`` stays in data units.
        tensorboard: Log to ``out/tensorboard`` if ``torch.utils.tensorboard`` imports.

    Example:
        >>> config = TrainConfig(epochs=10, lr=3e-3)
        >>> TrainConfig.from_json(config.to_json()) == config
        True

    """

    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "cosine"
    epochs: int | None = 100
    steps: int | None = None
    batch_size: int = 256
    epoch_steps: int = 100
    clip_grad: float | None = 5.0
    patience: int | None = 20
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    compile: bool = False
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
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not isinstance(self.device, str) or not _DEVICE.fullmatch(self.device):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        if self.epochs is None and self.steps is None:
            raise ValueError("set epochs or steps (or both); got neither")
        positive = {
            "epochs": self.epochs,
            "steps": self.steps,
            "batch_size": self.batch_size,
            "epoch_steps": self.epoch_steps,
            "patience": self.patience,
            "checkpoint_every": self.checkpoint_every,
            "max_nonfinite": self.max_nonfinite,
        }
        for name, value in positive.items():
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        flags = {"compile": self.compile, "standardize": self.standardize}
        flags["tensorboard"] = self.tensorboard
        for name, flag in flags.items():
            if not isinstance(flag, bool):
                raise ValueError(f"{name} must be True or False, got {flag!r}")
        _check_number("lr", self.lr, positive=True)
        _check_number("weight_decay", self.weight_decay, positive=False)
        if self.clip_grad is not None:
            _check_number("clip_grad", self.clip_grad, positive=True)
        if self.out is not None:
            if not isinstance(self.out, (str, os.PathLike)) or not os.fspath(self.out):
                raise ValueError(f"out must be a non-empty path or None, got {self.out!r}")
            self.out = os.fspath(self.out)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        if not isinstance(data, dict):
            raise ValueError(f"a TrainConfig is a JSON object, got {type(data).__name__}")
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


def _check_number(name: str, value: object, positive: bool) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite real number, ``> 0`` or ``>= 0``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and not value > 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    if not positive and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
