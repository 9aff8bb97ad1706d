"""Selection: exact counts, global vs layerwise, the output layer's own rate, deterministic ties,
the empty-layer guard, iterative use, and one-line errors for bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ticketlab.config import ModelConfig, TicketlabError
from ticketlab.models import build_model
from ticketlab.sparsity.criteria import Criterion, ScoreContext, get_criterion
from ticketlab.sparsity.mask import Mask, prunable_names
from ticketlab.sparsity.selection import pruned_count, score_and_select, select
from ticketlab.sparsity.schedules import cumulative_sparsities

SPARSITIES = [0, 0.1, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999]


def pruned(keep: dict[str, torch.Tensor]) -> int:
    return sum(int((~flags).sum()) for flags in keep.values())


def lists(keep: dict[str, torch.Tensor]) -> dict[str, list]:
    return {name: flags.int().tolist() for name, flags in keep.items()}


def flags(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.bool)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 10, 33, 100, 1000])
def test_exactly_round_n_s_pruned(n):
    generator = torch.Generator().manual_seed(n)
    scores = {"a": torch.rand(n, generator=generator), "b": torch.rand(2 * n + 1, generator=generator),
              "c": torch.rand(3, 2, generator=generator)}
    total = 3 * n + 7
    for s in SPARSITIES:
        keep = select(scores, s)
        assert pruned(keep) == min(round(total * s), total - 3)  # the guard keeps one entry per layer
        if round(total * s) <= min(n, 6):  # no layer can be emptied: exactly the lowest scores go
            flat = torch.cat([v.flatten() for v in scores.values()])
            kept = torch.cat([v.flatten() for v in keep.values()])
            assert kept.sum() == total or flat[~kept].max() <= flat[kept].min()
        layerwise = select(scores, s, scope="layerwise")
        for name, score in scores.items():
            assert int((~layerwise[name]).sum()) == min(round(score.numel() * s), score.numel() - 1)


def test_pruned_count_is_pythons_round():
    assert [pruned_count(10, s) for s in (0.25, 0.35, 0.5, 0.7)] == [2, 4, 5, 7]


def test_global_ranks_across_layers_layerwise_within_each():
    scores = {"a": torch.tensor([0.1, 0.2, 0.3, 0.4]), "b": torch.tensor([1.0, 2.0, 3.0, 4.0])}
    assert lists(select(scores, 0.25)) == {"a": [0, 0, 1, 1], "b": [1, 1, 1, 1]}
    assert lists(select(scores, 0.25, scope="layerwise")) == {"a": [0, 1, 1, 1], "b": [0, 1, 1, 1]}


def test_keep_flags_are_cpu_bool_of_each_shape():
    keep = select({"w": torch.rand(3, 4, dtype=torch.float64)}, 0.5)
    assert keep["w"].dtype == torch.bool and keep["w"].shape == (3, 4)


def test_equal_scores_are_pruned_in_flat_order():
    scores = {"a": torch.zeros(4), "b": torch.zeros(4)}
    assert lists(select(scores, 0.25)) == lists(select(scores, 0.25)) == {"a": [0, 0, 1, 1], "b": [1, 1, 1, 1]}
    # a would be emptied; it keeps its last entry (the one a stable ranking prunes last)
    scores = {"a": torch.zeros(2), "b": torch.zeros(4)}
    assert lists(select(scores, 0.5)) == {"a": [0, 1], "b": [0, 0, 1, 1]}


def test_empty_layer_guard_keeps_the_best_entry_and_the_count():
    scores = {"a": torch.tensor([0.2, 0.1]), "b": torch.tensor([5.0, 6.0, 7.0, 8.0])}
    assert lists(select(scores, 0.5)) == {"a": [1, 0], "b": [0, 0, 1, 1]}
    with pytest.raises(TicketlabError, match="would empty a;") as error:
        select(scores, 0.5, empty_layer="error")
    assert "\n" not in str(error.value)
    # Layerwise, a one-entry layer can only keep its entry.
    assert lists(select({"a": torch.tensor([1.0])}, 0.6, scope="layerwise")) == {"a": [1]}
    with pytest.raises(TicketlabError, match="would empty a"):
        select({"a": torch.tensor([1.0])}, 0.6, scope="layerwise", empty_layer="error")


def test_current_pruned_entries_stay_pruned_and_count():
    scores = {"w": torch.tensor([9.0, 1.0, 2.0, 3.0])}
    assert lists(select(scores, 0.5, current={"w": flags(0, 1, 1, 1)})) == {"w": [0, 0, 1, 1]}
    assert lists(select(scores, 0.5, current={"w": flags(0, 0, 0, 1)})) == {"w": [0, 0, 0, 1]}  # past the target
    assert lists(select(scores, 0.5, current={})) == {"w": [1, 0, 0, 1]}  # missing: all kept
    with pytest.raises(TicketlabError, match="shape"):
        select(scores, 0.5, current={"w": flags(1, 1)})


def test_output_layer_at_its_own_rate_over_lottery_rounds():
    """LeNet-300-100 as in Frankle & Carbin: 20% of the hidden layers, 10% of the output per round."""
    model = build_model(ModelConfig(name="lenet300_100"), (1, 28, 28), 10, generator=torch.Generator().manual_seed(0))
    names = prunable_names(model)
    assert names == ["fc1.weight", "fc2.weight", "fc3.weight"]

    layerwise = score_and_select(ScoreContext(model, names), "magnitude", 0.2, scope="layerwise",
                                 output_sparsity=0.1)
    assert [layer.pruned for layer in layerwise.layers()] == [47040, 6000, 100]
    whole = score_and_select(ScoreContext(model, names), "magnitude", 0.2, output_sparsity=0)
    assert whole["fc3.weight"].all() and whole.total() - whole.kept() == round(265200 * 0.2)

    mask = None
    hidden, output = cumulative_sparsities(1 - 0.8**3, 3), cumulative_sparsities(1 - 0.9**3, 3)
    for level, (s, o) in enumerate(zip(hidden, output), start=1):
        previous = mask
        mask = score_and_select(ScoreContext(model, names, mask=mask), "magnitude", s, output_sparsity=o)
        layers = {layer.name: layer.pruned for layer in mask.layers()}
        assert layers["fc1.weight"] + layers["fc2.weight"] == round(265200 * (1 - 0.8**level))
        assert layers["fc3.weight"] == round(1000 * (1 - 0.9**level))
        if previous is not None:
            assert all(not (mask[n] & ~previous[n]).any() for n in names)
    assert round(100 * mask.kept() / mask.total(), 1) == 51.3  # the paper's 51.3% after 3 rounds


def test_score_and_select_keeps_what_the_mask_covers_beyond_names():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    bias = torch.tensor([True, False, True, True])
    ctx = ScoreContext(model, ["0.weight", "2.weight"], mask=Mask({"0.bias": bias}))
    mask = score_and_select(ctx, "magnitude", 0.5)
    assert set(mask) == {"0.bias", "0.weight", "2.weight"} and torch.equal(mask["0.bias"], bias)


def test_rounds_prune_on_the_exponential_schedule():
    model = nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 10))
    names = ["0.weight", "2.weight"]
    one_shot = score_and_select(ScoreContext(model, names), "magnitude", 0.9)
    assert score_and_select(ScoreContext(model, names), "magnitude", 0.9, rounds=5) == one_shot


class Recorder(Criterion):
    """Magnitude, noting the target and the mask's sparsity it is called with each round."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[tuple[float | None, float]] = []

    def compute(self, ctx: ScoreContext) -> dict[str, torch.Tensor]:
        self.seen.append((ctx.sparsity, 0.0 if ctx.mask is None else ctx.mask.sparsity()))
        return get_criterion("magnitude").compute(ctx)


