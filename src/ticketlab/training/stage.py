"""The dense-training stage: a cached, resumable run named by its hyperparameters.

`train(...)` returns at once when the same run already finished, resumes it when it was
interrupted, and otherwise trains from the initialisation that the seed fixes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from ticketlab import paths
from ticketlab.config import (DataConfig, ModelConfig, Runtime, TicketlabError, TrainConfig, check_kernels, from_dict,
                              non_default)
from ticketlab.data import NPZ_PREFIX, Dataset, data_digest, data_shape, load_data
from ticketlab.data.user import store_arrays
from ticketlab.models import build_model, state_shapes
from ticketlab.manifest import recorded_command
from ticketlab.stage import Stage, check_found
from ticketlab.store import find_run, runs_root
from ticketlab.training.loop import EpochCallback, Trainer
from ticketlab.training.steps import Step, parse_steps, step_name


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise TicketlabError(f"unknown device {name!r}: expected auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TicketlabError("device cuda was asked for but PyTorch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def check_runtime(runtime: Runtime) -> torch.device:
    """The device the runtime names, after checking its thread count and kernels; it changes nothing."""
    if runtime.threads < 1:
        raise TicketlabError(f"threads must be at least 1, got {runtime.threads}")
    check_kernels(runtime.kernels)
    return resolve_device(runtime.device)


def apply_runtime(runtime: Runtime) -> torch.device:
    """Set the thread count and pick the device; every entry point calls this once."""
    device = check_runtime(runtime)
    torch.set_num_threads(runtime.threads)
    return device


def train_identity(data: DataConfig, model: ModelConfig, training: TrainConfig, data_dir: str | None = None,
                   digest: str | None | bool = True) -> dict[str, Any]:
    """What names a training run: the configs' non-defaults, and for a user's data (their file,
    or their copy of a built-in set in `data_dir`) its content's SHA-256, not its path.
    digest: that SHA-256 as a finished run recorded it (None: canonical data), instead of
    locating the data again (True)."""
    identity = {"data": non_default(data), "model": non_default(model), "train": non_default(training)}
    if digest is True:
        digest = data_digest(data, data_dir)
    return identity if digest is None else {**identity, "data_sha256": digest}


def init_model(model: ModelConfig, dataset: Dataset, seed: int) -> nn.Module:
    """The model at its initialisation; the seed alone fixes the weights."""
    generator = torch.Generator().manual_seed(seed)
    return build_model(model, dataset.input_shape, dataset.num_classes, generator=generator)


@dataclass
class TrainRun(Stage):
    """A dense-training run: its directory, configs, summary and checkpoints."""

    data: DataConfig
    model_config: ModelConfig
    training: TrainConfig
    KIND = "train"
    ARTIFACTS = (paths.METRICS, paths.checkpoint("best"), paths.checkpoint("final"))
    MAY_WRITE = (paths.checkpoint("*"),)  # the steps of --save-at
    checkpoint_hint: ClassVar[str] = " (train with --save-at to keep more)"

    @staticmethod
    def describe(hparams: dict[str, Any], summary: dict[str, Any]) -> tuple[str, dict[str, float]]:
        what = f"{hparams['model']['name']} on {hparams['data']['name']}, {hparams['train']['steps']}"
        if hparams["kind"] == "earlybird":
            what = f"early birds: {what}"
        return what, summary.get("best", {})

    def dataset(self, runtime: Runtime, device: torch.device | str = "cpu") -> Dataset:
        """The data this run trained on, found as `runtime` says (its data folder and cache). Other
        data is refused in one line: a stage after training must not read a user's copy the run
        never saw, nor the canonical data for a run on a copy (a --data-dir left out)."""
        data = load_data(self.data, data_dir=runtime.data_dir, cache_dir=runtime.cache_dir, device=device)
        found = data_digest(self.data) if self.data.name.startswith(NPZ_PREFIX) else data.fingerprint
        recorded = self.run.identity.get("data_sha256")
        if found != recorded:
            def what(digest: str | None) -> str:
                return f"a copy of sha256 {digest[:12]}…" if digest else f"the canonical {self.data.name}"

            raise TicketlabError(f"{self.run.name} was trained on {what(recorded)}, but {data.source} is "
                                 f"{what(found)}; give the --data-dir that holds the data it was trained on")
        return data

    @functools.cached_property
    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every entry of this run's state_dict (built on the meta device: 12 ms for VGG-19)."""
        input_shape, num_classes = data_shape(self.data)
        return state_shapes(self.model_config, input_shape, num_classes)

    def checkpoint_name(self, step: str) -> str:
        """The file name a step's checkpoint has: `best`, `final`, or the canonical step (`500it` → `1ep109it`)."""
        if step in ("best", "final"):
            return step
        iteration = Step.parse(step).to_iterations(self.summary["iterations_per_epoch"])
        if iteration > self.summary["iterations"]:
            raise TicketlabError(f"step {step} is after the end of training ({self.training.steps})")
        return step_name(iteration, self.summary["iterations_per_epoch"])

    def state_dict(self, step: str = "final") -> dict[str, torch.Tensor]:
        """Weights saved at a step: a `--save-at` step like `0it`/`3ep`, or `best` or `final`;
        checked to be weights of this run's network (a checkpoint of another one is an error)."""
        name = self.checkpoint_name(step)
        weights = super().state_dict(name)
        expected = self.weight_shapes
        found = {key: tuple(value.shape) for key, value in weights.items()} if isinstance(weights, dict) else {}
        if found != expected:
            redo = f"{recorded_command(self.path) or 'its ticketlab train command'} --force"
            odd = sorted(set(found) ^ set(expected)) or [k for k in expected if found[k] != expected[k]]
            raise TicketlabError(f"checkpoint {self.run.file(paths.checkpoint(name))} holds weights of another "
                                 f"network (differing at {', '.join(odd[:3])}); expected {self.model_config.name}'s "
                                 f"for {self.data.name}; redo the run with `{redo}`")
        return weights


