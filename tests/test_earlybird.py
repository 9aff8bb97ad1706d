import json
from typing import Any

import pytest
import torch
from torch import nn

from ticketlab.config import DataConfig, ModelConfig, PruneConfig, Runtime, TicketlabError, TrainConfig
from ticketlab.data import load_data
from ticketlab.sparsity.prune import prune
from ticketlab.store import load_checkpoint
from ticketlab.structure.stage import units_from_mask
from ticketlab.structure.earlybird import EarlyBird, earlybird, is_stable, mask_distance
from ticketlab.training.loop import Trainer, fit
from ticketlab.training.stage import init_model

DIGITS = DataConfig(name="digits", train_size=500)
VGG = ModelConfig(name="vgg11")


def flags(*bits: int) -> torch.Tensor:
    return torch.tensor(bits, dtype=torch.bool)


class Scripted(EarlyBird):
    """An EarlyBird whose masks come from a list instead of a model."""

    def __init__(self, masks: list[torch.Tensor], **kwargs: Any):
        super().__init__([0.5], **kwargs)
        self.script = iter(masks)

    def channel_masks(self, model: nn.Module) -> dict[float, torch.Tensor]:
        return {0.5: next(self.script)}


def test_mask_distance_is_the_fraction_of_differing_flags():
    assert mask_distance(flags(1, 1, 0, 0), flags(1, 0, 0, 1)) == 0.5
    assert mask_distance(flags(1, 0), flags(1, 0)) == 0.0
    with pytest.raises(TicketlabError, match="cannot be compared"):
        mask_distance(flags(1), flags(1, 0))


def run_script(masks: list[torch.Tensor], **kwargs: Any) -> tuple[Scripted, list[bool]]:
    detector = Scripted(masks, **kwargs)
    return detector, [detector.on_epoch_end(epoch, nn.Identity()) for epoch in range(1, len(masks) + 1)]


def test_ticket_is_drawn_at_the_first_epoch_whose_newest_mask_is_near_each_of_the_four_before():
    a = flags(*[0] * 10)
    b = flags(1, *[0] * 9)  # 0.1 from a: not under the threshold
    # Windows: epochs 1-5 (a b a b b), 2-6, 3-7 each hold an a; epochs 4-8 are all b.
    detector, stops = run_script([a, b, a, b, b, b, b, b, b])
    assert detector.found == {0.5: 8}
    assert not any(stops)  # stop=False never stops
    assert detector.epochs == list(range(1, 10)) and len(detector.distances(0.5)) == 9


def test_ticket_needs_a_full_window_and_stop_stops_once_every_ratio_has_one():
    base = [0] * 20
    drifting = [flags(*base[:k], 1, *base[k + 1:]) for k in range(7)]  # each 0.1 from the others
    detector, stops = run_script(drifting, stop=True)
    assert detector.found == {0.5: None} and not any(stops)
    near = flags(1, *base[1:])  # 0.05 from the all-zero mask: under the threshold
    masks = [flags(*base), near, flags(*base), near, flags(*base), near]
    assert not is_stable(masks[:4]) and is_stable(masks[:5])
    detector, stops = run_script(masks, stop=True)
    assert detector.found == {0.5: 5} and stops == [False] * 4 + [True, True]


def test_detector_rejects_bad_settings():
    with pytest.raises(TicketlabError, match="outside"):
        EarlyBird([0.3, 1.0])
    with pytest.raises(TicketlabError, match="cannot draw early birds"):
        EarlyBird([0.5], "magnitude")


