"""The training loop: minibatch SGD on in-memory tensors, with checkpoints and exact resume.

Everything random in an epoch (data order, augmentation) comes from a generator seeded by
(seed, epoch), so resuming at an epoch boundary needs only the model, the optimiser, the
global RNG state and the iteration. A run resumed after a kill ends with the same metrics
as one never interrupted (on CPU; on GPU up to non-deterministic kernels).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from ticketlab.config import TicketlabError, TrainConfig
from ticketlab.data import Dataset, Split, augment_batch
from ticketlab.data.user import dataset_from
from ticketlab import paths
from ticketlab.store import (atomic_torch_save, atomic_write_json, atomic_write_text, csv_text,
                             load_checkpoint, read_json)
from ticketlab.manifest import remove_artifact
from ticketlab.models.sparse_linear import SparseLinear, trained_parameter
from ticketlab.training.optim import build_optimizer, lr_factor_fn
from ticketlab.training.progress import Progress
from ticketlab.training.steps import Step, parse_steps, step_name

METRIC_COLUMNS = ("epoch", "iteration", "step", "lr", "train_loss", "train_acc", "val_loss", "val_acc",
                  "test_loss", "test_acc", "wall_time")
EVAL_BATCH = 1000


@dataclass
class Schedule:
    """The iteration arithmetic of one training run."""

    iterations_per_epoch: int
    total: int
    save_at: dict[int, str] = field(default_factory=dict)  # iteration -> checkpoint name
    eval_every: int = 0  # evaluate every this many iterations too (0: at epoch ends only)

    @classmethod
    def of(cls, cfg: TrainConfig, num_train: int) -> Schedule:
        if cfg.batch_size < 1:
            raise TicketlabError(f"batch size must be at least 1, got {cfg.batch_size}")
        per_epoch = math.ceil(num_train / cfg.batch_size)
        total = Step.parse(cfg.steps).to_iterations(per_epoch)
        if total < 1:
            raise TicketlabError(f"training length {cfg.steps!r} is zero iterations; expected e.g. 10ep or 500it")
        save_at = {}
        for step in parse_steps(cfg.save_at):
            iteration = step.to_iterations(per_epoch)
            if iteration > total:
                raise TicketlabError(
                    f"checkpoint step {step} is after the end of training ({cfg.steps} = {total} iterations)"
                )
            save_at[iteration] = step_name(iteration, per_epoch)
        eval_every = Step.parse(cfg.eval_every).to_iterations(per_epoch) if cfg.eval_every else 0
        if cfg.eval_every and eval_every < 1:
            raise TicketlabError(f"eval_every {cfg.eval_every!r} is zero iterations; expected e.g. 100it "
                                 "(or leave it out: evaluations at epoch ends only)")
        return cls(per_epoch, total, save_at, eval_every)

    def evaluates_mid_epoch(self, iteration: int) -> bool:
        """Whether `iteration` (not an epoch end: those always evaluate) gets a metrics row: a
        multiple of eval_every, unless the epoch's end (or training's) comes within half of
        eval_every after it, whose row then stands for both."""
        if self.eval_every <= 0 or iteration % self.eval_every or iteration % self.iterations_per_epoch == 0:
            return False
        epoch_end = min(self.total, (iteration // self.iterations_per_epoch + 1) * self.iterations_per_epoch)
        return epoch_end - iteration >= max(1, self.eval_every // 2)

    def epochs(self, iteration: int) -> float | int:
        """metrics.csv's epoch: the epochs trained by `iteration` (5.55 at 5ep415it of 755 per epoch; 6 at 6ep)."""
        epochs = iteration / self.iterations_per_epoch
        return int(epochs) if epochs.is_integer() else round(epochs, 4)

    def name(self, iteration: int) -> str:
        return step_name(iteration, self.iterations_per_epoch)


class StepConstraint(Protocol):
    """Something the loop keeps true of the model while it trains, such as a pruning mask."""

    def enforce(self, optimizer: torch.optim.Optimizer) -> None:
        """Make the model and the optimiser state satisfy the constraint; called once before
        training starts or resumes (the resumed state may come from an unconstrained run)."""

    def before_step(self) -> None:
        """Adjust the gradients just before each optimiser step."""


class EpochCallback(Protocol):
    """Something that watches the model at each epoch end and may stop training early."""

    def on_epoch_end(self, epoch: int, model: nn.Module) -> bool:
        """Called after epoch `epoch` (1-based) is trained and evaluated; True stops training there."""

    def state_dict(self) -> dict[str, Any]:
        """What the callback must remember across a resume; saved in every resume point."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what state_dict returned, when a run resumes."""


