"""What a preset section is: a Section reads its YAML keys, checks them, adds its stages to the
study as nodes, gathers its result once they are done, and describes that result.

A new section is a file with a Section subclass and one line in sections/__init__.py. Every
section builds on the study's Context: the data, model and dense training the preset resolved
(its fallback applied), the runtime and the replicates; `Context.dense()` is the dense run the
sections prune, which one section (structured pruning, that keeps extra checkpoints and draws
early birds while it trains) may make in its own way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ticketlab.config import DataConfig, ModelConfig, Runtime, TicketlabError, TrainConfig
from ticketlab.experiments.study import Node
from ticketlab.training.stage import TrainRun, train, train_run_handle

Described = tuple[list[str], dict[str, Any]]  # the lines a person reads, and the JSON payload's entries


@dataclass(frozen=True)
class Context:
    data: DataConfig
    model: ModelConfig
    training: TrainConfig
    runtime: Runtime
    replicates: int = 1
    dense_by: tuple[Section, Any] | None = None  # the section (and its value) that makes the dense run
    stage_progress: bool = False  # whether a node's stages show their own progress (one at a time, in a terminal)
    redo_reports: bool = False  # whether result() redoes the tables it writes over the study's runs (--force)

    @property
    def node_runtime(self) -> Runtime:
        """The runtime for a node's stages: beside the study's progress line, a stage's own shows
        only when nodes run one at a time in a terminal."""
        return replace(self.runtime, progress=self.runtime.progress and self.stage_progress)

    @property
    def input_runtime(self) -> Runtime:
        """The runtime a node asks for its inputs with: done by then, and never redone by --force,
        which redoes each stage once, in its own node."""
        return as_input(self.node_runtime)

    def dense(self, runtime: Runtime | None = None) -> TrainRun:
        """The dense run (trained first if it is not done)."""
        runtime = runtime or self.runtime
        if self.dense_by is not None:
            section, value = self.dense_by
            return section.dense(value, self, runtime)
        return train(self.data, self.model, self.training, runtime)

    def dense_handle(self) -> TrainRun:
        """The dense run, finished or not, without training it."""
        if self.dense_by is not None:
            section, value = self.dense_by
            return section.dense_handle(value, self)
        return train_run_handle(self.data, self.model, self.training, self.runtime.runs_dir, self.runtime.data_dir)

    def dense_node(self) -> Node:
        handle = self.dense_handle()
        return Node(handle.run.name, make_dense, (self,), kind=handle.run.kind, runs=(handle.run.name,), trainings=1)


def as_input(runtime: Runtime) -> Runtime:
    return replace(runtime, force=False)


def make_dense(context: Context) -> None:
    context.dense(context.node_runtime)


class Section:
    """A preset section. Subclasses set `name` (its YAML key, its result's key and its JSON key)
    and override what they need; `keys` are further top-level YAML keys the section reads."""

    name: str = ""
    keys: tuple[str, ...] = ()
    makes_dense = False  # True: this section's dense() and dense_handle() give the dense run

    def parse(self, raw: Mapping[str, Any], preset: str) -> Any:
        """The section's value from the preset's YAML mapping (called when one of its keys is there)."""
        raise NotImplementedError

    def smoke(self, value: Any, overrides: Mapping[str, Any], preset: str) -> Any:
        """The value with the smoke section's entries for this section's keys applied."""
        raise TicketlabError(f"{preset}: smoke cannot change {', '.join(overrides)}")

    def check(self, value: Any) -> None:
        """Every setting, before anything trains: one-line TicketlabErrors."""

    def nodes(self, value: Any, context: Context) -> list[Node]:
        """The section's stages as study nodes (the dense run's node is the context's)."""
        raise NotImplementedError

    def result(self, value: Any, context: Context) -> Any:
        """The section's result, once its nodes are done (each stage is then read from its run)."""
        raise NotImplementedError

    def describe(self, result: Any) -> Described:
        raise NotImplementedError

    def dense(self, value: Any, context: Context, runtime: Runtime) -> TrainRun:
        raise NotImplementedError

    def dense_handle(self, value: Any, context: Context) -> TrainRun:
        raise NotImplementedError


def mapping(value: Any, where: str) -> dict[str, Any]:
    """A YAML section that must be a mapping (absent: empty)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TicketlabError(f"{where} must be a mapping of field: value")
    return value


def mean_std(mean: float, std: float, n: int, digits: int = 4) -> str:
    """`mean ± std`, or the mean alone for one replicate (its std is no measurement)."""
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"
