"""The search stage: the mask a searcher finds for a trained run's weights at a checkpoint, cached.

`search(...)` is named by the training run and the search hyperparameters that differ from
their defaults (search.searchers.identity: a searcher's own defaults filled in, named against
the defaults before they were its own), and returns at once when that search has finished. The objective is the
score of the masked network (at checkpoint cfg.at) on the first cfg.val_size validation
images; the best mask is also scored on the rest of validation and on the test set, which
is reported and never used to select anything.

The stage saves the best single mask evaluated as mask.safetensors: the one mask whose
objective was measured highest. In thesis mode it also saves, as mask_running_mean.safetensors,
the mask the thesis's rule picks (the current mask when the running mean of accepted scores
peaked): that mean is an average over several masks, so the mask it credits may itself
never have scored that high. Both are scored on the held-out data in summary.json.

REINFORCE (search.reinforce) and random search start from no mask; the report draws each
search's history (for REINFORCE, the agent's learning curve), with the best mask so far on the
rest of validation every TRACK_EVERY evaluations. An interrupted search resumes exactly: its
state is saved every CHECKPOINT_EVERY evaluations (state.pt), and a rerun goes on from it as if
it had never stopped. The searchers are search.searchers.SEARCHERS; this stage knows none by name.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ticketlab import paths
from ticketlab.config import Runtime, SearchConfig, TicketlabError
from ticketlab.data.load import Dataset, Split
from ticketlab.search.base import CHECKPOINT_EVERY, Evaluator, Observer, Searcher, SearchResult, SearchState
from ticketlab.search.evaluators import make_evaluator
from ticketlab.search.features import unit_features
from ticketlab.search.history import HELD_OUT, read_history, write_history
from ticketlab.search.moves import Moves
from ticketlab.search.reference import SCORE_BATCH, objective as score_batches
from ticketlab.search.searchers import check_config, get_searcher, identity, resolve
from ticketlab.search.space import SearchSpace, unit_space, weight_space
from ticketlab.sparsity.criteria import ScoreContext, get_criterion
from ticketlab.sparsity.mask import Mask, prunable_names
from ticketlab.sparsity.selection import score_and_select
from ticketlab.stage import Stage
from ticketlab.store import Run, atomic_torch_save, atomic_write_text, find_run, load_checkpoint
from ticketlab.manifest import remove_artifact
from ticketlab.training.stage import TrainRun, apply_runtime, init_model

CRITERION_BATCH = 64  # validation images a data-driven start criterion scores on
TRACK_EVERY = 100  # evaluations between scores of the best mask so far on held-out validation
START_RUN_KINDS = ("prune", "search")  # runs whose mask a search can start from


@dataclass
class SearchRun(Stage):
    """The best mask a search found from a training run's weights, and the search's history."""

    train: TrainRun
    config: SearchConfig
    KIND = "search"
    ARTIFACTS = (paths.MASK, paths.MASK_REPORT, paths.HISTORY)
    MAY_WRITE = (paths.MEAN_MASK,)

    @staticmethod
    def describe(hparams: dict[str, Any], summary: dict[str, Any]) -> tuple[str, dict[str, float]]:
        cfg, held = hparams["search"], summary.get("best", {}).get("held_out", {})
        metrics = {"val_acc": (held.get("val_rest") or {}).get("accuracy"),
                   "test_acc": (held.get("test") or {}).get("accuracy")}
        return (f"{cfg['method']} {cfg['sparsity']:.3g} {cfg['granularity']}s of {hparams['train']}",
                {k: v for k, v in metrics.items() if v is not None})

    def mask(self) -> Mask:
        """The best mask the search evaluated, over the model's parameters."""
        return Mask.load(self.run.file(paths.MASK))

    def history(self) -> list[dict[str, Any]]:
        return read_history(self.run.file(paths.HISTORY))