def bn_scale_total(model: nn.Module) -> float:
    return sum(m.weight.abs().sum().item() for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_slimming_shrinks_the_batchnorm_scales():
    data = load_data(DIGITS)
    totals = {}
    for s in (0.0, 1e-3):
        model = init_model(VGG, data, 0)
        fit(model, data, TrainConfig(steps="3ep", bn_l1=s), progress=False)
        totals[s] = bn_scale_total(model)
    assert totals[1e-3] < totals[0.0] * 0.995


class Recorder:
    """An EpochCallback that remembers the epochs it saw (persisted) and stops at `stop_at`."""

    def __init__(self, stop_at: int | None = None, crash_at: int | None = None):
        self.seen: list[int] = []
        self.stop_at, self.crash_at = stop_at, crash_at

    def on_epoch_end(self, epoch: int, model: nn.Module) -> bool:
        if epoch == self.crash_at:
            raise KeyboardInterrupt  # a kill between this epoch's end and its resume point
        self.seen.append(epoch)
        return epoch == self.stop_at

    def state_dict(self) -> dict[str, Any]:
        return {"seen": list(self.seen)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = list(state["seen"])


def test_a_callback_stops_training_and_final_and_best_are_still_saved(tmp_path):
    data = load_data(DataConfig(name="digits"))
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    recorder = Recorder(stop_at=2)
    summary = fit(model, data, TrainConfig(steps="5ep", lr=1e-2), directory=tmp_path, progress=False,
                  callbacks=[recorder])
    assert summary["stopped_early_at"] == 2 and summary["final"]["epoch"] == 2 and recorder.seen == [1, 2]
    assert (tmp_path / "checkpoints/final.pt").exists() and (tmp_path / "checkpoints/best.pt").exists()
    assert not (tmp_path / "resume.pt").exists()


def test_callbacks_resume_with_the_state_they_persisted(tmp_path):
    data = load_data(DataConfig(name="digits"))
    cfg = TrainConfig(steps="5ep", lr=1e-2)

    def trainer(directory, recorder):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        return Trainer(model, data, cfg, directory, progress=False, callbacks=[recorder])

    with pytest.raises(KeyboardInterrupt):
        trainer(tmp_path / "killed", Recorder(crash_at=3)).run()
    resumed = Recorder()
    summary = trainer(tmp_path / "killed", resumed).run()
    clean = Recorder()
    reference = trainer(tmp_path / "clean", clean).run()
    assert resumed.seen == clean.seen == [1, 2, 3, 4, 5]
    assert summary["final"]["val_loss"] == reference["final"]["val_loss"] and summary["stopped_early_at"] is None


def test_earlybird_run_finds_tickets_that_satisfy_the_rule(tmp_path):
    runtime = Runtime(runs_dir=str(tmp_path), progress=False)
    training = TrainConfig(steps="10ep", bn_l1=1e-4)
    result = earlybird(DIGITS, VGG, training, (0.3, 0.5, 0.7), runtime, stop=True)
    assert set(result.found) == {0.3, 0.5, 0.7} and result.total_epochs == 10 and not result.cached
    saved = json.loads((result.path / "distances.json").read_text())
    epochs = saved["epochs"]
    assert epochs == list(range(1, len(epochs) + 1))
    for ratio, found in result.found.items():
        matrix = saved["distances"][f"{ratio:g}"]
        stable = [i >= 4 and all(matrix[i][j] < 0.1 for j in range(i - 4, i)) for i in range(len(epochs))]
        assert found == (epochs[stable.index(True)] if any(stable) else None)
        if found is not None:
            assert result.cost[ratio] == found / 10
            assert load_checkpoint(result.ticket_checkpoint(ratio))["epoch"] == found
    last = max((e for e in result.found.values() if e is not None), default=None)
    stopped = last if None not in result.found.values() and last < 10 else None
    assert result.summary["stopped_early_at"] == stopped and epochs[-1] == (stopped or 10)
    again = earlybird(DIGITS, VGG, training, (0.3, 0.5, 0.7), runtime, stop=True)
    assert again.cached and again.found == result.found
    # The ticket a preset prunes at a ratio's early-bird epoch is the mask the detector drew there.
    dense = result.as_training(DIGITS, VGG, training)
    assert any(found is not None for found in result.found.values())
    for ratio, found in result.found.items():
        if found is None:
            continue
        model = init_model(VGG, load_data(DIGITS), 0)
        model.load_state_dict(dense.state_dict(f"{found}ep"))
        drawn = EarlyBird([ratio]).channel_masks(model)[ratio]
        pruned = prune(dense, PruneConfig(criterion="bn_scale", structured=True, sparsity=ratio, at=f"{found}ep",
                                          scope="global"), runtime).mask()
        assert torch.equal(torch.cat(list(units_from_mask(model, pruned).values())), drawn)
