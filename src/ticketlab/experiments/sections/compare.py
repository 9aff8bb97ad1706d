"""The `compare` section: masks of several methods (criteria and searches) at several sparsities,
each scored at the rewind weights and after retraining, over the replicates (comparison.py); and at
each sparsity how alike the first replicate's masks are and how orthogonal the rewind weights they
leave (analysis/similarity.py, analysis/orthogonality.py)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ticketlab.analysis.orthogonality import OrthogonalityRun, mask_orthogonality, orthogonality_identity
from ticketlab.analysis.similarity import SimilarityRun, mask_similarity, similarity_identity
from ticketlab.config import (DataConfig, LotteryConfig, MaskMethod, ModelConfig, PruneConfig, Runtime, SearchConfig,
                              TicketlabError, TrainConfig, coerce, from_dict)
from ticketlab.experiments.comparison import (Comparison, at_sparsity, compare_masks, dense_training, mask_run,
                                              retrain_ticket, ticket_run)
from ticketlab.experiments.sections.base import Context, Described, Section, as_input, mapping, mean_std
from ticketlab.experiments.study import Node
from ticketlab.lottery.levels import check_settings, level_run
from ticketlab.lottery.retrain import Setting
from ticketlab.search.searchers import check_config
from ticketlab.search.stage import search_run_handle
from ticketlab.sparsity.prune import check_prune_config, prune_run_handle
from ticketlab.sparsity.schedules import check_sparsity
from ticketlab.structure.retrain import small_run_handle
from ticketlab.structure.stage import shrink_run_handle
from ticketlab.training.stage import TrainRun, train, train_run_handle


@dataclass(frozen=True)
class Compare:
    """Masks from several methods at several sparsities, scored before and after retraining."""

    methods: tuple[MaskMethod, ...]
    sparsities: tuple[float, ...]
    rewind: str = "0it"


METHOD_KINDS = {"prune": PruneConfig, "search": SearchConfig, "lottery": LotteryConfig}


class CompareSection(Section):
    name = "compare"

    def parse(self, raw: Mapping[str, Any], preset: str) -> Compare:
        section = mapping(raw["compare"], f"{preset}: compare")
        if set(section) - {"methods", "sparsities", "rewind"} or not section.get("methods") or \
                not isinstance(section.get("sparsities"), list) or not section["sparsities"]:
            raise TicketlabError(f"{preset}: compare takes methods (a list), sparsities (a list) and optionally rewind")
        methods = []
        for entry in section["methods"]:
            entry = mapping(entry, f"{preset}: compare.methods")
            kinds = [k for k in METHOD_KINDS if k in entry]
            if "name" not in entry or len(kinds) != 1 or set(entry) - {"name", *kinds}:
                raise TicketlabError(f"{preset}: each compare method has a name and one prune, search or lottery "
                                     "(IMP) section")
            where = f"{preset}: compare.{entry['name']}"
            settings = mapping(entry[kinds[0]], where)
            if kinds[0] == "lottery" and set(settings) & {"rate", "rewind"}:
                raise TicketlabError(f"{where}: IMP's rate follows from each compared sparsity and its rewind is the "
                                     "comparison's; give levels (and scope, criterion, output_rate)")
            methods.append(MaskMethod(str(entry["name"]), from_dict(METHOD_KINDS[kinds[0]], settings, where)))
        sparsities = tuple(coerce(s, float, f"{preset}: compare.sparsities") for s in section["sparsities"])
        return Compare(tuple(methods), sparsities, str(section.get("rewind", "0it")))

    def smoke(self, value: Compare | None, overrides: Mapping[str, Any], preset: str) -> Compare:
        return self.parse(overrides, preset)  # a whole smaller comparison: fewer methods, budgets, sparsities

    def check(self, value: Compare) -> None:
        for method in value.methods:
            for sparsity in value.sparsities:
                if isinstance(method.config, LotteryConfig):
                    check_sparsity(sparsity)
                    if sparsity == 0:
                        raise TicketlabError(f"{method.name}: IMP at sparsity 0 prunes nothing; compare it at "
                                             "sparsities above 0")
                config = at_sparsity(method, sparsity, value.rewind)
                if isinstance(config, PruneConfig):
                    check_prune_config(config)
                elif isinstance(config, LotteryConfig):
                    check_settings(config)
                else:
                    check_config(config)

    def nodes(self, value: Compare, context: Context) -> list[Node]:
        """Each replicate's dense training, then each (replicate, sparsity, method)'s mask and its
        retrained ticket (compare_masks then finds them done); the first replicate's masks at each
        sparsity are then compared with each other."""
        nodes = []
        for replicate in range(context.replicates):
            made: dict[float, list[tuple[str, str, str]]] = {}  # sparsity -> (method, mask run, its node)
            seeded = dense_training(context.training, value.methods, value.rewind, replicate)
            dense = train_run_handle(context.data, context.model, seeded, context.runtime.runs_dir,
                                     context.runtime.data_dir)
            nodes.append(Node(dense.run.name, train, (context.data, context.model, seeded, context.node_runtime),
                              kind="train", runs=(dense.run.name,), trainings=1))
            for sparsity in value.sparsities:
                for method in value.methods:
                    config = at_sparsity(method, sparsity, value.rewind)
                    searched = isinstance(config, SearchConfig)
                    kind = "search" if searched else "lottery" if isinstance(config, LotteryConfig) else "prune"
                    runs = _ticket_runs(dense, config, value.rewind, context.runtime)
                    made.setdefault(sparsity, []).append((method.name, runs[-1] if kind == "lottery" else runs[0],
                                                          f"{dense.run.name}: {method.name} at {sparsity:g}"))
                    nodes.append(Node(f"{dense.run.name}: {method.name} at {sparsity:g}", _ticket,
                                      (context.data, context.model, seeded, method, sparsity, value.rewind,
                                       context.node_runtime), (dense.run.name,), kind=kind, runs=runs,
                                      trainings=config.levels if kind == "lottery" else 1,
                                      evaluations=config.budget if searched else 0))
            if replicate == 0:
                nodes += [node for masks in made.values() for node in _analyses(dense, masks, value.rewind, context)]
        return nodes

    def result(self, value: Compare, context: Context) -> Comparison:
        return compare_masks(context.data, context.model, context.training, value.methods, value.sparsities,
                             context.runtime, replicates=context.replicates, rewind=value.rewind,
                             redo_report=context.redo_reports)

    def describe(self, result: Comparison) -> Described:
        return describe_comparison(result), {"comparison": {"run_dir": str(result.path), "rows": result.rows}}


def _ticket_runs(dense: TrainRun, config: PruneConfig | SearchConfig | LotteryConfig, rewind: str,
                 runtime: Runtime) -> tuple[str, ...]:
    """The runs a ticket node makes: the mask's, and the retrained ticket's (for a structured mask,
    the shrunk network's and its retraining's; for IMP, its levels, the last being the ticket)."""
    runs_dir = runtime.runs_dir
    if isinstance(config, LotteryConfig):
        return tuple(level_run(dense, config, number, runtime).name for number in range(1, config.levels + 1))
    if isinstance(config, PruneConfig):
        made: Any = prune_run_handle(dense, config, runs_dir)
        structured = config.structured
    else:
        made, structured = search_run_handle(dense, config, runs_dir), config.granularity == "filter"
    if not structured:
        return made.run.name, ticket_run(made.run.name, rewind, runs_dir).name
    shrunk = shrink_run_handle(made, rewind, runs_dir=runs_dir)
    return made.run.name, shrunk.run.name, small_run_handle(shrunk, "rewind", rewind, runs_dir=runs_dir).name


def _analyses(dense: TrainRun, made: list[tuple[str, str, str]], rewind: str, context: Context) -> list[Node]:
    """The similarity of masks (method, mask run, its node) and the orthogonality of the rewind weights they leave."""
    masks = [(label, run) for label, run, _ in made]
    needs = tuple(node for _, _, node in made)
    runs_dir = context.runtime.runs_dir
    similarity = SimilarityRun.run_for(similarity_identity(masks), runs_dir).name
    orthogonality = OrthogonalityRun.run_for(orthogonality_identity(masks, dense.run.name, rewind), runs_dir).name
    return [Node(similarity, mask_similarity, (masks, context.node_runtime), needs, kind="similarity",
                 runs=(similarity,)),
            Node(orthogonality, mask_orthogonality, (masks, dense.run.name, rewind, context.node_runtime),
                 needs + (dense.run.name,), kind="orthogonality", runs=(orthogonality,))]


def _ticket(data: DataConfig, model: ModelConfig, training: TrainConfig, method: MaskMethod, sparsity: float,
            rewind: str, runtime: Runtime) -> None:
    dense = train(data, model, training, as_input(runtime))  # done: the node needs it
    made = mask_run(dense, method, sparsity, runtime, rewind)
    retrain_ticket(made, method, Setting.of(dense, runtime), rewind, runtime)


def describe_comparison(comparison: Comparison) -> list[str]:
    searched = any(row.get("search_score_mean") is not None for row in comparison.rows)
    lines = ["masks compared (test accuracy, mean ± std over replicates; * the best at each sparsity"
             + ("; objective: the best validation score each method found, and the evaluations it spent" if searched
                else "") + "):",
             f"  {'method':<18} {'sparsity':>8} {'rewind acc':>18} {'trained acc':>18}"
             + (f" {'objective':>17} {'evals':>6}" if searched else "")]
    best = {(row["sparsity"], column): max(r[column] for r in comparison.rows if r["sparsity"] == row["sparsity"])
            for row in comparison.rows for column in ("rewind_acc_mean", "trained_acc_mean")}

    def shown(row: dict[str, Any], column: str) -> str:
        mark = "*" if row[f"{column}_mean"] == best[(row["sparsity"], f"{column}_mean")] else " "
        return f"{mean_std(row[f'{column}_mean'], row[f'{column}_std'], row['n'])}{mark}"

    for row in comparison.rows:
        line = (f"  {row['method']:<18} {row['sparsity']:>8g} {shown(row, 'rewind_acc'):>18} "
                f"{shown(row, 'trained_acc'):>18}")
        if searched:
            score = row.get("search_score_mean")
            score = "—" if score is None else mean_std(score, row["search_score_std"], row["n"])
            line += f" {score:>17} {row['evaluations']:>6}"
        lines.append(line)
    lines.append(f"  table: {comparison.path}")
    return lines


SECTION = CompareSection()