def split_validation(val: Split, size: int | None, dataset: str) -> tuple[Split, Split]:
    """The objective's images (the first `size` of validation; all for None, and for the default
    size when validation holds fewer) and the rest."""
    if size is None or (size == SearchConfig.val_size and size > len(val.y)):
        size = len(val.y)
    if size > len(val.y):
        raise TicketlabError(f"the search objective asks for {size} validation images but {dataset} holds "
                             f"{len(val.y)}; lower --val-size or hold out more with the training run's --val-size")
    return Split(val.x[:size], val.y[:size]), Split(val.x[size:], val.y[size:])


def start_mask(cfg: SearchConfig, model: nn.Module, space: SearchSpace, train: TrainRun, objective: Split,
               generator: torch.Generator, runs_dir: str | None = None) -> torch.Tensor:
    """A random keep-vector, the mask of the finished prune or search run cfg.start names (at
    the same sparsity), or the mask of the criterion cfg.start at the same sparsity (ranked as
    cfg.start_scope says), scored at the search's checkpoint (`model`) or, for
    CRITERION@STEP, at that step."""
    if cfg.start == "random":
        return space.random(cfg.sparsity, generator, cfg.layer_min)
    if cfg.start.partition("-")[0] in START_RUN_KINDS or Path(cfg.start).is_dir():
        return _start_from_run(cfg, model, space, runs_dir)
    name, _, step = cfg.start.partition("@")
    criterion = get_criterion(name)
    if criterion.structured != (cfg.granularity == "filter"):
        raise TicketlabError(f"criterion {name} scores {'units' if criterion.structured else 'single weights'}, "
                             f"but the search is per {cfg.granularity}; start from a criterion of that granularity")
    device = next(model.parameters()).device
    if step:
        model = copy.deepcopy(model)
        model.load_state_dict(train.state_dict(step))
    context = ScoreContext(
        model=model, names=prunable_names(model), sparsity=cfg.sparsity, generator=generator,
        init={k: v.to(device) for k, v in train.state_dict("0it").items()} if criterion.needs_init else None,
        batches=[(objective.x[:CRITERION_BATCH], objective.y[:CRITERION_BATCH])] if criterion.needs_data else None,
    )
    return space.from_mask(score_and_select(context, criterion, cfg.sparsity, scope=cfg.start_scope))


def _start_from_run(cfg: SearchConfig, model: nn.Module, space: SearchSpace, runs_dir: str | None) -> torch.Tensor:
    """The keep-vector of a prune or search run's mask (a trained mask, say, to search on from)."""
    path, _ = find_run(cfg.start, START_RUN_KINDS, runs_dir)
    mask = Mask.load(path / paths.MASK)
    mask.check_fits(model)
    keep = space.from_mask(mask)
    expected = space.size - round(space.size * cfg.sparsity)
    if int(keep.sum()) != expected:
        raise TicketlabError(f"the mask of {cfg.start} keeps {int(keep.sum())} of the {space.size} {cfg.granularity} "
                             f"units, a search at sparsity {cfg.sparsity:g} keeps {expected}; search at that run's "
                             "sparsity")
    return keep


def held_out_scores(evaluator_on: Callable[[Split, str], Evaluator], keep: torch.Tensor,
                    splits: dict[str, Split]) -> dict[str, dict[str, float] | None]:
    """Accuracy and loss of a mask, scored as the objective is (same checkpoint and training), on each split."""
    scores: dict[str, dict[str, float] | None] = {}
    for name, split in splits.items():
        if len(split.y):
            accuracy, minus_loss = (evaluator_on(split, metric).score(keep) for metric in ("accuracy", "loss"))
            scores[name] = {"accuracy": accuracy, "loss": -minus_loss}
        else:
            scores[name] = None
    return scores


def _at_checkpoint(train: TrainRun, cfg: SearchConfig,
                   runtime: Runtime) -> tuple[torch.device, Dataset, nn.Module, dict[str, torch.Tensor], Split, Split]:
    """The device, data, the model holding the weights at cfg.at (and those weights), the objective's images
    and the rest of validation."""
    device = apply_runtime(runtime)
    weights = train.state_dict(cfg.at)
    data = train.dataset(runtime, device)
    objective, rest = split_validation(data.val, cfg.val_size, train.data.name)
    model = init_model(train.model_config, data, train.training.seed).to(device)
    model.load_state_dict(weights)
    return device, data, model, weights, objective, rest


