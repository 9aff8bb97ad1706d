"""A preset (a built-in one or a user's YAML file): read into its dense training and its sections,
compiled into a study (a graph of stage nodes), and run.

The dense training (`data`, `model`, `train`, `replicates`), `fallback` and `smoke` are read
here; every other top-level key belongs to a section (experiments/sections/), which reads it.
Running a preset runs its study (serially, or on several workers), then asks each section for
its result, which finds every stage done.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ticketlab.config import DataConfig, ModelConfig, Runtime, TicketlabError, TrainConfig, from_dict
from ticketlab.data import DataError, load_data
from ticketlab.experiments.sections import SECTIONS, Context
from ticketlab.experiments.sections.base import mapping
from ticketlab.experiments.plan import describe_study, node_states, read_record, record_path
from ticketlab.experiments.study import Node, Outcome, check_workers, run_study
from ticketlab.presets import preset_names, preset_text
from ticketlab.stage import Stage
from ticketlab.store import check_runs_root, run_status, runs_root
from ticketlab.training.stage import TrainRun

CORE_KEYS = ("description", "data", "model", "train", "replicates", "fallback", "smoke")


@dataclass(frozen=True)
class Fallback:
    data: DataConfig
    train: TrainConfig


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    replicates: int = 1
    sections: dict[str, Any] = field(default_factory=dict)  # section name -> its value, in SECTIONS' order
    fallback: Fallback | None = None
    smoke: dict[str, Any] = field(default_factory=dict)

    def smoked(self) -> Preset:
        """The preset with its smoke overrides: generated data and a few steps."""
        if not self.smoke:
            raise TicketlabError(f"preset {self.name} has no smoke variant")
        changes: dict[str, Any] = {"fallback": None, "smoke": {}}
        if "data" in self.smoke:  # other data entirely, not a tweak of the real data's settings
            changes["data"] = from_dict(DataConfig, self.smoke["data"], f"{self.name}: smoke.data")
        if "train" in self.smoke:
            changes["train"] = from_dict(TrainConfig, {**dataclasses.asdict(self.train), **self.smoke["train"]},
                                         f"{self.name}: smoke.train")
        if "replicates" in self.smoke:
            changes["replicates"] = _replicates(self.smoke["replicates"], self.name)
        own = ("data", "train", "replicates")
        readable = {*own, *(key for section in SECTIONS.values() for key in (section.name, *section.keys))}
        for key in self.smoke:
            if key not in readable:
                raise TicketlabError(f"{self.name}: smoke cannot change {key}")
        sections = dict(self.sections)
        for name, overrides in _by_section(self.smoke, self.name, own).items():
            sections[name] = SECTIONS[name].smoke(sections.get(name), overrides, self.name)
        changes["sections"] = {name: sections[name] for name in SECTIONS if name in sections}
        return dataclasses.replace(self, **changes)


def _by_section(raw: dict[str, Any], preset: str, own: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The keys of `raw` other than `own`, grouped by the section that reads them."""
    owner = {key: name for name, section in SECTIONS.items() for key in (section.name, *section.keys)}
    unknown = sorted(set(raw) - set(own) - set(owner))
    if unknown:
        raise TicketlabError(f"{preset}: unknown section(s) {', '.join(unknown)}; "
                             f"expected some of {', '.join(sorted({*own, *owner}))}")
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        if key in owner:
            grouped.setdefault(owner[key], {})[key] = value
    return grouped


