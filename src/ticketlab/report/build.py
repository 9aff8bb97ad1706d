"""What a study found, as one HTML page (html.py): the runs a preset's study made, or given runs
and the runs they were made from, each kind shown by its section writer below.

A section writer takes the finished runs and returns the page's section for them (or None when
there is nothing of its kind): adding one is a function and a line in WRITERS.
"""

from __future__ import annotations

import csv
import json
import math
import re
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ticketlab import paths
from ticketlab.analysis.orthogonality import OrthogonalityRun, orthogonality_identity, orthogonality_table
from ticketlab.analysis.similarity import (MEASURES, RANDOM_PREFIX, SimilarityRun, similarity_identity,
                                           similarity_matrix, with_random_floor)
from ticketlab.config import TicketlabError
from ticketlab.lottery.report import COLUMNS as LOTTERY_COLUMNS
from ticketlab.lottery.report import TICKET, level_row
from ticketlab.manifest import problem, repair_hint, verified_bytes
from ticketlab.report import figures
from ticketlab.report.html import Figure, Section, Table, render
from ticketlab.search.history import HELD_OUT
from ticketlab.sparsity.mask import Mask
from ticketlab.stage import describe, import_stage_kinds
from ticketlab.store import list_runs, load_checkpoint, read_json, run_status, runs_root

RUN_NAME = re.compile(r"^[a-z]+-[0-9a-f]{12}$")
REPORT_KINDS = ("lottery", "comparison", "structured", "valsize")  # runs over other runs, made as a study ends