def objective_score(train: TrainRun, cfg: SearchConfig, mask: Mask, runtime: Runtime = Runtime()) -> float:
    """The objective a search with `cfg` maximises, for any mask over the model (a criterion's, say):
    cfg.metric of the masked network at cfg.at on the search's images, as the evaluator scores it."""
    check_config(cfg)
    _, _, model, _, objective, _ = _at_checkpoint(train, cfg, runtime)
    mask.apply(model)
    model.eval()
    with torch.inference_mode():
        return score_batches(((model(xb), yb) for xb, yb in zip(objective.x.split(SCORE_BATCH),
                                                                 objective.y.split(SCORE_BATCH))), cfg.metric)


def search_run_handle(train: TrainRun, cfg: SearchConfig, runs_dir: str | None) -> SearchRun:
    """The search run these inputs name, finished or not."""
    return SearchRun(SearchRun.run_for({"train": train.run.name, "search": identity(cfg)}, runs_dir), train,
                     resolve(cfg))


def search(train: TrainRun, cfg: SearchConfig = SearchConfig(), runtime: Runtime = Runtime()) -> SearchRun:
    """Search masks of the trained run's weights at cfg.at with cfg.method, or return the finished
    search with the same inputs. Writes mask.safetensors (the best mask), history.csv, search.png,
    report.txt and summary.json. Options left unset take their searcher's defaults (search.searchers.resolve)."""
    check_config(cfg)
    cfg = resolve(cfg)
    result = search_run_handle(train, cfg, runtime.runs_dir)
    result.produce(
        runtime.force, lambda: ({"train": train.run.name, "search": dataclasses.asdict(cfg)},
                                _set_up(train, cfg, runtime)),
        lambda setup: _search(result.run, setup, train, cfg, runtime))
    return result


@dataclass
class SearchSetup:
    """Everything a search needs, made and checked before its run directory is written."""

    device: torch.device
    data: Dataset
    space: SearchSpace
    objective: Split
    rest: Split
    start: torch.Tensor | None
    features: torch.Tensor | None
    generator: torch.Generator
    evaluator: Evaluator
    evaluator_on: Callable[[Split, str], Evaluator]
    tracker: Evaluator | None  # the objective's metric on the rest of validation (None: no images left)


def _set_up(train: TrainRun, cfg: SearchConfig, runtime: Runtime) -> SearchSetup:
    device, data, model, weights, objective, rest = _at_checkpoint(train, cfg, runtime)
    space = weight_space(model) if cfg.granularity == "weight" else unit_space(model)
    generator = torch.Generator().manual_seed(cfg.seed)
    searcher = get_searcher(cfg.method)  # its config was checked by `search`
    # Every input is checked before anything is written.
    if not searcher.starts_from_mask:
        start = None
        space.random(cfg.sparsity, torch.Generator(), cfg.layer_min)  # a throwaway draw: do the floors fit?
    else:
        start = start_mask(cfg, model, space, train, objective, generator, runtime.runs_dir)
        Moves.from_space(space, cfg.layer_min).check(start, f"the {cfg.start} start mask")

    def evaluator_on(split: Split, metric: str) -> Evaluator:
        # Candidates that train first do so on the training images, with the run's optimiser and batch size.
        return make_evaluator(model, weights, space, split.x, split.y, metric=metric, train_steps=cfg.train_steps,
                              train_config=train.training, train_data=data.train, exact=cfg.exact,
                              kernels=runtime.kernels)

    # The agent's state, and the tracker's own copy of the model, before the evaluator takes it over.
    features = unit_features(model, space) if searcher.needs_features else None
    tracker = make_evaluator(copy.deepcopy(model), weights, space, rest.x, rest.y, metric=cfg.metric,
                             train_steps=cfg.train_steps, train_config=train.training, train_data=data.train,
                             incremental=False, kernels=runtime.kernels) if len(rest.y) else None
    return SearchSetup(device, data, space, objective, rest, start, features, generator,
                       evaluator_on(objective, cfg.metric), evaluator_on, tracker)