def _replicates(value: Any, preset: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TicketlabError(f"{preset}: replicates must be a whole number of at least 1")
    return value


def parse_preset(name: str, text: str) -> Preset:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TicketlabError(f"{name}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise TicketlabError(f"{name}: expected a mapping with sections data, model, train")
    configs = {key: from_dict(cls, mapping(raw.get(key), f"{name}: {key}"), f"{name}: {key}")
               for key, cls in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig))}
    grouped = _by_section(raw, name, CORE_KEYS)
    sections = {section: SECTIONS[section].parse(grouped[section], name) for section in SECTIONS if section in grouped}
    fallback = None
    if "fallback" in raw:
        section = mapping(raw["fallback"], f"{name}: fallback")
        if set(section) - {"data", "train"}:
            raise TicketlabError(f"{name}: fallback takes data and train sections only")
        train = {**dataclasses.asdict(configs["train"]), **mapping(section.get("train"), f"{name}: fallback.train")}
        fallback = Fallback(
            from_dict(DataConfig, mapping(section.get("data"), f"{name}: fallback.data"), f"{name}: fallback.data"),
            from_dict(TrainConfig, train, f"{name}: fallback.train"),
        )
    preset = Preset(name, str(raw.get("description", "")).strip(), configs["data"], configs["model"], configs["train"],
                    _replicates(raw["replicates"], name) if "replicates" in raw else 1, sections, fallback,
                    mapping(raw.get("smoke"), f"{name}: smoke"))
    if preset.smoke:
        preset.smoked()  # a broken smoke section is an error now, not when someone first runs it
    return preset


