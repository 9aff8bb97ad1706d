"""Channel groups derived by tracing: equal to every zoo model's declaration, and for models a user
brings (a residual add, a depthwise conv, a layer used twice, concatenation) enough for every
structured criterion and for surgery, whose equivalence check holds."""

import copy

import pytest
import torch

from model_helpers import trained_looking
from test_models_structure import CASES, SHAPE, case_id
from ticketlab.config import ModelConfig, TicketlabError
from ticketlab.models import ZooModel, build_model
from ticketlab.models.registry import MODELS
from ticketlab.models.tracing import TraceError, channel_groups, derive_groups, trace
from ticketlab.sparsity.criteria import ScoreContext
from ticketlab.sparsity.mask import prunable_names, unit_mask_to_mask
from ticketlab.sparsity.selection import score_and_select
from ticketlab.structure.stage import units_from_mask
from ticketlab.structure.surgery import check_equivalent, count_macs, count_parameters, shrink
from user_models import (Branches, Branching, Gated, Grouped, MaxOverSpace, PaddedShortcut, ResidualDepthwise,
                         SharedLayer, WidthPad)


def layout(groups):
    """Groups as sets of what they cut, names aside (the zoo names its groups by hand)."""
    return sorted((g.size, sorted(map(repr, g.producers)), sorted(map(repr, g.consumers))) for g in groups)


def _declares(name):
    return MODELS[name](ModelConfig(name=name), SHAPE, 10).__class__.channel_groups is not ZooModel.channel_groups


@pytest.mark.parametrize("case", [case for case in CASES if _declares(case[0])], ids=case_id)
def test_the_groups_traced_from_every_zoo_model_are_the_ones_it_declares(case):
    name, cfg = case
    model = build_model(ModelConfig(name=name, **cfg), SHAPE, 10, generator=torch.Generator().manual_seed(0))
    assert layout(derive_groups(model, torch.zeros(2, *SHAPE))) == layout(model.channel_groups())


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("criterion", ["l1_norm", "bn_scale"])
def test_the_cifar_zoo_models_groups_are_traced_and_they_shrink_exactly(name, criterion):
    assert not _declares(name)
    model = build_model(ModelConfig(name=name), SHAPE, 10, generator=torch.Generator().manual_seed(0))
    trained_looking(model)
    units = units_from_mask(model.eval(), score_and_select(ScoreContext(model, prunable_names(model)), criterion, 0.5,
                                                           scope="layerwise"))
    small = shrink(model, units)  # raises unless equal to the masked model
    assert count_macs(small, SHAPE) < count_macs(model, SHAPE) / 2


def test_a_lottery_of_mobilenet_v2_prunes_and_rewinds(tmp_path):
    from ticketlab.config import DataConfig, LotteryConfig, Runtime, TrainConfig
    from ticketlab.lottery.experiment import run_lottery

    runtime = Runtime(runs_dir=str(tmp_path), progress=False)
    experiment = run_lottery(DataConfig(name="digits"), ModelConfig(name="mobilenet_v2"),
                             TrainConfig(steps="6it", batch_size=16), LotteryConfig(levels=2, rate=0.5), runtime)
    levels = experiment.lotteries[0].levels
    assert [round(level.summary.get("remaining", 1.0), 2) for level in levels] == [1.0, 0.5, 0.25]


USERS = [(ResidualDepthwise, (3, 16, 16)), (SharedLayer, (12,)), (Branches, (3, 8, 8)), (Grouped, (3, 8, 8)),
         (PaddedShortcut, (3, 8, 8))]


