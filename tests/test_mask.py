import pytest
import torch
from torch import nn

from ticketlab.config import ModelConfig, TicketlabError
from ticketlab.models import build_model
from ticketlab.sparsity.mask import Mask, output_layer_names, prunable_names, unit_mask_to_mask


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 6 * 6, 5), nn.ReLU(), nn.Linear(5, 2))


def zoo(name: str, shape=(1, 8, 8)) -> nn.Module:
    return build_model(ModelConfig(name=name), shape, 10, generator=torch.Generator().manual_seed(0))


def test_prunable_names_default_patterns_and_output_layer_of_a_users_module():
    model = tiny()
    assert prunable_names(model) == ["0.weight", "3.weight", "5.weight"]
    assert prunable_names(model, ["*.bias"]) == ["0.bias", "3.bias", "5.bias"]
    assert prunable_names(model, ["3.weight", "5.*"]) == ["3.weight", "5.weight", "5.bias"]
    assert output_layer_names(model) == ["5.weight", "5.bias"]
    with pytest.raises(TicketlabError, match="no parameter matches fc9"):
        prunable_names(model, ["fc9"])


def test_zoo_models_declare_their_prunable_weights_and_output_layer():
    model = zoo("lenet300_100", (1, 28, 28))
    assert prunable_names(model) == ["fc1.weight", "fc2.weight", "fc3.weight"]
    assert output_layer_names(model) == ["fc3.weight", "fc3.bias"]


def test_counts_report_hamming_and_equality():
    model = tiny()
    mask = Mask.ones(model)
    assert mask.sparsity() == 0 and mask.total() == 27 + 540 + 10
    pruned = Mask({**mask, "3.weight": torch.arange(540).reshape(5, 108) % 4 == 0})
    assert pruned.kept() == 27 + 135 + 10
    assert pruned.hamming(mask) == 405
    assert pruned != mask and pruned == Mask(dict(pruned))
    layers = {row.name: row for row in pruned.layers()}
    assert layers["3.weight"].pruned == 405 and layers["3.weight"].sparsity == 0.75
    report = pruned.report()
    assert "3.weight" in report and "75.00%" in report and report.splitlines()[-1].startswith("total")
    with pytest.raises(TicketlabError, match="different parameters"):
        pruned.hamming(Mask({"3.weight": pruned["3.weight"]}))


def test_apply_zeroes_exactly_the_pruned_entries():
    model = tiny()
    before = model[3].weight.detach().clone()
    keep = torch.rand(5, 108, generator=torch.Generator().manual_seed(1)) > 0.5
    Mask({"3.weight": keep}).apply(model)
    assert torch.equal(model[3].weight[~keep], torch.zeros(int((~keep).sum())))
    assert torch.equal(model[3].weight[keep], before[keep])


def test_a_mask_for_another_model_is_a_clear_error():
    model = tiny()
    with pytest.raises(TicketlabError, match="shape \\(5, 100\\).*expected a mask made for this model"):
        Mask({"3.weight": torch.ones(5, 100, dtype=torch.bool)}).apply(model)
    with pytest.raises(TicketlabError, match="'fc1.weight', which the model does not have"):
        Mask({"fc1.weight": torch.ones(2, dtype=torch.bool)}).check_fits(model)


def test_save_and_load_round_trip_and_corrupt_files(tmp_path):
    mask = Mask({"a": torch.rand(3, 4) > 0.5, "b": torch.zeros(2, dtype=torch.bool)})
    mask.save(tmp_path / "mask.safetensors")
    assert Mask.load(tmp_path / "mask.safetensors") == mask
    (tmp_path / "bad.safetensors").write_bytes(b"not a mask")
    with pytest.raises(TicketlabError, match="bad.safetensors is corrupt"):
        Mask.load(tmp_path / "bad.safetensors")
    with pytest.raises(TicketlabError, match="does not exist"):
        Mask.load(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("name", ["vgg11", "resnet20", "conv2"])
def test_structured_mask_silences_the_unit_bn_included(name):
    model = zoo(name).eval()
    with torch.no_grad():  # trained-like BN: non-trivial scale and shift
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-1, 1)
    group = model.channel_groups()[0]
    keep = torch.ones(group.size, dtype=torch.bool)
    keep[1] = False
    mask = unit_mask_to_mask(model, {group.name: keep})
    assert mask.total() > Mask.ones(model).total()  # biases / BN scale and shift are covered too
    mask.apply(model)
    producer = group.producers[0].param.rsplit(".", 1)[0]
    consumer = group.consumers[0].param.rsplit(".", 1)[0]
    modules = dict(model.named_modules())
    seen = {}
    handle = modules[consumer].register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    model(torch.randn(4, 1, 8, 8))
    handle.remove()
    block = group.consumers[0].block
    x = seen["x"]
    channel = x[:, 1] if x.dim() == 4 else x[:, block:2 * block]
    assert torch.count_nonzero(channel) == 0, f"{producer} unit 1 still reaches {consumer}"
    other = x[:, 0] if x.dim() == 4 else x[:, :block]
    assert torch.count_nonzero(other) > 0


def test_structured_mask_errors():
    model = zoo("conv2")
    with pytest.raises(TicketlabError, match="unknown channel group 'nope'"):
        unit_mask_to_mask(model, {"nope": torch.ones(3, dtype=torch.bool)})
    name = model.channel_groups()[0].name
    with pytest.raises(TicketlabError, match="expected \\(64,\\)"):
        unit_mask_to_mask(model, {name: torch.ones(3, dtype=torch.bool)})


def test_a_saved_mask_keeps_the_models_layer_order(tmp_path):
    mask = Mask({"fc3.weight": torch.ones(2, dtype=torch.bool), "fc1.weight": torch.zeros(3, dtype=torch.bool)})
    mask.save(tmp_path / "m.safetensors")
    assert list(Mask.load(tmp_path / "m.safetensors")) == ["fc3.weight", "fc1.weight"]
