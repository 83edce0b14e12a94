"""The training loop: the run that :func:`exactflow.train.fit` drives.

One training step computes the objective's mean per-row loss, backpropagates, clips the
gradient norm and steps the optimizer. It makes **one host synchronization**: the finiteness
check of the loss and the gradient norm together (``bool(finite)`` in :meth:`Run.step`), which
decides whether the optimizer steps; a non-finite step is skipped without an update. Losses
accumulate on the device and are read once per epoch (and every ``_BAR_EVERY`` steps while a
progress bar is shown). Under torchrun the all-reduces of the gradient and of the loss run on the
device too (:mod:`exactflow.train.distributed`). With ``compile`` the loss, the clipping and the
update are compiled (:mod:`exactflow.train.compiled`).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from .. import checkpoint
from ..objectives import Objective
from .compiled import StepParts, make_optimizer, tensor_lr
from .config import TrainConfig
from .distributed import Launch, Replicas, all_sum, first_pass, gather, rank_seed
from .inputs import Inputs
from .logs import METRICS_FILE, Board, columns, write_metrics
from .state import Progress, adopt_config, restore_rng, rng_state

__all__ = ["NonFiniteLossError", "Run", "TrainingWorsenedWarning"]

logger = logging.getLogger("exactflow.train")

_BAR_EVERY = 25  # steps between progress-bar updates (each reads the loss: one host sync)


class NonFiniteLossError(FloatingPointError):
    """Training met too many non-finite losses, or a non-finite validation metric, and stopped."""


class TrainingWorsenedWarning(UserWarning):
    """Training ended without beating the model it started from on the validation metric."""


class Run:
    """The mutable state of one training run and the loop that advances it."""

    def __init__(
        self,
        model: nn.Module,
        objective: Objective,
        inputs: Inputs,
        config: TrainConfig,
        spec: dict | None,
        where: Launch | None = None,
    ) -> None:
        self.model, self.objective, self.inputs = model, objective, inputs
        self.config, self.spec = config, spec
        self.where = Launch() if where is None else where
        self.out = Path(config.out) if config.out is not None else None
        self.names = columns(objective.name)
        self.params = [p for p in model.parameters() if p.requires_grad]
        if not self.params:
            raise ValueError("the model has no trainable parameters (all have requires_grad=False)")
        self.optimizer = make_optimizer(config, self.params, inputs.device)
        source = inputs.source
        self.batches = len(source) if source is not None else config.epoch_steps
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
        self.progress = Progress()
        self.finished = False
        self.best_weights: dict[str, Tensor] | None = None
        self.saved_step: int | None = None  # step of the checkpoint on disk
        # With several processes each rank validates on its share of the rows (or samples).
        self.val, self.share = inputs.val, objective
        self.replicas: Replicas | None = None
        if self.where.distributed:
            rank, world = self.where.rank, self.where.world
            self.share = objective.shard(rank, world)
            if inputs.val is not None:
                self.val = tuple(
                    None if t is None else t.tensor_split(world)[rank] for t in inputs.val
                )
        self.parts = self.step_parts()
        # The epoch's sum of losses stays on the device; Progress.loss_sum holds it when saved.
        self.loss_sum = torch.zeros((), dtype=torch.float64, device=inputs.device)

    def step_parts(self) -> StepParts:
        """The parts of a step for the current progress and config (compiled or not)."""
        config = self.config
        parts = StepParts(
            self.progress, self.params, config.clip_grad, self.optimizer, config.compile
        )
        parts.set_loss(self._mean_loss)
        return parts

    def _mean_loss(self, x: Tensor | None, context: Tensor | None, rows: int | None) -> Tensor:
        return self.objective.loss(self.model, x, context).mean()

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        self.progress.loss_sum = float(self.loss_sum)
        rng: dict[str, Any] = {"rng": rng_state()}
        if self.where.distributed:  # every rank's generators; "rng" (rank 0's) for one process
            ranks = gather(rng["rng"])
            rng = {"rng": ranks[0], "rng_ranks": ranks}
        return {
            **self.progress.to_state(),
            "finished": self.finished,
            "metric": self.objective.name,
            **rng,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "config": self.config.to_dict(),
        }

    def restore(self, last: checkpoint.Checkpoint, best: checkpoint.Checkpoint | None) -> None:
        """Take over a checkpointed run; raises before modifying the model if anything is off."""
        state = last.state
        try:
            saved_metric = state.get("metric", "nll")
            if saved_metric != self.objective.name:
                raise ValueError(
                    f"cannot resume {last.path}: it was trained on {saved_metric!r}, not on"
                    f" {self.objective.name!r}"
                )
            progress = Progress.from_state(state)
            optimizer_state, scheduler_state = state["optimizer"], state["scheduler"]
            rng = state["rng"] if "rng" in state else {"cpu": state["torch_rng"]}
            ranks = state.get("rng_ranks")
            saved_config = state["config"]
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(
                f"cannot resume from {last.path}: it holds no complete training state"
                f" (missing or malformed {error})"
            ) from error
        try:
            self.optimizer.load_state_dict(optimizer_state)
            if self.scheduler is not None:
                self.scheduler.load_state_dict(scheduler_state)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise ValueError(
                f"cannot resume from {last.path}: its optimizer or scheduler state does not fit"
                f" this run ({str(error).splitlines()[0] if str(error) else error!r})"
            ) from None
        adopt_config(last.path, saved_config, self.config, self.optimizer, self.scheduler)
        if self.config.compile:  # saved by an eager run, the lr is a float again
            tensor_lr(self.optimizer, self.inputs.device)
        where = self.where
        if where.distributed and isinstance(ranks, list) and len(ranks) == where.world:
            restore_rng(ranks[where.rank], last.path)
        else:
            restore_rng(rng, last.path)
            if where.rank > 0:  # saved by another number of processes: fresh, distinct draws
                torch.manual_seed(rank_seed(self.config.seed + progress.step, where.rank))
        self.progress = progress
        self.parts = self.step_parts()
        self.loss_sum.fill_(progress.loss_sum)
        self.finished = self.done()
        self.model.load_state_dict(last.model.state_dict())
        # A best file predating this run's first validation may come from an older run in the
        # same directory; the replayed first epoch rewrites it.
        if best is not None and progress.best_epoch > 0:
            self.best_weights = {k: v.clone() for k, v in best.model.state_dict().items()}
        self.saved_step = progress.step

    def done(self) -> bool:
        """Whether the run's limits are reached (read from the current config)."""
        p, config = self.progress, self.config
        epochs_done = config.epochs is not None and p.epoch >= config.epochs
        return p.stopped_early or epochs_done or p.step >= self.total

    # ------------------------------------------------------------------ saving
    def save_last(self) -> None:
        if self.out is not None:
            state = self.state()  # every rank takes part: it gathers their generators
            if self.where.main:
                path = self.out / "last.safetensors"
                checkpoint.save(path, self.model, spec=self.spec, state=state)
            self.saved_step = self.progress.step

    def save_best(self) -> None:
        if self.out is not None and self.where.main:
            p = self.progress
            state = {"epoch": p.epoch, "step": p.step, "val": p.best_val}
            state["metric"] = self.objective.name
            checkpoint.save(self.out / "best.safetensors", self.model, spec=self.spec, state=state)

    # ------------------------------------------------------------------ loop
    def step(self, x: Tensor | None, context: Tensor | None, rows: int | None = None) -> None:
        """One optimizer step on a batch (this rank's share of it, of ``rows`` rows in all)."""
        p = self.progress
        p.step += 1
        start = time.perf_counter()
        shape = None if x is None else x.shape  # host metadata: no synchronization
        loss_of, clip, update = self.parts.parts()
        loss = loss_of(x, context, rows)
        self.optimizer.zero_grad(set_to_none=True)
        if self.replicas is None:
            loss.backward()
        else:  # the same global mean loss, hence the same decision, on every rank
            loss = self.replicas.backward(loss)
        finite = clip(loss)
        # The step's one host synchronization: it decides whether the optimizer steps.
        if not bool(finite):
            self.optimizer.zero_grad(set_to_none=True)
            p.skipped += 1
            p.consecutive += 1
            self.parts.record(time.perf_counter() - start, shape)
            if p.consecutive >= self.config.max_nonfinite:
                raise NonFiniteLossError(self.nonfinite_message())
            return
        update()
        if self.config.schedule == "cosine":
            self.scheduler.step()
        p.consecutive = 0
        self.loss_sum += loss.detach()
        p.loss_count += 1
        self.parts.record(time.perf_counter() - start, shape)

    def where_kept(self) -> str:
        if self.saved_step is None:
            if self.out is None:
                return "no checkpoint is kept (config.out is None)"
            return "no checkpoint had been written yet"
        return (
            f"the last good checkpoint is kept: {self.out / 'last.safetensors'}"
            f" (step {self.saved_step})"
        )

    def advice(self) -> str:
        """What to do after a divergence; every clause of it works."""
        lower = f"a lower lr (now {self.config.lr:g}; e.g. {self.config.lr / 10:g})"
        if self.saved_step is None:
            return f"Rerun with {lower}"
        return f"Rerun with {lower} and resume=True to continue from the checkpoint"

    def nonfinite_message(self) -> str:
        p = self.progress
        return (
            f"training stopped at step {p.step}: {p.consecutive} consecutive steps had a"
            f" non-finite loss or gradient (max_nonfinite={self.config.max_nonfinite}); those"
            f" steps were skipped without updating the model, and {self.where_kept()}."
            f" {self.advice()}, or set clip_grad, standardize the data or use"
            " dtype='float64'"
        )

    @torch.no_grad()
    def validate(self) -> float:
        """The objective's metric averaged over the validation rows (one host read).

        With several processes each sums its share and the sums are added up, so every rank
        reads the same value.
        """
        was_training = self.model.training
        self.model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=self.inputs.device)  # sum, count
        if self.val is None:  # an objective without data: one batch of its own samples
            values = self.share.metric(self.model, None, None).double()
            total[0], total[1] = values.sum(), len(values)
        else:
            x, context = self.val
            size = self.config.batch_size
            for i in range(0, len(x), size):
                c = None if context is None else context[i : i + size]
                total[0] += self.objective.metric(self.model, x[i : i + size], c).double().sum()
            total[1] = len(x)
        if self.where.distributed:
            all_sum(total)
        self.model.train(was_training)
        return float(total[0] / total[1])

    def end_epoch(self, clock: float) -> dict[str, Any]:
        p = self.progress
        value = self.validate()
        lr = float(self.optimizer.param_groups[0]["lr"])
        name = self.objective.name
        if not math.isfinite(value):
            kept = self.where_kept()
            raise NonFiniteLossError(
                f"the validation {name} is {value} after epoch {p.epoch + 1} (step {p.step}):"
                f" the model diverged at lr={self.config.lr:g}. {kept[0].upper()}{kept[1:]}."
                f" {self.advice()}, or set clip_grad or standardize the data"
            )
        if self.config.schedule == "plateau":
            self.scheduler.step(value)
        p.epoch += 1
        improved = value < p.best_val
        if improved:
            p.best_val, p.best_epoch, p.bad_epochs = value, p.epoch, 0
            self.best_weights = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        else:
            p.bad_epochs += 1
        p.elapsed = time.perf_counter() - clock
        train = float(self.loss_sum) / p.loss_count if p.loss_count else math.nan
        values = (p.epoch, p.step, train, value, lr, round(p.elapsed, 3), p.skipped)
        row = dict(zip(self.names, values, strict=True))
        p.history.append(row)
        p.batch, p.loss_count, p.skipped = 0, 0, 0
        self.loss_sum.zero_()
        patience = self.config.patience
        p.stopped_early = patience is not None and p.bad_epochs >= patience
        self.finished = self.done()
        if improved:  # best before last: "last" may then refer to it
            self.save_best()
        self.save_last()
        return row

    def epoch_batches(self) -> Any:
        """The rest of the current epoch's batches as ``(x, context, rows)``.

        ``rows`` counts the whole batch (``None`` without data); batches already taken are skipped.
        """
        p = self.progress
        if self.inputs.source is None:
            return ((None, None, None) for _ in range(p.batch, self.batches))
        if self.where.distributed:
            batches = self.inputs.shards(p.epoch, self.where.rank, self.where.world)
        else:
            batches = ((x, c, len(x)) for x, c in self.inputs.batches(p.epoch))
        for _ in range(p.batch):
            next(batches)
        return batches

    def run(self, progress: bool) -> None:
        every = self.config.checkpoint_every
        p = self.progress
        clock = time.perf_counter() - p.elapsed
        main = self.where.main  # rank 0 alone writes and shows progress
        metrics = None if self.out is None or not main else self.out / METRICS_FILE
        if metrics is not None:
            write_metrics(metrics, p.history, self.names)
        board = Board(self.out if main else None, self.config.tensorboard)
        progress = progress and main
        bar = tqdm(total=self.total, initial=p.step, disable=not progress, unit="step")
        train_key, val_key = self.names[2], self.names[3]
        self.model.train()
        try:
            with self.objective.fitting(self.model):
                if p.step == 0 and p.start_val is None:  # what "better" means: the start
                    p.start_val = self.validate()
                if self.where.distributed:
                    self.replicate()
                while not self.finished:
                    for x, context, rows in self.epoch_batches():
                        if p.step >= self.total:
                            break
                        self.step(x, context, rows)
                        p.batch += 1
                        bar.update(1)
                        if progress and p.loss_count and p.step % _BAR_EVERY == 0:
                            mean = float(self.loss_sum) / p.loss_count
                            bar.set_postfix({train_key: mean}, refresh=False)
                        ends_epoch = p.batch == self.batches or p.step >= self.total
                        if every is not None and p.step % every == 0 and not ends_epoch:
                            self.save_last()
                    row = self.end_epoch(clock)
                    bar.set_postfix({train_key: row[train_key], val_key: row[val_key]})
                    if metrics is not None:
                        write_metrics(metrics, p.history, self.names)
                    board.scalars(row, (train_key, val_key, "lr"), row["step"])
        finally:
            bar.close()
            board.close()

    def replicate(self) -> None:
        """Wrap the loss in DDP, after a first pass over the whole first batch (ActNorm)."""
        if self.inputs.source is None:
            x, context, loss = None, None, self.share.loss
        else:
            (x, context), loss = next(self.inputs.batches(0)), self.objective.loss
        unused = first_pass(self.model, loss, x, context, self.where)
        self.replicas = Replicas(self.model, self.share, self.where, self.inputs.device, unused)
        self.parts.set_loss(self.replicas.loss)

    def worsened(self) -> str | None:
        """Why the run did worse than its starting point, or ``None`` when it did not.

        A run whose best validation metric is above the one measured before its first step
        trained the model away from where it began: almost always a learning rate too high.
        """
        p = self.progress
        if p.start_val is None or not math.isfinite(p.start_val) or p.best_val <= p.start_val:
            return None
        name = self.objective.name
        return (
            f"training never improved on the starting model: best validation {name}"
            f" {p.best_val:.4g} (epoch {p.best_epoch}) against {p.start_val:.4g} before the first"
            f" step; lr={self.config.lr:g} is likely too high (try {self.config.lr / 10:g})"
        )
