"""From scores to keep-flags: the lowest-scored entries pruned, exactly round(N·s) of them.

`select` ranks any dict of score tensors, each a "layer": the weights of a parameter
(unstructured) or the units of a channel group (structured). `score_and_select` scores a
model with a criterion, selects, and returns a Mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch

from ticketlab.config import TicketlabError
from ticketlab.models.structure import ChannelGroup
from ticketlab.sparsity.criteria import Criterion, ScoreContext, get_criterion
from ticketlab.models.tracing import channel_groups
from ticketlab.sparsity.criteria.base import unit_rows
from ticketlab.sparsity.mask import Mask, output_layer_names, unit_mask_to_mask
from ticketlab.sparsity.schedules import check_rounds, check_sparsity, cumulative_sparsities

SCOPES = ("global", "layerwise")
EMPTY_LAYER = ("keep", "error")


def pruned_count(total: int, sparsity: float) -> int:
    """How many of `total` entries a sparsity prunes: round(total * sparsity) (Python's round)."""
    return round(total * sparsity)


def select(scores: Mapping[str, torch.Tensor], sparsity: float, *, scope: str = "global",
           current: Mapping[str, torch.Tensor] | None = None, output: Sequence[str] = (),
           output_sparsity: float | None = None, empty_layer: str = "keep",
           round_to: int = 1) -> dict[str, torch.Tensor]:
    """Keep-flags (True = kept, on the CPU) for every tensor of `scores`; the lowest scores are pruned.

    Entries are ranked together in pools: all tensors (global scope) or each tensor on its own
    (layerwise). A pool loses round(N * sparsity) of its N entries in all, counting those
    already pruned in `current` (a tensor it lacks counts as all kept); pruned entries stay
    pruned, and a pool already past its target loses nothing more. With output_sparsity set,
    the `output` tensors form a pool of their own pruned at that rate (0: not at all).
    Equal scores are pruned in flat order (tensors in the order of `scores`), so ties are
    deterministic. empty_layer: a tensor this selection would empty keeps its best entry
    ("keep"; under global scope the next-lowest entry elsewhere goes instead, so the count
    stays exact while the pool has entries left) or raises a TicketlabError ("error").
    round_to > 1: each tensor then keeps a multiple of round_to entries (see `round_kept`).
    """
    check_sparsity(sparsity)
    check_round_to(round_to)
    if output_sparsity is not None:
        check_sparsity(output_sparsity, "output sparsity")
    if scope not in SCOPES:
        raise TicketlabError(f"unknown scope {scope!r}; expected global or layerwise")
    if empty_layer not in EMPTY_LAYER:
        raise TicketlabError(f"empty_layer {empty_layer!r} is neither keep nor error")
    alive = _flags(scores, current)
    own = {name for name in output if name in scores} if output_sparsity is not None else set()
    if scope == "global":
        pools = [([n for n in scores if n not in own], sparsity), ([n for n in scores if n in own], output_sparsity)]
    else:
        pools = [([name], output_sparsity if name in own else sparsity) for name in scores]
    keep: dict[str, torch.Tensor] = {}
    for names, rate in pools:
        if names:
            keep |= _select_pool({n: scores[n] for n in names}, alive, rate, empty_layer)
    if round_to > 1:
        keep = round_kept(keep, scores, alive, round_to)
    return {name: keep[name] for name in scores}


def check_round_to(round_to: int) -> None:
    if isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1:
        raise TicketlabError(f"round_to is a number of units, at least 1; got {round_to!r}")


def round_kept(keep: Mapping[str, torch.Tensor], scores: Mapping[str, torch.Tensor],
               alive: Mapping[str, torch.Tensor], multiple: int) -> dict[str, torch.Tensor]:
    """Each tensor's kept count rounded up to a multiple of `multiple` (or to all its entries),
    Torch-Pruning's round_to: CPU and GPU kernels run thin layers far below their speed per MAC,
    and best at channel counts that are multiples of 8 or 16. The highest-scored entries this
    selection pruned are kept again; where too few of them are left (`alive`, an earlier mask,
    pruned the rest), the count is rounded down instead, pruning the lowest-scored kept ones."""
    rounded = {}
    for name, flags in keep.items():
        flat, kept = flags.flatten().clone(), int(flags.count_nonzero())
        if kept % multiple and kept != flat.numel():
            score = scores[name].detach().flatten().to("cpu", torch.float64)
            restorable = alive[name].flatten() & ~flat
            up = min(flat.numel(), -(-kept // multiple) * multiple)
            if up - kept <= int(restorable.count_nonzero()):
                # the best ones, the last among equals (the ones a ranking prunes last)
                flat |= _lowest(-score.flip(0), restorable.flip(0), up - kept).flip(0)
            elif kept > multiple:
                flat &= ~_lowest(score, flat, kept % multiple)
            else:
                raise TicketlabError(f"{name} keeps {kept} units, and an earlier mask pruned too many of the others "
                                     f"to round it up to {multiple}; lower round_to or start from a rounded mask")
        rounded[name] = flat.reshape(flags.shape)
    return rounded


def _flags(scores: Mapping[str, torch.Tensor], current: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
    flags = {}
    for name, score in scores.items():
        given = current.get(name) if current is not None else None
        if given is None:
            flags[name] = torch.ones(score.shape, dtype=torch.bool)
        elif given.shape != score.shape:
            raise TicketlabError(f"the current keep-flags of {name} have shape {tuple(given.shape)}, its scores "
                                 f"{tuple(score.shape)}; expected the same")
        else:
            flags[name] = given.detach().to("cpu", torch.bool)
    return flags


def _select_pool(scores: dict[str, torch.Tensor], alive: dict[str, torch.Tensor], rate: float,
                 empty_layer: str) -> dict[str, torch.Tensor]:
    """Prune the lowest-scored entries of tensors ranked together, down to `rate` of them."""
    names = list(scores)
    sizes = [scores[n].numel() for n in names]
    flat = torch.cat([scores[n].detach().flatten().to("cpu", torch.float64) for n in names])
    if flat.isnan().any():
        raise TicketlabError(f"the scores of {next(n for n in names if scores[n].isnan().any())} contain NaN; "
                             "expected numbers")
    was_kept = torch.cat([alive[n].flatten() for n in names])
    extra = max(pruned_count(len(flat), rate) - int((~was_kept).count_nonzero()), 0)
    protected = torch.zeros_like(was_kept)
    while True:
        kept = was_kept & ~_lowest(flat, was_kept & ~protected, extra)
        emptied = [i for i, (before, after) in enumerate(zip(was_kept.split(sizes), kept.split(sizes)))
                   if before.any() and not after.any()]
        if not emptied:
            break
        if empty_layer == "error":
            raise TicketlabError(f"pruning {rate:g} would empty {names[emptied[0]]}; lower the sparsity or keep "
                                 "one entry per layer (empty_layer='keep')")
        for i in emptied:
            start = sum(sizes[:i])
            protected[start + _best(flat[start:start + sizes[i]], was_kept[start:start + sizes[i]])] = True
    return {name: flags.reshape(scores[name].shape) for name, flags in zip(names, kept.split(sizes))}


def _lowest(flat: torch.Tensor, candidates: torch.Tensor, count: int) -> torch.Tensor:
    """Flags on the `count` lowest-scored candidates; equal scores go in flat order, as in a stable sort."""
    count = min(count, int(candidates.count_nonzero()))
    chosen = torch.zeros_like(candidates)
    if count == 0:
        return chosen
    threshold = flat[candidates].kthvalue(count).values
    chosen |= candidates & (flat < threshold)
    tied = (candidates & (flat == threshold)).nonzero().flatten()
    chosen[tied[:count - int(chosen.count_nonzero())]] = True
    return chosen


def _best(flat: torch.Tensor, candidates: torch.Tensor) -> int:
    """The index of the candidate a ranking prunes last: the highest score, the last among equals."""
    index = candidates.nonzero().flatten()
    return int(index[len(index) - 1 - int(flat[index].flip(0).argmax())])


def score_and_select(ctx: ScoreContext, criterion: str | Criterion, sparsity: float, *, scope: str = "global",
                     output_sparsity: float | None = None, empty_layer: str = "keep",
                     rounds: int | None = None, round_to: int = 1) -> Mask:
    """Score the model with `criterion` and prune `sparsity` of what it scores, as a Mask.

    Unstructured criteria prune the entries of ctx.names; structured ones prune units of the
    channel groups (each group a "layer" for scope and empty_layer), expanded to the weights,
    biases and BatchNorm parameters of each unit, and never the output layer's units (the
    classes). Entries ctx.mask prunes stay pruned and count toward the sparsity, a cumulative
    target (a unit counts as pruned once all its producer entries that the mask covers are).
    The mask covers ctx.names and everything ctx.mask covers. scope, output_sparsity and
    empty_layer are select's (the output layer is sparsity.mask.output_layer_names).
    rounds (default: the criterion's own, 100 for synflow, else 1): prune over that many
    rounds on the exponential schedule of cumulative_sparsities, rescoring the masked model
    each round. round_to (structured criteria only): each channel group keeps a multiple of
    that many units (select's round_to), so the sparsity reached is at most the one asked for.
    """
    chosen = get_criterion(criterion) if isinstance(criterion, str) else criterion
    check_sparsity(sparsity)
    check_round_to(round_to)
    if round_to > 1 and not chosen.structured:
        raise TicketlabError(f"round_to rounds the units a channel group keeps; {chosen.name} prunes single "
                             "weights (use a structured criterion, or round_to 1)")
    if output_sparsity is not None:
        check_sparsity(output_sparsity, "output sparsity")
    rounds = getattr(chosen, "rounds", 1) if rounds is None else rounds
    check_rounds(rounds)
    output = output_layer_names(ctx.model) if output_sparsity is not None and not chosen.structured else []

    flags = _current_flags(ctx, chosen.structured)
    own = [name for name in flags if name in output]
    rest = [name for name in flags if name not in own]
    mask = ctx.mask
    for target, output_target in zip(_schedule(sparsity, rounds, flags, rest),
                                     _schedule(output_sparsity, rounds, flags, own)):
        scores = chosen.scores(replace(ctx, mask=mask, sparsity=target))
        flags = select(scores, target, scope=scope, current=flags, output=own,
                       output_sparsity=output_target, empty_layer=empty_layer, round_to=round_to)
        mask = _merge(mask, unit_mask_to_mask(ctx.model, flags, ctx.names) if chosen.structured else flags)
    return mask


def _current_flags(ctx: ScoreContext, structured: bool) -> dict[str, torch.Tensor]:
    """What ctx.mask already keeps: per entry of ctx.names, or per unit of each channel group."""
    mask: Mapping[str, torch.Tensor] = ctx.mask or {}
    if structured:
        return {group.name: _unit_flags(group, mask) for group in channel_groups(ctx.model)}
    params = dict(ctx.model.named_parameters())
    return {name: mask[name] if name in mask else torch.ones(params[name].shape, dtype=torch.bool)
            for name in ctx.names}


def _unit_flags(group: ChannelGroup, mask: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """A unit is kept while any of its producer entries that the mask covers is kept."""
    covered = [unit_rows(mask[p.param], p, group.size).any(dim=1) for p in group.producers if p.param in mask]
    return torch.stack(covered).any(dim=0) if covered else torch.ones(group.size, dtype=torch.bool)


def _schedule(target: float | None, rounds: int, flags: dict[str, torch.Tensor],
              names: list[str]) -> list[float] | list[None]:
    """The cumulative targets of each round for `names`, from the fraction already pruned."""
    if target is None:
        return [None] * rounds
    total = sum(flags[n].numel() for n in names)
    start = sum(int((~flags[n]).count_nonzero()) for n in names) / total if total else 0.0
    return cumulative_sparsities(target, rounds, start=min(start, target))


def _merge(previous: Mask | None, keep: Mapping[str, torch.Tensor]) -> Mask:
    """`keep` over what `previous` covers: an entry stays kept only if both keep it."""
    merged = dict(previous or {})
    for name, flags in keep.items():
        merged[name] = merged[name] & flags if name in merged else flags
    return Mask(merged)
