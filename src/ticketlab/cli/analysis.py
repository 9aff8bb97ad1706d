"""Commands that compare masks: `similarity` (how alike masks are) and `orthogonality` (of the
initial weights they leave)."""

from __future__ import annotations

import argparse
from typing import Any

from ticketlab.cli.flags import Result, add_output_flags, typed
from ticketlab.config import TicketlabError


def _masks(refs: list[str], runs_dir: str | None) -> dict[str, tuple[dict[str, Any], Any]]:
    """Each run's hparams and mask, by its name."""
    from ticketlab import paths
    from ticketlab.analysis.similarity import MASK_KINDS
    from ticketlab.sparsity.mask import Mask
    from ticketlab.store import find_run

    masks = {}
    for ref in refs:
        path, hparams = find_run(ref, MASK_KINDS, runs_dir)
        masks[path.name] = hparams, Mask.load(path / paths.MASK)
    return masks


def cmd_similarity(args: argparse.Namespace) -> Result:
    from ticketlab.analysis.similarity import MEASURES, similarity_matrix, with_random_floor

    found = {name: mask for name, (_, mask) in _masks(args.runs, args.runs_dir).items()}
    masks = with_random_floor(found, count=args.random, seed=args.seed)
    labels = list(masks)
    matrices = {measure: similarity_matrix(masks, measure) for measure in MEASURES}
    shown = matrices[args.measure]
    width = max(len(label) for label in labels)
    lines = [f"{args.measure} between masks" + (f" ({args.random} random of the first's per-layer sparsity: the "
                                                "floor of chance overlap)" if args.random else ""),
             " " * width + "".join(f"{i + 1:>8}" for i in range(len(labels)))]
    lines += [f"{label:<{width}}" + "".join(f"{value:>8.4f}" for value in row) + f"  ({i + 1})"
              for i, (label, row) in enumerate(zip(labels, shown))]
    return lines, {"labels": labels, **matrices}


def cmd_orthogonality(args: argparse.Namespace) -> Result:
    from ticketlab import paths
    from ticketlab.analysis.orthogonality import orthogonality_scores
    from ticketlab.store import find_run, load_checkpoint

    lines, payload = [], {}
    for ref, (hparams, mask) in _masks(args.runs, args.runs_dir).items():
        train = hparams.get("train")
        if not isinstance(train, str):
            raise TicketlabError(f"{ref} is a {hparams['kind']} run; orthogonality reads a prune or search run's "
                                 "training at 0it")
        train_path, _ = find_run(train, ["train"], args.runs_dir)
        if not (train_path / paths.checkpoint(args.step)).exists():
            raise TicketlabError(f"training run {train} kept no checkpoint {args.step}; train it with --save-at "
                                 f"{args.step}")
        weights = load_checkpoint(train_path / paths.checkpoint(args.step))["model"]
        scores = orthogonality_scores(weights, mask)
        payload[ref] = scores
        lines.append(f"{ref}: mean((WᵀW − I)²) of the masked weights at {args.step}, per layer")
        lines += [f"  {name:<28} {score:.6g}" for name, score in scores.items()]
    return lines, {"orthogonality": payload}


def register(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    similarity = commands.add_parser("similarity", help="how alike masks are: cosine, Jaccard, Hamming",
                                     formatter_class=formatter)
    similarity.add_argument("runs", nargs="+", metavar="RUN", help="runs holding a mask (prune, search, level, ...)")
    similarity.add_argument("--measure", choices=["cosine", "jaccard", "hamming"], default="cosine",
                            help="the measure printed (--json gives all three)")
    similarity.add_argument("--random", type=typed(int, "--random"), default=2,
                            help="random masks of the first mask's per-layer sparsity, the floor (default 2)")
    similarity.add_argument("--seed", type=int, default=0, help="seed of the random masks")
    similarity.add_argument("--runs-dir", default=None, help="where runs live (default $TICKETLAB_RUNS or ./runs)")
    add_output_flags(similarity)
    similarity.set_defaults(handler=cmd_similarity)

    orthogonality = commands.add_parser("orthogonality", help="orthogonality of the initial weights masks leave "
                                        "(Lee et al. 2020)", formatter_class=formatter)
    orthogonality.add_argument("runs", nargs="+", metavar="RUN", help="prune or search runs")
    orthogonality.add_argument("--step", default="0it", help="the training's checkpoint the mask is applied to")
    orthogonality.add_argument("--runs-dir", default=None, help="where runs live (default $TICKETLAB_RUNS or ./runs)")
    add_output_flags(orthogonality)
    orthogonality.set_defaults(handler=cmd_orthogonality)