def load_preset(name_or_file: str) -> Preset:
    """A built-in preset by name, or a YAML file by path."""
    path = Path(name_or_file)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise TicketlabError(f"preset file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise TicketlabError(f"preset file {path} is not UTF-8 text; expected a YAML file") from None
        return parse_preset(path.stem, text)
    if name_or_file not in preset_names():
        raise TicketlabError(
            f"unknown preset {name_or_file!r}: expected one of {', '.join(preset_names())} or a FILE.yaml"
        )
    return parse_preset(name_or_file, preset_text(name_or_file))


@dataclass
class ExperimentResult:
    preset: Preset
    data_note: str  # which data the experiment used, and why if it is the fallback
    train: TrainRun
    sections: dict[str, Any] = field(default_factory=dict)  # section name -> its result


def check_preset(preset: Preset) -> None:
    """Every section's settings, before anything trains: a bad value costs nothing and writes nothing."""
    for name, value in preset.sections.items():
        SECTIONS[name].check(value)


def context_of(preset: Preset, runtime: Runtime = Runtime()) -> tuple[Context, str]:
    """What the sections build on, with the data resolved (the fallback's where the preset's data
    set is not here), and a note saying which data it is."""
    data, training = preset.data, preset.train
    try:
        load_data(data, data_dir=runtime.data_dir, cache_dir=runtime.cache_dir)  # parsed once: cheap to ask
        note = f"data: {data.name}"
    except DataError as missing:
        if preset.fallback is None:
            raise
        data, training = preset.fallback.data, preset.fallback.train
        note = f"data: {data.name}, because {preset.data.name} is not available here ({missing})"
    dense_by = next(((SECTIONS[name], value) for name, value in preset.sections.items()
                     if SECTIONS[name].makes_dense), None)
    return Context(data, preset.model, training, runtime, preset.replicates, dense_by), note


def study_nodes(preset: Preset, context: Context) -> list[Node]:
    """The preset as a study: the dense run, then every section's nodes (a stage two sections
    share, such as a replicate's dense run, is one node)."""
    dense = context.dense_node()
    nodes = {dense.name: dense}
    for name, value in preset.sections.items():
        for node in SECTIONS[name].nodes(value, context):
            nodes.setdefault(node.name, node)
    return list(nodes.values())


def study_runs(preset: Preset, runtime: Runtime = Runtime()) -> tuple[list[str], str]:
    """The runs a preset's study makes (finished or not), and the note on its data; nothing runs."""
    check_preset(preset)
    context, note = context_of(preset, runtime)
    return [name for node in study_nodes(preset, context) for name in node.runs], note


def run_preset(preset: Preset, runtime: Runtime = Runtime(), workers: int = 1, *, backend: str = "local",
               address: str | None = None) -> ExperimentResult:
    """Run a preset's study, then gather each section's result; every stage is cached, so a second
    run only reads them. The study runs in this process (workers=1), on `workers` local processes,
    or (backend "ray") on a local Ray or the cluster at `address` (see study.run_study)."""
    check_preset(preset)  # a bad value is reported before the data is looked for
    if backend == "local":
        check_workers(workers, runtime.threads)
    else:
        if address is not None:
            check_shared(runtime)
        # Ray's workers need not share the driver's working directory: the paths they get are absolute.
        runtime = dataclasses.replace(runtime, runs_dir=str(runs_root(runtime.runs_dir).absolute()),
                                      data_dir=runtime.data_dir and str(Path(runtime.data_dir).absolute()))
    context, note = context_of(preset, runtime)
    context = dataclasses.replace(context, stage_progress=workers == 1 and backend == "local" and sys.stderr.isatty())
    nodes = study_nodes(preset, context)
    root = runs_root(runtime.runs_dir)
    done_before = {name for node in nodes for name in node.runs if run_status(root / name) == "done"}
    outcome = run_study(nodes, workers, runtime.progress, backend=backend, address=address, threads=runtime.threads,
                        record=record_path(preset.name, nodes, runtime.runs_dir), runs_root=root)
    failed_if_any(outcome, len(nodes))
    # Gathered from the runs the study made: --force redid each of them once, in its node.
    context = dataclasses.replace(context, runtime=dataclasses.replace(runtime, force=False),
                                  redo_reports=runtime.force)
    result = ExperimentResult(preset, note, context.dense(), {name: SECTIONS[name].result(value, context)
                                                               for name, value in preset.sections.items()})
    # The study made what was missing, so every stage now reads as finished: say which were before.
    drawn = getattr(result.sections.get("structured"), "earlybird", None)
    for made in (result.train, *result.sections.values(), drawn):
        if isinstance(made, Stage):
            made.cached = made.run.name in done_before
    return result


def plan_preset(preset: Preset, runtime: Runtime = Runtime()) -> tuple[list[str], dict[str, Any]]:
    """The study a run of the preset would run, with each node's state; nothing runs."""
    check_preset(preset)
    check_runs_root(runtime.runs_dir)
    context, note = context_of(preset, runtime)
    nodes = study_nodes(preset, context)
    path = record_path(preset.name, nodes, runtime.runs_dir)
    record = read_record(path)
    lines, payload = describe_study(f"study of preset {preset.name} ({note}; runs in {runs_root(runtime.runs_dir)})",
                                    nodes, node_states(nodes, runtime.runs_dir, record), record,
                                    runs_root(runtime.runs_dir))
    return lines, {"preset": preset.name, "data_note": note, "record": str(path), **payload}


def check_shared(runtime: Runtime) -> None:
    """Workers on other machines write the runs where they see them: the runs directory must be a
    path they all see, so not relative and not in this machine's memory (tmpfs)."""
    given = runtime.runs_dir or os.environ.get("TICKETLAB_RUNS") or "runs"
    if not Path(given).is_absolute():
        raise TicketlabError(f"runs directory {given} is relative; a Ray cluster's workers need an absolute path on "
                             "a filesystem every node mounts (--runs-dir /shared/runs)")
    if _filesystem(Path(given)) in ("tmpfs", "ramfs"):
        raise TicketlabError(f"runs directory {given} is in this machine's memory (tmpfs); a Ray cluster's workers "
                             "need it on a filesystem every node mounts (NFS, a cluster filesystem)")


def _filesystem(path: Path) -> str:
    """The type of the filesystem that holds `path` (the longest mount point above it)."""
    path = path.resolve()
    best, kind = "", ""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    for line in mounts:
        fields = line.split()
        if len(fields) > 2 and len(fields[1]) > len(best):
            mount = Path(fields[1])
            if path == mount or mount in path.parents:
                best, kind = fields[1], fields[2]
    return kind


def failed_if_any(outcome: Outcome, total: int) -> None:
    """A study with failed nodes ends in one error: the only failure's own, or a count (each failure
    was named as it happened)."""
    if not outcome.failed:
        return
    skipped = f"; {len(outcome.skipped)} skipped as they needed it" if outcome.skipped else ""
    if len(outcome.failed) == 1:
        [(name, error)] = outcome.failed.items()
        raise TicketlabError(f"{error} (in {name}{skipped}; {len(outcome.done)} of {total} stages are done and kept)")
    raise TicketlabError(f"{len(outcome.failed)} of {total} stages failed (each named above){skipped}; "
                         f"{len(outcome.done)} are done and kept: fix the cause and run the same command again")