def with_checkpoints(training: TrainConfig, steps: Sequence[str]) -> TrainConfig:
    """The training config, also keeping the weights at `steps` (`best` and `final` are always kept)."""
    saved = [str(step) for step in parse_steps(training.save_at)]
    wanted = [str(Step.parse(s)) for s in steps if s not in ("best", "final")]
    missing = [s for i, s in enumerate(wanted) if s not in saved and s not in wanted[:i]]
    if not missing:
        return training
    # The user's own list stays as written, so a run they trained already is found again.
    return dataclasses.replace(training, save_at=",".join(filter(None, [training.save_at, *missing])))


def train_run_handle(data: DataConfig, model: ModelConfig, training: TrainConfig, runs_dir: str | None,
                     data_dir: str | None = None, digest: str | None | bool = True) -> TrainRun:
    """The run these hyperparameters (and the data found for them in data_dir) name, finished or not."""
    identity = train_identity(data, model, training, data_dir, digest)
    return TrainRun(TrainRun.run_for(identity, runs_dir), data, model, training)


def train(data: DataConfig | Any = DataConfig(), model: ModelConfig = ModelConfig(),
          training: TrainConfig = TrainConfig(), runtime: Runtime = Runtime()) -> TrainRun:
    """Train a zoo model densely, or return the finished run with the same hyperparameters.

    `data` is a DataConfig, or the user's own: an .npz file's path, an (x, y) pair of tensors or
    arrays, or a torch Dataset (or a DataLoader's). In-memory data is written once under the runs
    directory (data.user.store_arrays), and the run reads it from there as it would an .npz."""
    if not isinstance(data, DataConfig):
        data = user_data(data, runtime.runs_dir)
    result = train_run_handle(data, model, training, runtime.runs_dir, runtime.data_dir)
    run_training(result, data, model, training, runtime)
    return result


def user_data(data: Any, runs_dir: str | None = None) -> DataConfig:
    """The DataConfig that every cached stage takes for a user's data: an .npz file's path, or
    in-memory data (an (x, y) pair, a torch Dataset or DataLoader) stored under the runs directory."""
    if isinstance(data, (str, Path)):
        return DataConfig(name=f"{NPZ_PREFIX}{data}")
    return DataConfig(name=f"{NPZ_PREFIX}{store_arrays(data, runs_root(runs_dir).resolve())}")


def run_training(made: Stage, data: DataConfig, model: ModelConfig, training: TrainConfig, runtime: Runtime, *,
                 callbacks: Sequence[EpochCallback] = (),
                 before_finish: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Train in `made`'s run directory (resuming it if interrupted), filling in its summary and whether
    the run had finished (`cached`).

    Callbacks that can stop training or that record something must get a run of their own
    (a kind or identity of their own), since a finished run returns without training.
    `before_finish` gets the summary before the run is marked finished, to write what the
    run adds to its directory (a run killed before finishing redoes it on resume).
    """
    run = made.run

    def prepare() -> tuple[dict[str, Any], tuple[Trainer, Dataset, torch.device]]:
        device = apply_runtime(runtime)
        dataset = load_data(data, data_dir=runtime.data_dir, cache_dir=runtime.cache_dir, device=device)
        network = init_model(model, dataset, training.seed).to(device)
        # Built before anything is written: it validates every training option.
        trainer = Trainer(network, dataset, training, run.path, runtime.progress, label=run.name, callbacks=callbacks)
        hparams = {"data": dataclasses.asdict(data), "model": dataclasses.asdict(model),
                   "train": dataclasses.asdict(training), "data_source": dataset.source}
        return hparams, (trainer, dataset, device)

    def write(prepared: tuple[Trainer, Dataset, torch.device]) -> dict[str, Any]:
        trainer, dataset, device = prepared
        summary = trainer.run()
        summary.update(data_source=dataset.source, device=str(device), threads=runtime.threads)
        if before_finish is not None:
            before_finish(summary)
        return summary

    made.produce(runtime.force, prepare, write)


def find_train_run(ref: str, runs_dir: str | None = None) -> TrainRun:
    """A finished training run, by its directory or its name (`train-3fc3da0406aa`)."""
    path, hparams = find_run(ref, ["train"], runs_dir)
    data = from_dict(DataConfig, hparams["data"], f"{path}/hparams.json data")
    model = from_dict(ModelConfig, hparams["model"], f"{path}/hparams.json model")
    training = from_dict(TrainConfig, hparams["train"], f"{path}/hparams.json train")
    # The data's digest as the run recorded it: the run is found wherever its data now is.
    result = train_run_handle(data, model, training, str(path.parent),
                              digest=hparams.get("identity", {}).get("data_sha256"))
    check_found(result, path)
    return result