class Diverged(TicketlabError):
    """Training produced a non-finite loss; the run is recorded as diverged, never as done."""


def diverged_message(record: dict[str, Any]) -> str:
    return (f"training diverged at {record['step']} (the {record['what']} became {record['value']}); "
            "lower --lr (or add --warmup), then run again")


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def prunable_weights(model: nn.Module) -> list[nn.Parameter]:
    """The weights the L1/L2 penalties act on: the model's declared prunable ones, else every Linear/Conv weight."""
    declared = getattr(model, "prunable_parameters", None)
    if declared is not None:
        return [trained_parameter(model, name) for name in declared()]
    return [m.values if isinstance(m, SparseLinear) else m.weight for m in model.modules()
            if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, SparseLinear))]


def sparse_layers_of(model: nn.Module) -> list[str]:
    """The model's layers on sparse kernels (SparseLinear): what its optimiser's state is shaped by."""
    return [name for name, module in model.named_modules() if isinstance(module, SparseLinear)]


def resumed_sparse_layers(directory: Path) -> list[str] | None:
    """The layers a run with a resume point in `directory` trains on sparse kernels (None: it has no
    resume point), so that it resumes on them whatever the kernels asked for now."""
    path = directory / paths.RESUME
    return load_checkpoint(path).get("sparse_layers", []) if path.exists() else None