@dataclass
class RunView:
    """A finished run as the report reads it."""

    name: str
    kind: str
    path: Path
    hparams: dict[str, Any]
    summary: dict[str, Any]
    # Tables read so far: several sections read one run's (a search's history, a comparison's runs).
    _tables: dict[str, list[dict[str, str]]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def command(self) -> str | None:
        return self.hparams.get("command")

    def rows(self, name: str) -> list[dict[str, str]]:
        if name not in self._tables:
            self._tables[name] = list(csv.DictReader(verified_bytes(self.path / name, "table").decode().splitlines()))
        return self._tables[name]

    def json(self, name: str) -> Any:
        return read_json(self.path / name)

    def inputs(self) -> list[str]:
        """The runs named in this run's identity: what it was made from."""
        found: list[str] = []

        def walk(value: Any) -> None:
            if isinstance(value, str) and RUN_NAME.match(value):
                found.append(value)
            elif isinstance(value, dict):
                for item in value.values():
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        walk(self.hparams.get("identity", {}))
        return found


def finished_runs(runs_dir: str | Path | None) -> dict[str, RunView]:
    rows = list_runs(runs_dir)
    return {row["name"]: RunView(row["name"], row["kind"], Path(row["path"]), row["hparams"], row["summary"])
            for row in rows if row["status"] == "done"}


def with_inputs(names: Iterable[str], runs: dict[str, RunView]) -> list[str]:
    """The runs, and every run they were made from (transitively), finished ones only."""
    chosen: dict[str, None] = {}
    stack = [name for name in names if name in runs]
    while stack:
        name = stack.pop()
        if name not in chosen:
            chosen[name] = None
            stack += [found for found in runs[name].inputs() if found in runs]
    return list(chosen)


def with_reports(names: Sequence[str], runs: dict[str, RunView]) -> list[str]:
    """The runs, and the report runs made over them alone (a comparison's table, a lottery's)."""
    have = set(names)
    reports = [view.name for view in runs.values()
               if view.kind in REPORT_KINDS and view.name not in have and view.inputs() and set(view.inputs()) <= have]
    return [*names, *reports]


# --- the sections ---------------------------------------------------------------------------

Writer = Callable[[list[RunView], dict[str, RunView]], Section | None]


def _of(runs: list[RunView], *kinds: str) -> list[RunView]:
    return [run for run in runs if run.kind in kinds]


def _float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def overview(runs: list[RunView], _: dict[str, RunView]) -> Section:
    rows = []
    for run in runs:
        what, metrics = describe({"kind": run.kind, "status": "done", "hparams": run.hparams, "summary": run.summary})
        rows.append({"run": run.name, "kind": run.kind, "what": what, "val_acc": metrics.get("val_acc"),
                     "test_acc": metrics.get("test_acc")})
    return Section("Runs", "Every run this report reads, with its key metrics (trainings: at the best step by "
                           "validation; masks: the masked network before retraining).",
                   [Table(rows, ("run", "kind", "what", "val_acc", "test_acc"), "The runs.", "runs.csv",
                          "ticketlab runs")])


def _curve(run: RunView, column: str) -> figures.Series:
    rows = [row for row in run.rows(paths.METRICS) if not math.isnan(_float(row[column]))]
    return [_float(row["epoch"]) for row in rows], [_float(row[column]) for row in rows], None


def _training_curves(labelled: list[tuple[str, RunView]]) -> bytes:
    """Training loss and validation accuracy per epoch, a line per (label, training run)."""
    panels = {"training loss (per epoch)": "train_loss", "validation accuracy (fraction)": "val_acc"}
    return figures.panels({ylabel: {label: _curve(run, column) for label, run in labelled}
                           for ylabel, column in panels.items()}, xlabel="epoch")


def _train_label(run: RunView) -> str:
    train = run.hparams.get("train", {})
    return f"{run.hparams.get('model', {}).get('name', '?')} seed {train.get('seed', '?')} ({run.name})"


def trainings(runs: list[RunView], _: dict[str, RunView]) -> Section | None:
    dense = _of(runs, "train", "earlybird")
    if not dense:
        return None
    png = _training_curves([(_train_label(run), run) for run in dense])
    rows = [{"run": run.name, "model": run.hparams["model"]["name"], "data": run.hparams["data"]["name"],
             "steps": run.hparams["train"]["steps"], "seed": run.hparams["train"]["seed"],
             "best_step": run.summary["best"]["step"], "val_acc": run.summary["best"]["val_acc"],
             "test_acc": run.summary["best"]["test_acc"]} for run in dense]
    return Section("Dense trainings", "The dense networks every mask was drawn from.", [
        Figure(png, "Training loss and validation accuracy of each dense run, per epoch.",
               dense[0].command),
        Table(rows, tuple(rows[0]), "Each dense run at its best step by validation loss.", "dense.csv")])


def _remaining_pct(sparsity: float) -> float:
    return 100 * (1 - sparsity)


def sweeps(runs: list[RunView], _: dict[str, RunView]) -> Section | None:
    blocks: list[Figure | Table] = []
    for run in _of(runs, "sweep"):
        rows = run.rows(paths.SWEEP_TABLE)
        by_method = {method: [r for r in rows if r["method"] == method]
                     for method in dict.fromkeys(r["method"] for r in rows)}

        def series(column: str) -> dict[str, figures.Series]:
            return {f"{method} pruning": ([_remaining_pct(_float(r["sparsity"])) for r in mine],
                                          [_float(r[column]) for r in mine], None)
                    for method, mine in by_method.items()}

        png = figures.panels({"test accuracy (fraction)": series("test_acc"), "test loss (cross-entropy)":
                              series("test_loss")}, xlabel="weights remaining (%, log scale)",
                             references={"test accuracy (fraction)": ("dense", run.summary["dense_test_acc"]),
                                         "test loss (cross-entropy)": ("dense", run.summary["dense_test_loss"])},
                             log_x=True, reverse_x=True)
        blocks.append(Figure(png, f"Sweep of {run.summary['train']}: test accuracy and loss under magnitude pruning "
                                  "of single weights and of whole units, per layer (the output layer kept), without "
                                  "retraining.", run.command))
        blocks += _histograms(run)
        blocks.append(Table(rows, list(rows[0]), f"The sweep's table ({run.name}).", f"{run.name}.csv", run.command))
    return Section("Weight and unit pruning without retraining", "", blocks) if blocks else None


SWEEP_XLABELS = {"weight": "|w| of the weights left", "unit": "norm of each unit's incoming weights"}


def _histograms(run: RunView) -> list[Figure]:
    """What survives each k: at four ks side by side, per method, and an animation over every k."""
    if not (run.path / paths.SWEEP_HISTOGRAMS).exists():  # a sweep made before histograms were data
        return []
    saved = run.json(paths.SWEEP_HISTOGRAMS)
    blocks: list[Figure] = []
    methods = [method for method in ("weight", "unit") if method in saved["counts"]]
    ks = sorted(saved["counts"][methods[0]], key=float)
    shown = list(dict.fromkeys(ks[round(i * (len(ks) - 1) / 3)] for i in range(4)))
    for method in methods:
        by_k = saved["counts"][method]
        png = figures.histograms({f"k = {k}": by_k[k] for k in shown}, saved["ranges"][method],
                                 xlabel=SWEEP_XLABELS[method])
        blocks.append(Figure(png, f"{method.capitalize()} pruning of {run.summary['train']}: {saved['values'][method]}, "
                                  f"per layer, at k = {', '.join(shown)} ({saved['bins']} bins over the dense "
                                  "network's range; log count).", run.command))
    frames = [[figures.histograms({f"{method} pruning, k = {k}": saved["counts"][method][k]}, saved["ranges"][method],
                                  xlabel=SWEEP_XLABELS[method], title=f"{method} pruning, k = {k}")
               for method in methods] for k in ks]
    blocks.append(Figure(figures.animation(frames), f"The same histograms at every k of the sweep, one frame per k "
                         f"(k = {ks[0]} to {ks[-1]}; weight pruning above, unit pruning below; a printed page shows "
                         "the first frame).", run.command, mime="image/gif"))
    return blocks


def sensitivities(runs: list[RunView], _: dict[str, RunView]) -> Section | None:
    blocks: list[Figure | Table] = []
    for run in _of(runs, "sensitivity"):
        rows = run.rows(paths.SENSITIVITY_TABLE)
        series = {layer: ([_remaining_pct(_float(r["sparsity"])) for r in rows if r["layer"] == layer],
                          [_float(r["val_acc"]) for r in rows if r["layer"] == layer], None)
                  for layer in dict.fromkeys(r["layer"] for r in rows)}
        png = figures.panels({"validation accuracy (fraction)": series}, xlabel="weights of the layer remaining "
                             "(%, log scale)", references={"validation accuracy (fraction)": (
                                 "dense", run.summary["dense_val_acc"])}, log_x=True, reverse_x=True, width=7)
        blocks.append(Figure(png, f"Layer sensitivity of {run.summary['train']}: each layer pruned alone by weight "
                                  "magnitude, the others dense, without retraining; validation accuracy.",
                             run.command))
        blocks.append(Table(rows, list(rows[0]), f"The sensitivity table ({run.name}).", f"{run.name}.csv",
                            run.command))
    return Section("Layer sensitivity", "", blocks) if blocks else None


def lotteries(runs: list[RunView], all_runs: dict[str, RunView]) -> Section | None:
    blocks: list[Figure | Table] = []
    for run in _of(runs, "lottery"):
        rows = run.rows(paths.TABLE)
        replicates = run.summary.get("replicates", 1)
        blocks.append(Figure(_lottery_figure(rows), f"Lottery tickets and their controls by level: mean ± std over "
                             f"{replicates} replicate(s): test accuracy at the step of best validation loss, and that "
                             "step (the early-stop iteration: how fast a network learns).", run.command))
        blocks.append(Table(rows, list(rows[0]), "The lottery's table: each procedure and level.", f"{run.name}.csv",
                            run.command))
    blocks += _loose_levels(runs, all_runs)
    return Section("Iterative magnitude pruning (lottery tickets)", "", blocks) if blocks else None


def _lottery_figure(rows: Sequence[dict[str, Any]]) -> bytes:
    """Test accuracy and early-stop iteration against % of weights remaining, a line per procedure
    (the tickets, each control), mean ± std; level 0, the dense network, as the reference line."""
    dense = next((r for r in rows if r["procedure"] == TICKET and str(r["level"]) == "0"), None)
    panels: dict[str, dict[str, figures.Series]] = {"test accuracy at the best step": {}, "early-stop iteration": {}}
    for procedure in dict.fromkeys(r["procedure"] for r in rows):
        mine = [r for r in rows if r["procedure"] == procedure and str(r["level"]) != "0"]
        x = [_float(r["remaining_pct"]) for r in mine]
        for ylabel, column in (("test accuracy at the best step", "test_acc"), ("early-stop iteration", "early_stop")):
            panels[ylabel][procedure] = (x, [_float(r[f"{column}_mean"]) for r in mine],
                                         [_float(r[f"{column}_std"]) for r in mine])
    references = {"test accuracy at the best step": ("dense", _float(dense["test_acc_mean"])),
                  "early-stop iteration": ("dense", _float(dense["early_stop_mean"]))} if dense else None
    return figures.panels(panels, xlabel="weights remaining (%, log scale)", references=references, log_x=True,
                          reverse_x=True)


def _setting(level: RunView) -> str:
    return json.dumps(level.hparams["lottery"], sort_keys=True)


def _loose_levels(runs: list[RunView], all_runs: dict[str, RunView]) -> list[Figure | Table]:
    """Levels and controls that no lottery report here covers (a lottery still running, or runs
    named alone), tabulated like a lottery report, one per lottery setting. IMP's levels in a
    comparison are the comparison's."""
    covered = {name for run in _of(runs, "lottery") for name in run.hparams["identity"]["runs"]}
    compared = set()
    for comparison in _of(runs, "comparison"):
        for row in comparison.rows(paths.RUNS_TABLE):
            imp = all_runs.get(row["mask_run"])
            if imp is not None and imp.kind == "level":
                compared.add((imp.hparams["dense"], _setting(imp)))
    lotteries: dict[str, dict[tuple[str, int], dict[str, dict[str, Any]]]] = {}  # setting -> row -> run -> summary
    for run in _of(runs, "level", "control"):
        level = run if run.kind == "level" else all_runs.get(run.hparams["identity"]["level"])
        if run.name in covered or level is None or (level.hparams["dense"], _setting(level)) in compared:
            continue
        groups = lotteries.setdefault(_setting(level), {})
        procedure = TICKET if run.kind == "level" else run.hparams["control"]
        groups.setdefault((procedure, level.hparams["level"]), {})[run.name] = run.summary
        dense = all_runs.get(level.hparams["dense"])
        if dense is not None:
            groups.setdefault((TICKET, 0), {})[dense.name] = dense.summary
    blocks: list[Figure | Table] = []
    for setting, groups in lotteries.items():
        order = sorted(groups, key=lambda key: (key[0] != TICKET, key[0], key[1]))
        rows = [level_row(procedure, level, list(groups[procedure, level].values())) for procedure, level in order]
        cfg = json.loads(setting)
        what = (f"rate {cfg['rate']:g} ({cfg['scope']}, {cfg['criterion']}), rewind {cfg['rewind']}, "
                f"{cfg['levels']} level(s)")
        blocks.append(Figure(_lottery_figure(rows), f"Lottery levels and controls made so far ({what}) that no "
                             "lottery report covers yet: mean ± std over the replicates done at each level; test "
                             "accuracy at the best step by validation loss, and that step."))
        blocks.append(Table(rows, LOTTERY_COLUMNS, f"The levels and controls made so far ({what}).",
                            "lottery-levels.csv"))
    return blocks


def _mask(run: RunView) -> Mask:
    return Mask.load(run.path / paths.MASK)


def comparisons(runs: list[RunView], all_runs: dict[str, RunView]) -> Section | None:
    blocks: list[Figure | Table] = []
    for run in _of(runs, "comparison"):
        rows, per_run = run.rows(paths.TABLE), run.rows(paths.RUNS_TABLE)
        blocks.append(Table(rows, list(rows[0]), "Masks compared: test accuracy at the rewind step (before "
                            "retraining) and after retraining from it, mean and std over replicates.",
                            f"{run.name}.csv", run.command))
        blocks += _best_so_far(per_run, all_runs, run.command)
        for sparsity in dict.fromkeys(r["sparsity"] for r in per_run):
            mine = [r for r in per_run if r["sparsity"] == sparsity and r["replicate"] == "0"]
            made = [(r["method"], all_runs[r["mask_run"]]) for r in mine if r["mask_run"] in all_runs]
            dense = next((run.hparams["train"] for _, run in made if isinstance(run.hparams.get("train"), str)), None)
            blocks += _trainability(mine, all_runs, sparsity) + _mask_blocks(
                made, all_runs, f"at sparsity {sparsity}", dense, run.hparams.get("rewind", "0it"))
    return Section("Masks compared", "Each method's masks at each sparsity, retrained from the rewind step; "
                                     "the figures show the first replicate.", blocks) if blocks else None


def _best_so_far(per_run: list[dict[str, str]], all_runs: dict[str, RunView], command: str | None) -> list[Figure]:
    """Each search's best objective so far against evaluations (mean over replicates), each other
    method's objective score as a flat line, one panel per sparsity."""
    # A search scored on another objective than the comparison's is a flat line at that score, like a criterion
    # (comparisons made before runs.csv said so drew every search's own history).
    histories = {r["mask_run"]: [_float(row["best"]) for row in all_runs[r["mask_run"]].rows(paths.HISTORY)]
                 for r in per_run if r["mask_run"] in all_runs and all_runs[r["mask_run"]].kind == "search"
                 and r.get("searched_objective", "True") == "True"}
    if not histories:
        return []
    budget = max(len(curve) for curve in histories.values())
    panels: dict[str, dict[str, figures.Series]] = {}
    for sparsity in dict.fromkeys(r["sparsity"] for r in per_run):
        series: dict[str, figures.Series] = {}
        for method in dict.fromkeys(r["method"] for r in per_run):
            mine = [r for r in per_run if r["sparsity"] == sparsity and r["method"] == method]
            curves = [histories[r["mask_run"]] for r in mine if r["mask_run"] in histories]
            if curves:
                length = min(len(curve) for curve in curves)
                series[method] = (list(range(1, length + 1)),
                                  [statistics.fmean(curve[i] for curve in curves) for i in range(length)], None)
            elif mine and all(r["search_score"] for r in mine):  # no score: an objective that trains first
                score = statistics.fmean(_float(r["search_score"]) for r in mine)
                series[method] = ([1, budget], [score, score], None)
        panels[f"best objective so far, sparsity {_float(sparsity):g}"] = series
    return [Figure(figures.panels(panels, xlabel="evaluations"), "The best objective score found against the "
                   "evaluations spent (mean over replicates; a criterion's mask, which spends none, as a flat line "
                   "at its score on the same objective).", command)]


def _trainability(mine: list[dict[str, str]], all_runs: dict[str, RunView], sparsity: str) -> list[Figure]:
    tickets = [(r["method"], all_runs[r["ticket_run"]]) for r in mine if r["ticket_run"] in all_runs]
    if not tickets:
        return []
    return [Figure(_training_curves(tickets), f"Trainability at sparsity {sparsity}: training loss and validation "
                   "accuracy of each method's ticket as it retrains.", tickets[0][1].command)]


def _mask_blocks(made: list[tuple[str, RunView]], all_runs: dict[str, RunView], where: str, dense: str | None,
                 step: str = "0it") -> list[Figure | Table]:
    """How alike the masks are (with the random floor), their per-layer sparsity, and the
    orthogonality of the weights of training `dense` at `step` they leave; `where` says which masks
    these are. A study's similarity and orthogonality runs are read; masks outside one are compared here."""
    if not made:
        return []
    masks = with_random_floor({label: _mask(run) for label, run in made})
    labels, tag = list(masks), where.replace(" ", "-")
    pairs, root = [(label, run.name) for label, run in made], made[0][1].path.parent
    saved = all_runs.get(SimilarityRun.run_for(similarity_identity(pairs), root).name)
    matrices = saved.json(paths.SIMILARITY) if saved else {measure: similarity_matrix(masks, measure)
                                                           for measure in MEASURES}
    blocks: list[Figure | Table] = [Figure(
        figures.matrix(matrices["cosine"], labels, colorbar="cosine similarity", vmin=0, vmax=1),
        f"Mask similarity {where}: cosine similarity of the flattened masks; random-1 and random-2 keep as many "
        "weights of each layer as the first and mark the floor of chance overlap.",
        saved.command if saved else None)]
    table = [{"a": labels[i], "b": labels[j], **{measure: matrices[measure][i][j] for measure in MEASURES}}
             for i in range(len(labels)) for j in range(i + 1, len(labels))]
    blocks.append(Table(table, ("a", "b", *MEASURES), f"Every pair of masks {where}: cosine, Jaccard of the kept "
                        "sets, normalised Hamming distance.", f"similarity-{tag}.csv"))
    layers = list(dict.fromkeys(name for mask in masks.values() for name in mask))  # a unit mask covers biases too
    pruned = {label: {layer.name: 100 * layer.sparsity for layer in mask.layers()} for label, mask in masks.items()
              if not label.startswith(f"{RANDOM_PREFIX}-")}
    blocks.append(Figure(figures.bars(layers, {label: [of.get(name, math.nan) for name in layers]
                                               for label, of in pruned.items()}, ylabel="pruned (%)"),
                         f"Per-layer sparsity of each mask {where} (no bar: a parameter the mask does not cover)."))
    if dense is None:
        return blocks
    saved = all_runs.get(OrthogonalityRun.run_for(orthogonality_identity(pairs, dense, step), root).name)
    if saved is not None:
        rows: list[dict[str, Any]] = saved.rows(paths.ORTHOGONALITY_TABLE)
    elif dense in all_runs and (all_runs[dense].path / paths.checkpoint(step)).exists():
        rows = orthogonality_table(load_checkpoint(all_runs[dense].path / paths.checkpoint(step))["model"], masks)
    else:
        return blocks
    blocks.append(Table(rows, list(rows[0]), f"Orthogonality of the weights of {dense} at {step} under each mask "
                        f"{where}, per layer: mean((WᵀW − I)²), W out × in (Lee et al. 2020); higher means worse "
                        "signal propagation.", f"orthogonality-{tag}.csv", saved.command if saved else None))
    return blocks


def masks(runs: list[RunView], all_runs: dict[str, RunView]) -> Section | None:
    """Masks that no comparison in the report covers, of one model each (as their training says)."""
    compared = {row["mask_run"] for run in _of(runs, "comparison") for row in run.rows(paths.RUNS_TABLE)}
    loose = [run for run in _of(runs, "prune", "search") if run.name not in compared]
    by_training: dict[str, list[RunView]] = {}
    for run in loose:
        by_training.setdefault(run.hparams.get("train", ""), []).append(run)
    blocks: list[Figure | Table] = []
    for train, mine in by_training.items():
        blocks += _mask_blocks([(run.name, run) for run in mine], all_runs, f"of {train}", train or None)
    return Section("Masks", "Masks of the same dense run side by side.", blocks) if blocks else None


def searches(runs: list[RunView], _: dict[str, RunView]) -> Section | None:
    blocks: list[Figure | Table] = []
    ordered = sorted(_of(runs, "search"), key=lambda run: (run.hparams["search"]["sparsity"], str(run.hparams["train"])))
    for run in ordered:  # by sparsity, then by the training searched
        history = run.rows(paths.HISTORY)
        if not history or "step" not in history[0]:
            continue
        cfg = run.hparams["search"]
        held = run.summary["best"].get("held_out", {})
        test = (held.get("test") or {}).get("accuracy")
        blocks.append(Figure(_search_figure(history, cfg["metric"], run.summary["units"]),
                             f"{_search_label(cfg)}: the objective as the search went; best "
                             f"{run.summary['best']['score']:.4f}"
                             + (f", test accuracy of the best mask {test:.4f}" if test is not None else "")
                             + f" ({run.name}).", run.command))
    return Section("Mask searches", "Searches score masks on validation images only; the test set is read "
                                    "once, for the best mask.", blocks) if blocks else None


def _search_label(cfg: dict[str, Any]) -> str:
    return f"{cfg['method']} ({cfg['mode']}) at sparsity {cfg['sparsity']:g}, {cfg['granularity']}s, at {cfg['at']}"


def _search_figure(history: list[dict[str, str]], metric: str, units: int) -> bytes:
    """The thesis's figure of a search: each candidate's score (dots), the score followed (the
    running mean of accepted scores in thesis mode, else the current mask's) and the best so far;
    beside it how far each move went (2h / units). REINFORCE: rewards, baseline, best, and entropy."""
    def column(key: str, scale: float = 1.0) -> list[float]:
        return [_float(row[key]) * scale for row in history]

    if "reward" in history[0]:
        steps = column("episode")
        left = {"reward": (steps, column("reward"), None), "baseline": (steps, column("baseline"), None),
                "best so far": (steps, column("best"), None)}
        right = ("policy entropy (nats)", {"entropy": (steps, column("entropy"), None)})
        xlabel, dots = "episode (one evaluation each)", ("reward",)
    else:
        steps = column("step")
        followed = "mean" if any(row["mean"] for row in history) else "current"
        left = {"candidate": (steps, column("candidate"), None),
                ("running mean of accepted" if followed == "mean" else "current"): (steps, column(followed), None),
                "best so far": (steps, column("best"), None)}
        right = ("relative Hamming distance of a move (2h / units)", {"move": (steps, column("h", 2 / units), None)})
        xlabel, dots = "evaluation", ("candidate",)
    tracked = [row for row in history if row.get(HELD_OUT)]
    if tracked:  # the best mask so far on validation images the search never saw
        left["best mask on held-out validation"] = ([_float(row["step"]) for row in tracked],
                                                    [_float(row[HELD_OUT]) for row in tracked], None)
    return figures.panels({f"objective ({metric}, search images)": left, right[0]: right[1]}, xlabel=xlabel,
                          dots=dots)


def early_birds(runs: list[RunView], _: dict[str, RunView]) -> Section | None:
    blocks: list[Figure | Table] = []
    for run in _of(runs, "earlybird"):
        saved, found = run.json(paths.DISTANCES), run.json(paths.EARLYBIRD)
        for ratio, distances in saved["distances"].items():
            epoch = found["found"][ratio]["epoch"]
            png = figures.grid(distances, saved["epochs"], label="epoch", colorbar="normalised mask distance",
                               contour=found.get("threshold"))
            blocks.append(Figure(png, f"Early-bird mask distances between epochs at pruning ratio {ratio}: the "
                                      f"ticket is drawn once the last masks stay within {found.get('threshold')} "
                                      f"(the red line); found at epoch {epoch}.", run.command))
    return Section("Early-bird tickets", "", blocks) if blocks else None


def structured(runs: list[RunView], _: dict[str, RunView]) -> Section | None:
    blocks: list[Figure | Table] = []
    for run in _of(runs, "structured"):
        rows = run.rows(paths.TABLE)
        groups: dict[str, list[dict[str, str]]] = {}
        for row in rows:
            start = "the step pruned at" if row["start"] == row["pruned_at"] else row["start"]
            label = row["mode"] + (f" from {start}" if row["mode"] == "rewind" else "")
            groups.setdefault(f"{label}, ratio {_float(row['ratio']):g}", []).append(row)
        panels: dict[str, dict[str, figures.Series]] = {"test accuracy after retraining": {},
                                                        "test accuracy before retraining": {}, "MACs kept (%)": {}}
        for label, mine in groups.items():
            mine = sorted(mine, key=lambda r: _float(r["epoch"]))
            x = [_float(r["epoch"]) for r in mine]
            panels["test accuracy after retraining"][label] = (x, [_float(r["retrained_test_acc"]) for r in mine], None)
            panels["test accuracy before retraining"][label] = (x, [_float(r["pruned_test_acc"]) for r in mine], None)
            panels["MACs kept (%)"][label] = (x, [100 * _float(r["macs_small"]) / _float(r["macs_dense"])
                                                  for r in mine], None)
        dense = ("dense", _float(rows[0]["dense_test_acc"]))
        png = figures.panels(panels, xlabel="epoch pruned at", references={"test accuracy after retraining": dense,
                                                                            "test accuracy before retraining": dense})
        blocks.append(Figure(png, "Structured pruning: the network pruned at each epoch, shrunk, and retrained in "
                                  "each mode; test accuracy before and after retraining, and the MACs kept.",
                             run.command))
        blocks.append(Table(rows, list(rows[0]), "The structured experiment's table.", f"{run.name}.csv",
                            run.command))
    return Section("Structured pruning: shrunk, then retrained", "", blocks) if blocks else None


def surgery(runs: list[RunView], _: dict[str, RunView]) -> Section | None:
    rows = []
    for run in _of(runs, "shrink"):
        s = run.summary
        rows.append({"run": run.name, "mask": run.hparams["identity"]["mask"],
                     "parameters_dense": s["parameters"]["dense"], "parameters_small": s["parameters"]["small"],
                     "macs_dense": s["macs"]["dense"], "macs_small": s["macs"]["small"],
                     "latency_b64_dense_ms": s["latency_ms"]["dense"]["batch_64"],
                     "latency_b64_small_ms": s["latency_ms"]["small"]["batch_64"],
                     "test_acc": s["metrics"]["test_acc"]})
    if not rows:
        return None
    return Section("Physically smaller networks", "Structured masks cut out of their networks: sizes, CPU "
                   "latency (batch 64, 1 thread) and accuracy of the small network, equal to the masked one.",
                   [Table(rows, tuple(rows[0]), "Each shrunk network.", "surgery.csv")])


def validation_sizes(runs: list[RunView], _: dict[str, RunView]) -> Section | None:
    blocks: list[Figure | Table] = []
    for run in _of(runs, "valsize"):
        rows = run.rows(paths.TABLE)
        sizes = [_float(r["val_size"]) for r in rows]
        series = {label: (sizes, [_float(r[column]) for r in rows], None) for label, column in
                  (("search objective (its own images)", "search_score"), ("rest of validation", "val_rest_acc"),
                   ("test", "test_acc"))}
        blocks.append(Figure(figures.panels({"accuracy (fraction)": series}, xlabel="validation images in the "
                                            "search objective (log scale)", log_x=True, width=7),
                             f"How the size of the search objective moves the gap between the score a search "
                             f"optimises and the test accuracy of its mask ({_search_label(run.hparams['search'])} "
                             f"of {run.hparams['train']}).", run.command))
        blocks.append(Table(rows, list(rows[0]), "The validation-size table.", f"{run.name}.csv", run.command))
    return Section("Validation-set size", "", blocks) if blocks else None


WRITERS: list[Writer] = [overview, trainings, sweeps, sensitivities, lotteries, comparisons, masks, searches,
                         early_birds, structured, surgery, validation_sizes]


def build_report(title: str, lead: str, names: Sequence[str], runs_dir: str | Path | None = None) -> str:
    """The page over the named finished runs (with the runs they were made from and the reports
    made over them)."""
    import_stage_kinds()  # each kind's describe, for the runs table
    every = finished_runs(runs_dir)
    missing = [name for name in names if name not in every]
    if missing:
        path = runs_root(runs_dir) / missing[0]
        if run_status(path) == "done":  # finished, but its summary or hparams cannot be read
            damage = problem(path) or "its summary.json or hparams.json cannot be read"
            raise TicketlabError(f"run {missing[0]} is damaged ({damage}){repair_hint(path)}")
        raise TicketlabError(f"run {missing[0]} is not a finished run under {runs_root(runs_dir)}; "
                             "expected runs listed as done by `ticketlab runs`")
    chosen = [every[name] for name in with_reports(with_inputs(names, every), every)]
    chosen.sort(key=lambda run: run.name)
    sections = [section for writer in WRITERS if (section := writer(chosen, every)) is not None]
    return render(title, lead, sections, {"runs": f"{len(chosen)} in {runs_root(runs_dir).absolute()}"})

