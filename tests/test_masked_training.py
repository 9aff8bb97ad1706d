import copy

import pytest
import torch

from ticketlab.config import DataConfig, ModelConfig, TicketlabError, TrainConfig
from ticketlab.data import Dataset, load_data
from ticketlab.models import build_model
from ticketlab.sparsity.mask import Mask, prunable_names, unit_mask_to_mask
from ticketlab.sparsity.masked import MaskedTraining, masked_fit
from ticketlab.training.loop import Trainer

OPTIMIZERS = {
    "sgd_nesterov_wd": dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "adam_wd": dict(optimizer="adam", lr=1e-3, weight_decay=5e-4),
    "adadelta_wd": dict(optimizer="adadelta", lr=1.0, weight_decay=5e-4),
    "sgd_momentum_l1": dict(optimizer="sgd", lr=0.05, momentum=0.9, l1=1e-4),
    "adam_l2": dict(optimizer="adam", lr=1e-3, l2=1e-4),
}


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_data(DataConfig(name="digits"))


def build(name: str, data: Dataset) -> torch.nn.Module:
    return build_model(ModelConfig(name=name), data.input_shape, data.num_classes,
                       generator=torch.Generator().manual_seed(0))


def random_mask(model: torch.nn.Module, sparsity: float = 0.8) -> Mask:
    params = dict(model.named_parameters())
    generator = torch.Generator().manual_seed(1)
    return Mask({name: torch.rand(params[name].shape, generator=generator) >= sparsity
                 for name in prunable_names(model)})


class Checked(MaskedTraining):
    """Also counts, before each step, the pruned weights that the previous step left non-zero."""

    def __init__(self, model: torch.nn.Module, mask: Mask):
        super().__init__(model, mask)
        self.leaks: list[int] = []

    def before_step(self) -> None:
        self.leaks.append(pruned_nonzero(self.params, self.keep))
        super().before_step()


def pruned_nonzero(tensors: list[torch.Tensor], keeps: list[torch.Tensor]) -> int:
    return sum(int(t[keep == 0].count_nonzero()) for t, keep in zip(tensors, keeps))


def masked_state(trainer: Trainer, constraint: MaskedTraining) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The optimiser's per-entry state tensors of the masked parameters, and their keep-masks."""
    state = trainer.optimizer.state
    pairs = [(value, keep) for param, keep in zip(constraint.params, constraint.keep)
             for value in state[param].values() if torch.is_tensor(value) and value.shape == param.shape]
    assert pairs, "expected optimiser state for the masked parameters"
    return [value for value, _ in pairs], [keep for _, keep in pairs]


def pruned_state_nonzero(trainer: Trainer, constraint: MaskedTraining) -> int:
    return pruned_nonzero(*masked_state(trainer, constraint))


def train_masked(model: torch.nn.Module, data: Dataset, mask: Mask, steps: str = "20it",
                 **options) -> tuple[Trainer, Checked]:
    constraint = Checked(model, mask)
    trainer = Trainer(model, data, TrainConfig(steps=steps, batch_size=32, save_at="", **options),
                      progress=False, constraint=constraint)
    trainer.run()
    return trainer, constraint