@pytest.mark.parametrize("make,shape", USERS, ids=lambda v: getattr(v, "__name__", ""))
@pytest.mark.parametrize("criterion", ["l1_norm", "l2_norm", "random_units", "magnitude_sign_units"])
def test_a_users_model_is_pruned_by_each_structured_criterion_and_shrinks_exactly(make, shape, criterion):
    torch.manual_seed(0)
    model = make()
    init = {name: t.clone() for name, t in model.state_dict().items()}
    trace(model, torch.randn(4, *shape))
    ctx = ScoreContext(model, prunable_names(model), init=init, generator=torch.Generator().manual_seed(1))
    units = units_from_mask(model, score_and_select(ctx, criterion, 0.5, scope="layerwise"))
    assert all(0 < int(keep.sum()) < len(keep) for keep in units.values())
    small = shrink(model, units)  # raises unless the small network computes what the masked one does
    assert count_parameters(small) < count_parameters(model)
    masked = copy.deepcopy(model)
    unit_mask_to_mask(model, units).apply(masked)
    assert check_equivalent(masked, small, torch.randn(16, *shape)) <= 1e-5  # on other inputs too
    again = {group.name: torch.ones(group.size, dtype=torch.bool) for group in channel_groups(small)}
    assert count_parameters(shrink(small, again)) == count_parameters(small)  # the small one is traced too


def test_bn_scale_prunes_the_groups_a_batchnorm_scales_and_leaves_the_others_whole():
    torch.manual_seed(0)
    model = ResidualDepthwise()
    trace(model, torch.randn(4, 3, 16, 16))
    ctx = ScoreContext(model, prunable_names(model))
    units = units_from_mask(model, score_and_select(ctx, "bn_scale", 0.5, scope="layerwise"))
    assert {name: int(keep.sum()) for name, keep in units.items()} == {"stem": 8, "expand": 24}  # expand has no BN
    assert check_equivalent(unit_mask_to_mask_applied(model, units), shrink(model, units),
                            torch.randn(8, 3, 16, 16)) <= 1e-5
    plain = SharedLayer()
    trace(plain, torch.zeros(2, 12))
    with pytest.raises(TicketlabError, match="bn_scale needs BatchNorm layers with a scale; SharedLayer has none"):
        score_and_select(ScoreContext(plain, ["inp.weight"]), "bn_scale", 0.5)


def unit_mask_to_mask_applied(model, units):
    masked = copy.deepcopy(model)
    unit_mask_to_mask(model, units).apply(masked)
    return masked


def test_a_depthwise_block_added_back_to_its_input_is_one_group_with_the_stream():
    model = ResidualDepthwise()
    groups = {g.name: g for g in derive_groups(model, torch.zeros(2, 3, 16, 16))}
    assert sorted(groups) == ["expand", "stem"]  # the head's outputs are the classes
    stream = {s.param for s in groups["stem"].producers}
    assert {"stem.weight", "bn0.weight", "depthwise.weight", "bn1.running_var", "pointwise.weight",
            "bn2.bias"} <= stream
    assert {(s.param, s.block) for s in groups["expand"].consumers} == {("head.weight", 16)}  # a 4x4 block each


def test_a_layer_used_twice_reads_and_writes_one_group():
    groups = derive_groups(SharedLayer(), torch.zeros(2, 12))
    assert [(g.name, g.size) for g in groups] == [("inp", 20)]
    assert {s.param for s in groups[0].producers} == {"inp.weight", "inp.bias", "shared.weight", "shared.bias"}
    assert {s.param for s in groups[0].consumers} == {"shared.weight", "out.weight"}


def test_concatenated_channels_keep_their_own_groups_at_their_offsets():
    groups = {g.name: g for g in derive_groups(Branches(), torch.zeros(2, 3, 8, 8))}
    assert {name: g.size for name, g in groups.items()} == {"a": 8, "b": 6, "mix": 12}
    assert [(s.param, s.offset) for s in groups["b"].consumers] == [("mix.weight", 8)]


def test_a_grouped_conv_is_cut_by_whole_groups():
    groups = {g.name: g for g in derive_groups(Grouped(), torch.zeros(2, 3, 8, 8))}
    assert {name: g.size for name, g in groups.items()} == {"a": 2, "b": 6}  # its 2 groups of 4 channels
    assert {(s.param, s.block) for s in groups["a"].producers} >= {("a.weight", 4), ("grouped.weight", 4)}
    model = Grouped()
    trace(model, torch.randn(2, 3, 8, 8))
    small = shrink(model, {"a": torch.tensor([False, True])})
    assert (small.grouped.in_channels, small.grouped.out_channels, small.grouped.groups) == (4, 4, 1)