def test_rounds_rescore_the_masked_model_from_the_sparsity_reached():
    model = nn.Sequential(nn.Linear(20, 20, bias=False), nn.ReLU(), nn.Linear(20, 10, bias=False))
    names = ["0.weight", "2.weight"]
    half = score_and_select(ScoreContext(model, names), "magnitude", 0.5)
    recorder = Recorder()
    mask = score_and_select(ScoreContext(model, names, mask=half), recorder, 0.9, rounds=3)
    targets = cumulative_sparsities(0.9, 3, start=0.5)
    assert [target for target, _ in recorder.seen] == pytest.approx(targets)
    assert [reached for _, reached in recorder.seen] == pytest.approx([0.5, *targets[:2]], abs=1 / 600)
    assert mask.total() - mask.kept() == round(600 * 0.9)


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5, float("nan")])
def test_bad_sparsity(sparsity):
    for call in (lambda: select({"w": torch.rand(4)}, sparsity),
                 lambda: select({"w": torch.rand(4)}, 0.5, output=["w"], output_sparsity=sparsity),
                 lambda: score_and_select(ScoreContext(nn.Linear(2, 2), ["weight"]), "magnitude", sparsity)):
        with pytest.raises(TicketlabError, match=r"outside \[0, 1\)") as error:
            call()
        assert "\n" not in str(error.value)