@pytest.mark.parametrize("model_name", ["lenet300_100", "conv2"])
@pytest.mark.parametrize("options", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
def test_pruned_weights_and_their_state_stay_exactly_zero_and_the_rest_trains(digits, model_name, options):
    model = build(model_name, digits)
    mask = random_mask(model)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer, constraint = train_masked(model, digits, mask, **options)

    assert len(constraint.leaks) == 20 and not any(constraint.leaks)
    assert pruned_nonzero(constraint.params, constraint.keep) == 0
    assert pruned_state_nonzero(trainer, constraint) == 0
    # Every kept entry was stepped; its weight may, rarely, come back to its start value exactly.
    for value, keep in zip(*masked_state(trainer, constraint)):
        assert value[keep == 1].count_nonzero() == keep.sum()
    params = dict(model.named_parameters())
    changed = sum(int((params[n][keep] != before[n][keep]).sum()) for n, keep in mask.items())
    assert changed > 0.999 * mask.kept()
    init, final = trainer.rows[0], trainer.rows[-1]
    assert final["val_loss"] < init["val_loss"]


def test_structured_mask_keeps_batchnorm_scale_and_shift_of_pruned_channels_at_zero(digits):
    model = build("resnet20", digits)
    groups = {g.name: g.size for g in model.channel_groups()}
    units = {name: torch.arange(groups[name]) % 2 == 0 for name in ("blocks.0.conv1", "stage1.stream")}
    mask = unit_mask_to_mask(model, units)
    assert {"bn.weight", "bn.bias", "blocks.0.bn1.weight", "blocks.0.bn1.bias"} <= mask.keys()
    trainer, constraint = train_masked(model, digits, mask, optimizer="sgd", lr=0.05, momentum=0.9,
                                       weight_decay=5e-4)
    assert not any(constraint.leaks) and pruned_nonzero(constraint.params, constraint.keep) == 0
    assert pruned_state_nonzero(trainer, constraint) == 0
    assert trainer.rows[-1]["val_loss"] < trainer.rows[0]["val_loss"]


class Killed(Exception):
    pass


def run_until_first_resume_point(trainer: Trainer) -> None:
    """Run `trainer` as if killed right after it saved its first resume point (end of epoch 1)."""
    save = trainer._save_resume_point

    def save_then_die() -> None:
        save()
        raise Killed

    trainer._save_resume_point = save_then_die  # type: ignore[method-assign]
    with pytest.raises(Killed):
        trainer.run()


@pytest.mark.parametrize("first_part", ["masked", "dense"])
def test_a_resumed_run_is_masked(digits, tmp_path, first_part):
    cfg = TrainConfig(steps="2ep", batch_size=32, optimizer="sgd", lr=0.05, momentum=0.9, save_at="")
    init = build("lenet300_100", digits)
    mask = random_mask(init)
    model = copy.deepcopy(init)
    constraint = MaskedTraining(model, mask) if first_part == "masked" else None
    run_until_first_resume_point(Trainer(model, digits, cfg, tmp_path, progress=False, constraint=constraint))

    resumed_model = copy.deepcopy(init)  # dense weights: the resume point must replace and mask them
    resumed = Checked(resumed_model, mask)
    trainer = Trainer(resumed_model, digits, cfg, tmp_path, progress=False, constraint=resumed)
    trainer.run()
    assert len(resumed.leaks) == trainer.schedule.total - trainer.rows[1]["iteration"]  # it resumed
    assert not any(resumed.leaks) and pruned_nonzero(resumed.params, resumed.keep) == 0
    assert pruned_state_nonzero(trainer, resumed) == 0
    if first_part == "masked":  # and a masked run resumes exactly like one never interrupted
        uninterrupted = copy.deepcopy(init)
        masked_fit(uninterrupted, digits, cfg, mask, progress=False)
        for (name, p), q in zip(resumed_model.named_parameters(), uninterrupted.parameters()):
            assert torch.equal(p, q), name


def test_a_mask_that_keeps_everything_trains_exactly_like_dense_training(digits):
    cfg = TrainConfig(steps="20it", batch_size=32, save_at="")
    dense, masked = build("lenet300_100", digits), build("lenet300_100", digits)
    Trainer(dense, digits, cfg, progress=False).run()
    masked_fit(masked, digits, cfg, Mask.ones(masked), progress=False)
    for p, q in zip(dense.parameters(), masked.parameters()):
        assert torch.equal(p, q)


def test_a_mask_for_another_model_is_a_clear_error(digits):
    lenet = build("lenet300_100", digits)
    with pytest.raises(TicketlabError, match="does not have"):
        masked_fit(lenet, digits, TrainConfig(steps="1it"), random_mask(build("conv2", digits)), progress=False)
    wrong_shape = Mask({"fc1.weight": torch.ones(3, 3, dtype=torch.bool)})
    with pytest.raises(TicketlabError, match="fc1.weight has shape"):
        MaskedTraining(lenet, wrong_shape)


@pytest.mark.parametrize("make_optimizer", [
    lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
    lambda params: torch.optim.Adam(params, lr=1e-3, weight_decay=5e-4),
    lambda params: torch.optim.AdamW(params, lr=1e-3, amsgrad=True),
    lambda params: torch.optim.Adadelta(params, lr=1.0),
], ids=["sgd_nesterov_wd", "adam_wd", "adamw_amsgrad", "adadelta"])
def test_in_a_loop_of_ones_own_one_call_after_each_step_keeps_pruned_weights_at_zero(digits, make_optimizer):
    """The contract for a user's loop (after_step) trains the kept weights exactly as the masked
    gradients of fit's loop (before_step) do, and leaves the pruned ones and their state at zero."""
    results = []
    for contract in ("after_step", "before_step"):
        model = build("lenet300_100", digits)
        mask = random_mask(model)
        keep = MaskedTraining(model, mask)  # zeroes the pruned weights: all after_step needs
        optimizer = make_optimizer(model.parameters())
        if contract == "before_step":
            keep.enforce(optimizer)  # as fit's loop does
        generator = torch.Generator().manual_seed(2)
        for _ in range(15):
            batch = torch.randint(len(digits.train.y), (32,), generator=generator)
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(digits.train.x[batch]), digits.train.y[batch]).backward()
            if contract == "before_step":
                keep.before_step()
            optimizer.step()
            if contract == "after_step":
                keep.after_step(optimizer)
                assert pruned_nonzero(keep.params, keep.keep) == 0
                assert all(pruned_nonzero([v], [k]) == 0 for p, k in zip(keep.params, keep.keep)
                           for v in optimizer.state[p].values() if torch.is_tensor(v) and v.shape == p.shape)
        results.append({name: t.detach().clone() for name, t in model.state_dict().items()})
    assert all(torch.equal(results[0][name], results[1][name]) for name in results[0])
