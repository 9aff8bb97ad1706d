"""Running a preset: its stages in order, each one cached, with the data fallback resolved first."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ticketlab.analysis.sweep import DEFAULT_KS, SweepResult, normalise_ks, sweep
from ticketlab.comparison import Comparison, compare_masks, comparison_nodes
from ticketlab.config import DataConfig, PruneConfig, Runtime, TicketlabError, TrainConfig
from ticketlab.data import DataError, load_data
from ticketlab.experiments.builders import lottery_nodes
from ticketlab.experiments.study import Node, check_workers, run_study
from ticketlab.lottery.experiment import LotteryExperiment, run_lottery
from ticketlab.lottery.levels import check_settings
from ticketlab.presets import Preset
from ticketlab.report.lottery import LotteryReport, write_report
from ticketlab.search.anneal import check_config
from ticketlab.sparsity.prune import PruneRun, check_prune_config, prune
from ticketlab.structured_experiment import StructuredExperiment, check_sections, run_structured
from ticketlab.training.stage import TrainRun, train


@dataclass
class ExperimentResult:
    preset: Preset
    data_note: str  # which data the experiment used, and why if it is the fallback
    train: TrainRun
    prune: PruneRun | None = None
    sweep: SweepResult | None = None
    lottery: LotteryExperiment | None = None
    lottery_report: LotteryReport | None = None
    comparison: Comparison | None = None
    structured: StructuredExperiment | None = None


def _independent_stages(preset: Preset, data: DataConfig, training: TrainConfig, runtime: Runtime) -> list[Node]:
    """The stages of the preset's comparison and lottery sections as one study (a dense run both
    need is one node)."""
    nodes: dict[str, Node] = {}
    if preset.compare is not None:
        nodes |= {node.name: node for node in comparison_nodes(
            data, preset.model, training, preset.compare.methods, preset.compare.sparsities, runtime,
            replicates=preset.replicates, rewind=preset.compare.rewind)}
    if preset.lottery is not None:
        nodes |= {node.name: node for node in lottery_nodes(
            data, preset.model, training, preset.lottery, runtime, replicates=preset.replicates,
            controls=preset.controls, control_levels=preset.control_levels)}
    return list(nodes.values())


def _run_in_parallel(nodes: list[Node], workers: int, progress: bool) -> None:
    outcome = run_study(nodes, workers, progress)
    if outcome.failed:
        raise TicketlabError(f"{len(outcome.failed)} of {len(nodes)} stages failed (each named above), "
                             f"{len(outcome.skipped)} skipped as they needed one; {len(outcome.done)} are done and "
                             "kept: fix the cause and run the same command again")


def check_preset(preset: Preset) -> None:
    """Every section's settings, before anything trains: a bad value costs nothing and writes nothing."""
    if preset.earlybird is not None or preset.shrink:
        check_sections(preset.earlybird, preset.shrink)
    if preset.prune is not None:
        check_prune_config(preset.prune)
    if preset.lottery is not None:
        check_settings(preset.lottery)
    for method in preset.compare.methods if preset.compare is not None else ():
        for sparsity in preset.compare.sparsities:
            config = dataclasses.replace(method.config, sparsity=sparsity)
            if isinstance(config, PruneConfig):
                check_prune_config(config)
            else:
                check_config(config)
    if preset.sweep is not None:
        normalise_ks(preset.sweep.get("ks", DEFAULT_KS))


def run_preset(preset: Preset, runtime: Runtime = Runtime(), workers: int = 1) -> ExperimentResult:
    """Run a preset's sections in order, each stage cached. With workers > 1, the stages that do
    not depend on each other (a comparison's and a lottery's: builders.py, comparison_nodes) run
    first on that many processes; the sections then find them done."""
    check_preset(preset)  # a bad value is reported before the data is looked for
    check_workers(workers, runtime.threads)
    structured = preset.earlybird is not None or bool(preset.shrink)
    data, training = preset.data, preset.train
    try:
        load_data(data, data_dir=runtime.data_dir)  # cached after the first call: cheap to ask
        note = f"data: {data.name}"
    except DataError as missing:
        if preset.fallback is None:
            raise
        data, training = preset.fallback.data, preset.fallback.train
        note = f"data: {data.name}, because {preset.data.name} is not available here ({missing})"
    if workers > 1:
        _run_in_parallel(_independent_stages(preset, data, training, runtime), workers, runtime.progress)
    if structured:  # its dense run keeps the checkpoints it prunes at (and draws early birds)
        drawn = run_structured(data, preset.model, training, preset.earlybird, preset.shrink, runtime)
        result = ExperimentResult(preset, note, drawn.dense, structured=drawn)
    else:
        result = ExperimentResult(preset, note, train(data, preset.model, training, runtime))
    if preset.prune is not None:
        result.prune = prune(result.train, preset.prune, runtime)
    if preset.lottery is not None:
        result.lottery = run_lottery(data, preset.model, training, preset.lottery, runtime,
                                     replicates=preset.replicates, controls=preset.controls,
                                     control_levels=preset.control_levels)
        result.lottery_report = write_report(result.lottery, runtime)
    if preset.compare is not None:
        result.comparison = compare_masks(data, preset.model, training, preset.compare.methods,
                                          preset.compare.sparsities, runtime, replicates=preset.replicates,
                                          rewind=preset.compare.rewind)
    if preset.sweep is not None:
        result.sweep = sweep(result.train, preset.sweep.get("ks", DEFAULT_KS), step=preset.sweep.get("step", "best"),
                             runtime=runtime)
    return result
