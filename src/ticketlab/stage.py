"""One kind of cached stage, declared in one class: what names its runs, the files they hold,
how they are made, read back and described.

A stage kind subclasses `Stage` and declares

- `KIND`: the first part of its runs' names (`prune-3fc3da0406aa`); the class registers under it;
- `ARTIFACTS`: the files (glob patterns, names from paths.py) every finished run of the kind holds,
  and `MAY_WRITE` the ones some hold; a stage that writes a file it does not declare, or misses
  one it does, is a bug, and its run stops unfinished saying so;
- its inputs as dataclass fields, and the identity they give (`run_for` names the run);
- `describe(hparams, summary)`: the few words and metrics `ticketlab runs` shows of a finished run;
- how it reads its artifacts back (`state_dict`, `mask`, ...).

Making the run is `produce(force, prepare, write)`: the one protocol (done → lock → claim →
start → write → finish, every file atomic and checksummed) is `store.Run.produce`'s, and this
adds the artifact check. The stage function (`prune(...)`, `search(...)`) passes its compute as
`prepare`, everything that writes nothing, and `write`.
"""

from __future__ import annotations

import fnmatch
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from ticketlab.config import TicketlabError
from ticketlab.manifest import read_manifest, repair_hint
from ticketlab.paths import CHECKPOINTS, HPARAMS, checkpoint
from ticketlab.store import P, Run, load_checkpoint

STAGES: dict[str, type[Stage]] = {}  # kind -> its class; filled as the stage modules are imported
# The modules that declare the stage kinds (by name: they stand on this module, not it on them).
STAGE_MODULES = ("ticketlab.training.stage", "ticketlab.sparsity.prune", "ticketlab.lottery.retrain",
                 "ticketlab.lottery.report", "ticketlab.search.stage", "ticketlab.structure.stage",
                 "ticketlab.structure.retrain", "ticketlab.structure.earlybird", "ticketlab.analysis.sweep",
                 "ticketlab.analysis.valsize", "ticketlab.analysis.sensitivity", "ticketlab.analysis.similarity",
                 "ticketlab.analysis.orthogonality", "ticketlab.experiments.comparison",
                 "ticketlab.experiments.structured")


@dataclass
class Stage:
    """A run of one stage kind: its directory, the run's summary, and whether the run had finished
    before this call (`cached`). Subclasses add their inputs as fields."""

    run: Run
    summary: dict[str, Any] = field(default_factory=dict, kw_only=True)
    cached: bool = field(default=False, kw_only=True)

    KIND: ClassVar[str] = ""
    ARTIFACTS: ClassVar[tuple[str, ...]] = ()  # every finished run holds these
    MAY_WRITE: ClassVar[tuple[str, ...]] = ()  # some runs hold these too
    checkpoint_hint: ClassVar[str] = ""  # how to keep more checkpoints, for the missing-checkpoint error

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        kind = cls.__dict__.get("KIND")
        if kind:
            if kind in STAGES and STAGES[kind].__qualname__ != cls.__qualname__:
                raise TypeError(f"stage kind {kind!r} is declared twice: {STAGES[kind].__qualname__} and "
                                f"{cls.__qualname__}")
            STAGES[kind] = cls

    @classmethod
    def run_for(cls, identity: dict[str, Any], runs_dir: str | Path | None) -> Run:
        """The run directory of this kind that `identity` names, finished or not."""
        return Run(cls.KIND, identity, runs_dir)

    @staticmethod
    def describe(hparams: dict[str, Any], summary: dict[str, Any]) -> tuple[str, dict[str, float]]:
        """A finished run's few words and key metrics (val_acc, test_acc), from hparams.json and summary.json."""
        return hparams["kind"], {}

    @property
    def path(self) -> Path:
        return self.run.path

    def produce(self, force: bool, prepare: Callable[[], tuple[dict[str, Any], P]],
                write: Callable[[P], dict[str, Any]]) -> None:
        """Make the run (or find it finished): `store.Run.produce`, with the declared artifacts checked."""
        def written(prepared: P) -> dict[str, Any]:
            summary = write(prepared)
            check_artifacts(type(self), self.run.path)
            return summary

        self.summary, self.cached = self.run.produce(force, prepare, written)

    def state_dict(self, step: str = "final") -> dict[str, torch.Tensor]:
        """The weights saved as checkpoints/<step>.pt."""
        path = self.run.file(checkpoint(step))
        if not path.exists():
            saved = sorted(p.stem for p in self.run.file(CHECKPOINTS).glob("*.pt"))
            raise TicketlabError(f"run {self.run.name} has no checkpoint {step!r}; saved: {', '.join(saved)}"
                                 f"{self.checkpoint_hint}")
        return load_checkpoint(path)["model"]


def check_artifacts(stage: type[Stage], path: Path) -> None:
    """That the run at `path` holds every file its kind declares, and no file it does not."""
    written = [name for name in read_manifest(path) or {} if name != HPARAMS]
    undeclared = [name for name in written
                  if not any(fnmatch.fnmatch(name, pattern) for pattern in stage.ARTIFACTS + stage.MAY_WRITE)]
    missing = [pattern for pattern in stage.ARTIFACTS if not any(fnmatch.fnmatch(name, pattern) for name in written)]
    if undeclared or missing:
        raise RuntimeError(f"bug: stage {stage.KIND} ({stage.__qualname__}) "
                           + (f"wrote {', '.join(undeclared)}, not in its ARTIFACTS or MAY_WRITE" if undeclared else
                              f"did not write its artifacts {', '.join(missing)}"))


def check_found(found: Stage, path: Path) -> None:
    """A run found by name must be the one its hparams name, and finished; then its summary is read."""
    if found.run.path.resolve() != path.resolve():
        raise TicketlabError(f"{path} does not match its hparams.json (renamed or edited?); rerun it")
    if not found.run.done:
        raise TicketlabError(f"run {found.run.name} has not finished; run its command again to resume it")
    problem = found.run.problem()
    if problem is not None:
        raise TicketlabError(f"run {found.run.name}: {problem}{repair_hint(path)}")
    found.summary = found.run.summary()


def import_stage_kinds() -> None:
    """Import every module that declares a stage kind, so that STAGES holds them all."""
    for module in STAGE_MODULES:
        importlib.import_module(module)


def describe(row: dict[str, Any]) -> tuple[str, dict[str, float]]:
    """A listed run's few words and key metrics (none for an unfinished or damaged run), by its kind's
    `describe`; import_stage_kinds() first."""
    stage = STAGES.get(row["kind"])
    if stage is None or row["status"] == "corrupt":
        return row["kind"] or "?", {}
    try:
        what, metrics = stage.describe(row["hparams"], row["summary"])
    except (KeyError, TypeError, ValueError, AttributeError):  # a run of an older version, or edited by hand
        return f"{row['kind']} (unreadable hparams)", {}
    return what, metrics if row["status"] == "done" else {}