def test_a_padded_shortcut_of_ones_own_keeps_the_padded_channels_its_block_keeps():
    model = PaddedShortcut()
    trace(model, torch.randn(2, 3, 8, 8))
    groups = {g.name: g.size for g in channel_groups(model)}
    assert groups == {"stem": 8, "conv[0:3]": 3, "conv[11:16]": 5}
    units = {"conv[0:3]": torch.tensor([True, False, False]), "conv[11:16]": torch.tensor([False, True, True,
                                                                                          False, True])}
    small = shrink(model, units)
    assert (small.shortcut.lo, small.shortcut.hi, small.conv.out_channels) == (1, 3, 12)
    widths = PaddedShortcut(WidthPad())
    trace(widths, torch.randn(2, 3, 8, 8))
    shrink(widths, {"stem": torch.tensor([True] * 7 + [False])})  # no padded channel cut: nothing to change
    with pytest.raises(TicketlabError, match="cannot shrink shortcut: it pads 4 . 4 zero channels whose units are "
                                             "cut, .* lo and hi attributes; use --backend torch-pruning") as info:
        shrink(widths, {"conv[0:4]": torch.tensor([True, False, True, True])})
    assert "\n" not in str(info.value)


def test_what_tracing_cannot_cut_is_left_whole():
    gated = {g.name for g in derive_groups(Gated(), torch.zeros(2, 3, 8, 8))}
    assert gated == set()  # the gate's sigmoid turns a pruned channel into 0.5: nothing is free to cut
    maxed = {g.name for g in derive_groups(MaxOverSpace(), torch.zeros(2, 3, 8, 8))}
    assert maxed == {"hidden"}  # a maximum that also gives indices is not modelled: the conv's channels stay


def test_refusals_are_one_line():
    with pytest.raises(TraceError, match="cannot trace Branching to find its channel groups .*torch-pruning") as info:
        derive_groups(Branching(), torch.zeros(2, 4))
    assert "\n" not in str(info.value)
    with pytest.raises(TicketlabError, match=r"SharedLayer declares no channel groups and was not traced; call "
                                             r"ticketlab.trace\(model, example_inputs\)"):
        channel_groups(SharedLayer())
    model = SharedLayer()
    trace(model, torch.zeros(2, 12))
    model.inp = torch.nn.Linear(12, 30)  # changed after tracing: the traced groups no longer hold
    with pytest.raises(TicketlabError, match="was not traced"):
        channel_groups(model)


def test_a_shrunk_model_of_ones_own_is_saved_and_loaded_by_its_factory_and_exports_to_onnx(tmp_path):
    import ticketlab as tl
    from ticketlab.structure.saving import export_onnx

    torch.manual_seed(0)
    model = ResidualDepthwise()
    tl.trace(model, torch.randn(4, 3, 16, 16))
    mask = tl.score_and_select(tl.ScoreContext(model, tl.prunable_names(model)), "l1_norm", 0.5, scope="layerwise")
    units = tl.units_from_mask(model, mask)
    small = tl.shrink(model, units)
    tl.save_model(small, tmp_path / "mine.safetensors", units)
    with pytest.raises(TicketlabError, match=r"holds a user_models.ResidualDepthwise; load it with "
                                             r"ticketlab.load\(path, factory=...\)"):
        tl.load(tmp_path / "mine.safetensors")
    loaded = tl.load(tmp_path / "mine.safetensors", factory=ResidualDepthwise)
    x = torch.randn(8, 3, 16, 16)
    assert check_equivalent(small.eval(), loaded, x) == 0  # the same weights in the same architecture
    export_onnx(loaded, tmp_path / "mine.onnx", (3, 16, 16))
    import onnx
    onnx.checker.check_model(str(tmp_path / "mine.onnx"))