@torch.inference_mode()
def evaluate(model: nn.Module, split: Split, batch_size: int = EVAL_BATCH) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of the model on a split, in eval mode."""
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=split.x.device)
    correct = torch.zeros((), device=split.x.device, dtype=torch.long)
    for start in range(0, len(split.y), batch_size):
        x, y = split.x[start:start + batch_size], split.y[start:start + batch_size]
        logits = model(x)
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    n = max(len(split.y), 1)
    return loss_sum.item() / n, correct.item() / n


class Trainer:
    """Trains one model on one dataset; with a directory it checkpoints and resumes there."""

    def __init__(self, model: nn.Module, data: Dataset, cfg: TrainConfig, directory: Path | None = None,
                 progress: bool = True, label: str = "train", *, constraint: StepConstraint | None = None,
                 start_iteration: int = 0, callbacks: Sequence[EpochCallback] = ()):
        if cfg.select_by not in ("val_loss", "val_acc"):
            raise TicketlabError(f"select_by must be val_loss or val_acc, got {cfg.select_by!r}")
        self.model, self.data, self.cfg, self.directory = model, data, cfg, directory
        self.schedule = Schedule.of(cfg, len(data.train.y))
        self.optimizer = build_optimizer(model.parameters(), cfg, native=bool(sparse_layers_of(model)))
        self.lr_factor = lr_factor_fn(cfg, self.schedule.iterations_per_epoch, self.schedule.total)
        self.penalised = prunable_weights(model) if (cfg.l1 or cfg.l2) else []
        self.bn_scales = [m.weight for m in model.modules()
                          if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None] \
            if cfg.bn_l1 else []
        self.progress, self.label, self.constraint = progress, label, constraint
        self.callbacks = list(callbacks)
        self.stopped_early_at: int | None = None
        if not 0 <= start_iteration < self.schedule.total:
            raise TicketlabError(f"training cannot start at iteration {start_iteration}: it has "
                                 f"{self.schedule.total} iterations ({cfg.steps})")
        self.iteration = start_iteration  # after 0 when retraining from a late rewind point
        self.wall_time = 0.0
        self.rows: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None

    # --- checkpoints -------------------------------------------------------------------
    def _path(self, name: str) -> Path:
        assert self.directory is not None
        return self.directory / name

    def _save_weights(self, name: str) -> None:
        if self.directory is not None:
            atomic_torch_save({"model": self.model.state_dict(), "iteration": self.iteration},
                              self._path(paths.checkpoint(name)))

    def _save_resume_point(self) -> None:
        if self.directory is None:
            return
        atomic_torch_save({
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration, "wall_time": self.wall_time, "rows": self.rows, "best": self.best,
            "rng": torch.get_rng_state(), "stopped_early_at": self.stopped_early_at,
            "callbacks": [callback.state_dict() for callback in self.callbacks],
            "sparse_layers": sparse_layers_of(self.model),
        }, self._path(paths.RESUME))
        atomic_write_text(self._path(paths.METRICS), csv_text(self.rows, METRIC_COLUMNS))

    def _resume(self) -> None:
        if self.directory is None or not self._path(paths.RESUME).exists():
            return
        state = load_checkpoint(self._path(paths.RESUME))
        started, now = state.get("sparse_layers", []), sparse_layers_of(self.model)
        if started != now:  # the optimiser's state has the shapes of the kernels it started with
            raise TicketlabError(f"this run started with {', '.join(started) or 'no layer'} on sparse kernels and "
                                 f"would resume with {', '.join(now) or 'none'}; resume it with the --kernels it "
                                 "started with (or --force to start it again)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration, self.wall_time = state["iteration"], state["wall_time"]
        self.rows, self.best = state["rows"], state["best"]
        torch.set_rng_state(state["rng"])
        self.stopped_early_at = state.get("stopped_early_at")  # absent from resume points of older versions
        for callback, saved in zip(self.callbacks, state.get("callbacks", []), strict=True):
            callback.load_state_dict(saved)

    # --- the loop ----------------------------------------------------------------------
    def _diverge(self, what: str, value: float, iteration: int) -> NoReturn:
        """Record that training diverged (a rerun says so at once; --force retries) and stop."""
        record = {"step": self.schedule.name(iteration), "iteration": iteration, "what": what, "value": str(value)}
        if self.directory is not None:
            atomic_write_json(self._path(paths.DIVERGED), record)
        raise Diverged(diverged_message(record))

    def _check_finite(self, losses: torch.Tensor, first_iteration: int) -> None:
        """Stop at the first minibatch since `first_iteration` whose loss was not finite."""
        bad = (~torch.isfinite(losses)).nonzero()
        if len(bad):
            index = int(bad[0])
            self._diverge("training loss", float(losses[index]), first_iteration + index)

    def _record(self, train_loss: float, train_acc: float) -> None:
        val_loss, val_acc = evaluate(self.model, self.data.val)
        if not math.isfinite(val_loss):  # finite training losses, and yet weights that overflow
            self._diverge("validation loss", val_loss, self.iteration)
        test_loss, test_acc = evaluate(self.model, self.data.test)
        row = {"epoch": self.schedule.epochs(self.iteration), "iteration": self.iteration,
               "step": self.schedule.name(self.iteration), "lr": self.optimizer.param_groups[0]["lr"], "train_loss": train_loss, "train_acc": train_acc,
               "val_loss": val_loss, "val_acc": val_acc, "test_loss": test_loss, "test_acc": test_acc,
               "wall_time": round(self.wall_time, 3)}
        self.rows.append(row)
        better = self.best is None or (
            val_loss < self.best["val_loss"] if self.cfg.select_by == "val_loss" else val_acc > self.best["val_acc"]
        )
        if better:
            self.best = dict(row)
            self._save_weights("best")

    def _penalty(self) -> torch.Tensor | float:
        penalty: torch.Tensor | float = 0.0
        if self.cfg.l1:
            penalty = penalty + self.cfg.l1 * sum(w.abs().sum() for w in self.penalised)
        if self.cfg.l2:
            penalty = penalty + self.cfg.l2 * sum(w.pow(2).sum() for w in self.penalised)
        return penalty

    def _slim(self) -> None:
        """Network slimming (Liu et al. 2017): the subgradient of bn_l1·Σ|γ| on every BatchNorm scale."""
        with torch.no_grad():
            for gamma in self.bn_scales:
                if gamma.grad is not None:  # a BatchNorm the forward pass skipped
                    gamma.grad.add_(gamma.sign(), alpha=self.cfg.bn_l1)

    def _stop_requested(self, epoch: int) -> bool:
        # Every callback sees every epoch, even after one of them asked to stop.
        votes = [callback.on_epoch_end(epoch, self.model) for callback in self.callbacks]
        return any(votes)

    def run(self) -> dict[str, Any]:
        if self.directory is not None and self._path(paths.DIVERGED).exists():
            raise Diverged(diverged_message(read_json(self._path(paths.DIVERGED))) + " (this run diverged earlier: "
                           "change a setting, or --force to try it again)")
        if self.cfg.deterministic:
            torch.use_deterministic_algorithms(True)
        self._resume()
        if self.constraint is not None:  # before the init metrics and the 0it checkpoint
            self.constraint.enforce(self.optimizer)
        schedule, train = self.schedule, self.data.train
        if not self.rows:  # metrics before any training: the curves start at the init
            self._record(float("nan"), float("nan"))
        bar = Progress(schedule.total, self.label, enabled=self.progress, initial=self.iteration)
        self.model.train()
        while self.iteration < schedule.total and self.stopped_early_at is None:
            epoch = self.iteration // schedule.iterations_per_epoch
            generator = epoch_generator(self.cfg.seed, epoch)
            order = torch.randperm(len(train.y), generator=generator).to(train.x.device)
            loss_sum = torch.zeros((), device=train.x.device)
            correct = torch.zeros((), device=train.x.device, dtype=torch.long)
            losses = torch.zeros(schedule.iterations_per_epoch, device=train.x.device)  # to name a divergence's step
            checked = first = self.iteration  # the losses from iteration `checked` on are not checked yet
            seen = 0
            started = time.perf_counter()
            # A retraining from a late rewind point starts mid-epoch, with that epoch's data order.
            for batch in range(self.iteration % schedule.iterations_per_epoch, schedule.iterations_per_epoch):
                if self.iteration == schedule.total:
                    break
                if self.iteration in schedule.save_at:
                    self._save_weights(schedule.save_at[self.iteration])
                index = order[batch * self.cfg.batch_size:(batch + 1) * self.cfg.batch_size]
                # index_select, not x[index]: the same copy, about 6× faster for 60 MNIST images (BENCHMARKS.md).
                x, y = train.x.index_select(0, index), train.y.index_select(0, index)
                if self.data.augment:
                    # Padding with black, as torchvision pads before normalising.
                    x = augment_batch(x, generator, fill=self.data.black)
                self.optimizer.param_groups[0]["lr"] = self.cfg.lr * self.lr_factor(self.iteration)
                logits = self.model(x)
                loss = F.cross_entropy(logits, y)
                self.optimizer.zero_grad(set_to_none=True)
                objective = loss + self._penalty() if self.penalised else loss
                objective.backward()
                if self.bn_scales:
                    self._slim()
                if self.constraint is not None:
                    self.constraint.before_step()
                self.optimizer.step()
                loss_sum += loss.detach() * len(y)
                losses[self.iteration - first] = loss.detach()
                correct += (logits.detach().argmax(1) == y).sum()
                seen += len(y)
                self.iteration += 1
                bar.update()
                if schedule.evaluates_mid_epoch(self.iteration):
                    self.wall_time += time.perf_counter() - started  # evaluation is not training time
                    self._check_finite(losses[checked - first:self.iteration - first], checked)
                    checked = self.iteration
                    self._record(loss_sum.item() / seen, correct.item() / seen)
                    started = time.perf_counter()
            self.wall_time += time.perf_counter() - started
            self._check_finite(losses[checked - first:self.iteration - first], checked)
            self._record(loss_sum.item() / seen, correct.item() / seen)
            bar.note(val_acc=self.rows[-1]["val_acc"])
            if self._stop_requested(epoch + 1) and self.iteration < schedule.total:
                self.stopped_early_at = epoch + 1
            self._save_resume_point()
        bar.close()
        if self.iteration in schedule.save_at:
            self._save_weights(schedule.save_at[self.iteration])
        self._save_weights("final")
        if self.directory is not None:  # only an unfinished run needs its resume point
            remove_artifact(self._path(paths.RESUME))
        return self.summary()

    def summary(self) -> dict[str, Any]:
        assert self.best is not None
        return {"iterations": self.schedule.total, "iterations_per_epoch": self.schedule.iterations_per_epoch,
                "final": self.rows[-1], "best": self.best, "select_by": self.cfg.select_by,
                "wall_time": round(self.wall_time, 3), "checkpoints": sorted(self.schedule.save_at.values()),
                "stopped_early_at": self.stopped_early_at, "sparse_layers": sparse_layers_of(self.model)}


def fit(model: nn.Module, data: Any, cfg: TrainConfig, *, directory: str | Path | None = None,
        progress: bool = True, constraint: StepConstraint | None = None, start_iteration: int = 0,
        callbacks: Sequence[EpochCallback] = ()) -> dict[str, Any]:
    """Train `model` (any nn.Module) on `data`; with `directory`, checkpoint there and resume from it.

    `data` is a Dataset, or what data.user.dataset_from takes: an (x, y) pair of tensors or arrays,
    a torch Dataset (or a DataLoader's), or an .npz file's path.

    A `constraint` (e.g. sparsity.masked.MaskedTraining) is kept true at every step. Each of
    `callbacks` sees the model at every epoch end; when one returns True training stops there
    (final and best are still saved; the summary's stopped_early_at is that epoch, else None).
    Returns the summary: final and best-by-validation metrics, iterations, wall time.
    """
    if not isinstance(data, Dataset):
        data = dataset_from(*data) if isinstance(data, tuple) else dataset_from(data)
    return Trainer(model, data, cfg, Path(directory) if directory is not None else None, progress,
                   constraint=constraint, start_iteration=start_iteration, callbacks=callbacks).run()