def _search(run: Run, setup: SearchSetup, train: TrainRun, cfg: SearchConfig, runtime: Runtime) -> dict[str, Any]:
    """Run the search in `run` (resuming from its snapshot), write its artifacts, return its summary."""
    state = run.file(paths.SEARCH_STATE)
    resume = load_checkpoint(state) if state.exists() else None
    started = time.perf_counter()
    searcher = get_searcher(cfg.method).build(setup.evaluator, cfg, setup.generator, setup.features)
    found = searcher.run(setup.start, progress=runtime.progress, resume=resume, checkpoint_every=CHECKPOINT_EVERY,
                         checkpoint=lambda snapshot: atomic_torch_save(snapshot, state),
                         observe=held_out_tracking(setup.tracker, searcher))
    seconds = time.perf_counter() - started
    space = setup.space
    summary = _summary(found, cfg, space, seconds, resumed_from=resume["step"] if resume else 0,
                       objective_images=len(setup.objective.y), held_out_images=len(setup.rest.y))
    splits = {"val_rest": setup.rest, "test": setup.data.test}
    summary["best"]["held_out"] = held_out_scores(setup.evaluator_on, found.best, splits)
    if setup.start is not None:  # what the search improved on, on the same held-out images
        summary["start_held_out"] = held_out_scores(setup.evaluator_on, setup.start, splits)
    mask = space.to_mask(found.best)
    mask.save(run.file(paths.MASK))
    atomic_write_text(run.file(paths.MASK_REPORT), mask.report() + "\n")
    if found.best_mean is not None:
        space.to_mask(found.best_mean).save(run.file(paths.MEAN_MASK))
        summary["best_running_mean"]["held_out"] = held_out_scores(setup.evaluator_on, found.best_mean, splits)
    write_history(run.file(paths.HISTORY), found.history)
    summary.update(device=str(setup.device), threads=runtime.threads)
    remove_artifact(state)  # done with: a kill from here on redoes the search from its start
    return summary


def held_out_tracking(tracker: Evaluator | None, searcher: Searcher) -> Observer | None:
    """An observer that, every TRACK_EVERY evaluations and at the searcher's last step, scores
    the best mask so far on the held-out images into the step's history row
    (`held_out_best`). Reported only: nothing is selected on it."""
    if tracker is None:
        return None
    last: list[Any] = [None, None]  # the best mask scored last, and its score

    def observe(state: SearchState) -> None:
        # The step that crosses a multiple of TRACK_EVERY (a searcher may spend several evaluations
        # a step), read off the history alone, so that a resumed search tracks the same steps.
        before = state.history[-2]["step"] if len(state.history) > 1 else state.step
        last_step = state.step + searcher.next_cost(state) > searcher.budget
        if before // TRACK_EVERY == state.step // TRACK_EVERY and not last_step:
            return
        if last[0] is not state.best:
            last[:] = [state.best, tracker.score(state.best)]
        state.history[-1][HELD_OUT] = last[1]

    return observe


def _summary(found: SearchResult, cfg: SearchConfig, space: SearchSpace, seconds: float, *, resumed_from: int,
             objective_images: int, held_out_images: int) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "method": cfg.method, "mode": cfg.mode, "granularity": cfg.granularity, "metric": cfg.metric, "at": cfg.at,
        "units": space.size, "kept": int(found.best.sum()), "sparsity": 1 - int(found.best.sum()) / space.size,
        "objective_images": objective_images, "held_out_images": held_out_images,
        "evaluations": found.evaluations, "images_forward": found.evaluations * objective_images,
        "resumed_from": resumed_from, "seconds": round(seconds, 3),
        "evaluations_per_s": round((found.evaluations - resumed_from) / seconds, 2) if seconds > 0 else None,
        "t0": found.t0, "start_score": found.history[0]["candidate"],
        "best": {"score": found.best_score,
                 "step": next(row["step"] for row in found.history if row["candidate"] == found.best_score)},
    }
    if found.best_mean is not None:
        summary["best_running_mean"] = {"score": found.best_mean_score}
    return summary | get_searcher(cfg.method).summarise(found)