def one_line_error(call, match: str) -> None:
    with pytest.raises(TicketlabError, match=match) as error:
        call()
    assert "\n" not in str(error.value)


def test_bad_input_gives_one_line_errors():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    ctx = ScoreContext(model, ["0.weight", "2.weight"])
    one_line_error(lambda: select({"w": torch.rand(4)}, 0.5, scope="local"), "unknown scope 'local'")
    one_line_error(lambda: select({"w": torch.rand(4)}, 0.5, empty_layer="maybe"), "empty_layer 'maybe'")
    one_line_error(lambda: select({"w": torch.tensor([1.0, float("nan")])}, 0.5), "scores of w contain NaN")
    one_line_error(lambda: get_criterion("hessian"), "unknown criterion 'hessian'; expected one of magnitude")
    one_line_error(lambda: score_and_select(ctx, "hessian", 0.5), "unknown criterion")
    one_line_error(lambda: score_and_select(ctx, "snip", 0.5), "snip needs data")
    one_line_error(lambda: score_and_select(ctx, "grasp", 0.5, rounds=0), "rounds 0")
    one_line_error(lambda: score_and_select(ctx, "magnitude_sign", 0.5), "another step .*ScoreContext.init")
    init = {"0.weight": torch.zeros(4, 3)}
    one_line_error(lambda: score_and_select(ScoreContext(model, ctx.names, init=init), "magnitude_increase", 0.5),
                   "lack 2.weight")
    init = {"0.weight": torch.zeros(4, 3), "2.weight": torch.zeros(2, 5)}
    one_line_error(lambda: score_and_select(ScoreContext(model, ctx.names, init=init), "magnitude_increase", 0.5),
                   "shape")
    one_line_error(lambda: ScoreContext(model, ["1.weight"]), "names has 1.weight")
    one_line_error(lambda: ScoreContext(model, []), "names is empty")
    one_line_error(lambda: ScoreContext(model, ctx.names, mask=Mask({"9.weight": torch.ones(2, dtype=torch.bool)})),
                   "9.weight")


def test_round_to_rounds_each_groups_kept_count_up_keeping_the_best():
    scores = {"a": torch.arange(20.0), "b": torch.arange(6.0).flip(0), "c": torch.arange(3.0)}
    keep = select(scores, 0.6, scope="layerwise", round_to=4)
    # a: 8 of 20 kept, already a multiple; b: 2 of 6 kept, rounded up to 4; c: 1 of 3, up to all 3
    assert lists(keep) == {"a": [0] * 12 + [1] * 8, "b": [1, 1, 1, 1, 0, 0], "c": [1, 1, 1]}
    keep = select(scores, 0.75, scope="layerwise", round_to=4)  # a keeps 5: up to 8, the best 8
    assert int(keep["a"].sum()) == 8 and keep["a"][12:].all()


def test_round_to_rounds_down_where_an_earlier_mask_leaves_too_few_and_errs_below_one_multiple():
    scores = {"a": torch.arange(12.0)}
    current = {"a": flags(*[0] * 2 + [1] * 10)}  # 10 kept by an earlier mask, not a multiple of 4
    keep = select(scores, 0.25, scope="layerwise", current=current, round_to=4)  # 9 kept: up to 12 impossible
    assert lists(keep) == {"a": [0] * 4 + [1] * 8}
    one_line_error(lambda: select({"a": torch.arange(12.0)}, 0.5, current={"a": flags(*[0] * 9 + [1] * 3)},
                                  round_to=4), "a keeps 3 units, and an earlier mask pruned too many")


def test_round_to_in_score_and_select_gives_multiples_and_refuses_single_weights():
    model = build_model(ModelConfig(name="conv2"), (1, 12, 12), 10, generator=torch.Generator().manual_seed(0))
    ctx = ScoreContext(model, prunable_names(model))
    from ticketlab.structure.stage import units_from_mask

    units = units_from_mask(model, score_and_select(ctx, "l1_norm", 0.7, scope="layerwise", round_to=8))
    assert units and all(int(keep.sum()) % 8 == 0 or bool(keep.all()) for keep in units.values())
    one_line_error(lambda: score_and_select(ctx, "magnitude", 0.5, round_to=8), "round_to rounds the units")
    one_line_error(lambda: score_and_select(ctx, "l1_norm", 0.5, round_to=0), "round_to is a number of units")
