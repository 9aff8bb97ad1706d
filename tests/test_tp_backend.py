"""The torch-pruning backend: a model outside the zoo shrinks to what its masked self computes,
zoo models shrink to what ticketlab's own surgery gives, and what it cannot do is an error."""

from __future__ import annotations

import builtins
import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ticketlab
from ticketlab.cli import main
from ticketlab.config import TicketlabError
from ticketlab.structure.surgery import check_equivalent, count_parameters, shrink
from ticketlab.structure.tp_backend import shrink_with_torch_pruning, shrink_zoo_with_torch_pruning
from model_helpers import trained_looking
from test_surgery import half_mask, make

pytest.importorskip("torch_pruning", reason="the backend needs the optional torch-pruning package")


class Residual(nn.Module):
    """Not a zoo model: conv-bn-relu, a residual pair whose sum feeds the head, pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(8)
        self.inner = nn.Conv2d(8, 6, 3, padding=1)
        self.inner_bn = nn.BatchNorm2d(6)
        self.back = nn.Conv2d(6, 8, 3, padding=1)
        self.back_bn = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem_bn(self.stem(x)))
        out = F.relu(self.inner_bn(self.inner(x)))
        x = F.relu(self.back_bn(self.back(out)) + x)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def residual() -> Residual:
    model = Residual()
    trained_looking(model)
    return model


def flags(*kept: int) -> torch.Tensor:
    """Keep-flags of length len(kept) from 0/1s."""
    return torch.tensor(kept, dtype=torch.bool)


X = torch.randn((4, 3, 6, 6), generator=torch.Generator().manual_seed(1))
STREAM = flags(1, 0, 1, 1, 0, 1, 1, 0)  # the channels stem and back add into


def test_a_model_outside_the_zoo_shrinks_to_its_masked_self():
    model = residual()
    before = {key: t.clone() for key, t in model.state_dict().items()}
    keep = {"stem": STREAM, "back": STREAM, "inner": flags(0, 1, 1, 0, 1, 1)}
    small = shrink_with_torch_pruning(model, keep, X)
    assert (small.stem.out_channels, small.inner.out_channels, small.back.out_channels) == (5, 4, 5)
    assert small.head.in_features == 5 and small.stem_bn.num_features == 5
    assert count_parameters(small) < count_parameters(model)
    # The same check, by hand: the input model with the pruned channels zeroed.
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for layer, norm, keep_flags in (("stem", "stem_bn", STREAM), ("back", "back_bn", STREAM),
                                        ("inner", "inner_bn", keep["inner"])):
            for module in (masked.get_submodule(layer), masked.get_submodule(norm)):
                module.weight[~keep_flags] = 0
                module.bias[~keep_flags] = 0
    assert check_equivalent(masked, small, torch.randn((6, 3, 5, 5))) <= 1e-5
    assert all(torch.equal(before[key], t) for key, t in model.state_dict().items())  # untouched


@pytest.mark.parametrize("keep, message", [
    ({"stem": STREAM}, "couples stem with back"),  # back is coupled by the residual add, and keeps all
    ({"stem": STREAM, "back": flags(1, 1, 1, 1, 0, 1, 1, 0)}, "couples stem with back"),
    ({"inner": flags(0, 0, 0, 0, 0, 0)}, "keep no channel, which would empty the layer"),
    ({"nonexistent": STREAM}, "'nonexistent' \\(no such module\\)"),
    ({"stem_bn": STREAM}, "a BatchNorm2d"),
    ({"inner": STREAM}, "expected \\(6,\\)"),
])
def test_bad_keep_flags_are_one_line_errors(keep, message):
    model = residual()
    with pytest.raises(TicketlabError, match=message) as error:
        shrink_with_torch_pruning(model, keep, X)
    assert "\n" not in str(error.value)


def test_a_prune_the_masked_model_does_not_compute_is_refused():
    # Pruning a channel that a sigmoid reads: masked, the channel reads sigmoid(0) = 0.5; cut, nothing.
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sigmoid(), nn.Conv2d(4, 2, 3))
    with pytest.raises(TicketlabError, match="does not compute what the masked one does: the shrunk model differs"):
        shrink_with_torch_pruning(model, {"0": flags(1, 0, 1, 1)}, X)


@pytest.mark.parametrize("name, cfg, shape", [
    ("vgg11", {}, (1, 8, 8)),
    ("resnet20", {"shortcut": "B"}, (3, 8, 8)),
    ("conv4", {}, (3, 8, 8)),
])
def test_zoo_models_shrink_to_what_ticketlab_surgery_gives(name, cfg, shape):
    model = make(name, cfg, shape, seed=3)
    units = half_mask(model, seed=3)
    small, ours = shrink_zoo_with_torch_pruning(model, units), shrink(model, units)
    assert count_parameters(small) == count_parameters(ours) < count_parameters(model)
    assert small.state_dict().keys() == ours.state_dict().keys()
    for key, tensor in ours.state_dict().items():
        assert torch.equal(small.state_dict()[key], tensor), key
    x = torch.randn((5, *shape), generator=torch.Generator().manual_seed(2))
    assert check_equivalent(ours, small, x) <= 1e-5


def test_option_a_resnet_shrinks_inner_channels_and_refuses_its_streams():
    # torch-pruning 1.6.1 traces the zero-padding shortcut, F.pad(x[:, :, ::2, ::2]), as an
    # elementwise op: it ties stream channel i of stage 1 to channel i of stage 2 (really
    # i + lo), and through the residual adds every stage's stream into one group. Inner
    # channels (conv1 of each block) are not on the streams, so those shrink correctly.
    model = make("resnet20", {"shortcut": "A"}, (3, 8, 8))
    units = half_mask(model)
    inner = {name: keep for name, keep in units.items() if "stream" not in name}
    assert count_parameters(shrink_zoo_with_torch_pruning(model, inner)) == count_parameters(shrink(model, inner))
    with pytest.raises(TicketlabError, match="torch-pruning 1.6.1's graph of ResNet couples") as error:
        shrink_zoo_with_torch_pruning(model, units)
    assert "mis-traces" in str(error.value) and "--backend ticketlab" in str(error.value)
    assert "\n" not in str(error.value)


def test_zoo_units_for_another_model_are_refused():
    model = make("conv4", {}, (3, 8, 8))
    with pytest.raises(TicketlabError, match="unknown channel group"):
        shrink_zoo_with_torch_pruning(model, half_mask(make("vgg11", {}, (1, 8, 8))))
    with pytest.raises(TicketlabError, match="a mask made for this model"):
        shrink_zoo_with_torch_pruning(model, {"features.conv1": torch.ones(32, dtype=torch.bool)})
    with pytest.raises(TicketlabError, match="keeps no units"):
        shrink_zoo_with_torch_pruning(model, {"features.conv1": torch.zeros(64, dtype=torch.bool)})


def test_without_torch_pruning_the_error_says_how_to_install_it(monkeypatch):
    real_import = builtins.__import__

    def no_torch_pruning(name, *args, **kwargs):
        if name == "torch_pruning":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch_pruning)
    with pytest.raises(TicketlabError, match=r"pip install 'ticketlab\[pruning\]'"):
        shrink_with_torch_pruning(residual(), {"inner": flags(0, 1, 1, 1, 1, 1)}, X)


def structured_prune_run(runs: str, capsys, model: str, steps: str) -> str:
    """The directory of a layerwise L1 structured prune run of `model` trained on digits for `steps`."""
    assert main(["train", "--dataset", "digits", "--model", model, "--steps", steps, "--runs-dir", runs,
                 "--quiet"]) == 0
    train_name = capsys.readouterr().out.strip().splitlines()[-1].split("/")[-1]
    assert main(["prune", "--run", train_name, "--runs-dir", runs, "--criterion", "l1_norm", "--structured",
                 "--sparsity", "0.5", "--scope", "layerwise", "--quiet", "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"]


def test_shrink_command_with_the_torch_pruning_backend(tmp_path, capsys):
    prune_dir = structured_prune_run(str(tmp_path / "runs"), capsys, "conv2", "20it")
    results = {}
    for backend in ("torch-pruning", "ticketlab"):
        assert main(["shrink", "--run", prune_dir, "--backend", backend, "--quiet", "--json"]) == 0
        results[backend] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    ours, theirs = results["ticketlab"], results["torch-pruning"]
    assert theirs["run_dir"] != ours["run_dir"] and theirs["metrics"]["backend"] == "torch-pruning"
    assert theirs["metrics"]["max_difference"] <= 1e-5
    assert theirs["metrics"]["parameters"] == ours["metrics"]["parameters"]
    assert theirs["metrics"]["metrics"] == ours["metrics"]["metrics"]
    small = ticketlab.load(theirs["run_dir"] + "/model.safetensors")
    assert small.features.conv1.out_channels == 32


def test_shrink_command_on_option_a_resnet_suggests_ticketlab_surgery_and_writes_nothing(tmp_path, capsys):
    prune_dir = structured_prune_run(str(tmp_path / "runs"), capsys, "resnet20", "2it")
    assert main(["shrink", "--run", prune_dir, "--backend", "torch-pruning", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert "mis-traces this architecture" in err and "--backend ticketlab" in err and err.count("\n") == 1
    assert not list((tmp_path / "runs").glob("shrink-*"))
