import csv
import dataclasses
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from ticketlab.config import DataConfig, LotteryConfig, ModelConfig, Runtime, TicketlabError, TrainConfig
from ticketlab.lottery.controls import CONTROLS, REINIT_SEED_OFFSET, control
from ticketlab.lottery.experiment import LotteryExperiment, run_lottery
from ticketlab.lottery.levels import cumulative, level_run, lottery
from ticketlab.lottery.report import lottery_rows
from ticketlab.lottery.retrain import Setting
from ticketlab.models import build_model
from ticketlab.experiments.preset import load_preset
from ticketlab.sparsity.mask import Mask, output_layer_names, prunable_names
from ticketlab.sparsity.selection import select
from ticketlab.training.stage import train, train_run_handle, with_checkpoints

SRC = Path(__file__).resolve().parents[1] / "src"
DIGITS = DataConfig(name="digits")
LENET = ModelConfig(name="lenet300_100")
SHORT = TrainConfig(steps="2ep")  # 42 iterations of 21 per epoch on digits
LTH_LENET = load_preset("lth-lenet")
PAPER_LADDER = {3: 51.3, 7: 21.1, 9: 13.5, 15: 3.6, 18: 1.9, 20: 1.2}  # % remaining, Frankle & Carbin fig. 3


def quiet(path: Path) -> Runtime:
    return Runtime(runs_dir=str(path), progress=False)


@dataclass
class Ran:
    experiment: LotteryExperiment
    runtime: Runtime
    seconds: float


def module_lottery(tmp_path_factory, *args, **kwargs) -> Ran:
    """run_lottery in a runs directory of its own, for a module-scoped fixture (training is the cost)."""
    runtime = quiet(tmp_path_factory.mktemp("runs"))
    with pytest.MonkeyPatch.context() as patch:  # conftest's isolation is per test; a module fixture outlives one
        patch.setenv("TICKETLAB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        started = time.perf_counter()
        experiment = run_lottery(*args, runtime=runtime, **kwargs)
    return Ran(experiment, runtime, time.perf_counter() - started)


@pytest.fixture(scope="module")
def at_init(tmp_path_factory):
    """Two levels on digits, rewinding to the initialisation."""
    return module_lottery(tmp_path_factory, DIGITS, LENET, SHORT, LotteryConfig(levels=2))


@pytest.fixture(scope="module")
def late(tmp_path_factory):
    """Two levels on digits rewinding to 5it, with every control on level 2."""
    return module_lottery(tmp_path_factory, DIGITS, LENET, SHORT, LotteryConfig(levels=2, rewind="5it"),
                          controls=list(CONTROLS), control_levels=[2])


@pytest.fixture(scope="module")
def lth(tmp_path_factory):
    """Three levels of the lth-lenet pruning on mnist5k, one epoch per level."""
    return module_lottery(tmp_path_factory, DataConfig(name="mnist5k"), LTH_LENET.model, TrainConfig(steps="1ep"),
                          dataclasses.replace(LTH_LENET.sections["lottery"].config, levels=3))


def lth_ladder(levels: int) -> list[float]:
    """The fraction of LeNet-300-100's weights kept after each level of the lth-lenet pruning,
    selected by the real selection code from fresh random scores at every level (a stand-in
    for the retrained magnitudes: the counts do not depend on the scores)."""
    cfg = LTH_LENET.sections["lottery"].config
    model = build_model(LTH_LENET.model, (1, 28, 28), 10, generator=torch.Generator().manual_seed(0))
    assert {n: tuple(model.get_parameter(n).shape) for n in prunable_names(model)} == {
        "fc1.weight": (300, 784), "fc2.weight": (100, 300), "fc3.weight": (10, 100)}
    keep = dict(Mask.ones(model))
    generator = torch.Generator().manual_seed(0)
    ladder = []
    for level in range(1, levels + 1):
        scores = {name: torch.rand(flags.shape, generator=generator) for name, flags in keep.items()}
        keep = select(scores, cumulative(cfg.rate, level), scope=cfg.scope, current=keep,
                      output=output_layer_names(model), output_sparsity=cumulative(cfg.output_rate, level))
        ladder.append(Mask(keep).kept() / Mask(keep).total())
    return ladder


def is_masked(weights, reference, mask) -> bool:
    """Whether `weights` are `reference` with the pruned entries of `mask` zeroed, bit for bit."""
    return weights.keys() == reference.keys() and all(
        torch.equal(weights[k], reference[k] * mask[k]) if k in mask else torch.equal(weights[k], reference[k])
        for k in reference)


# --- the density ladder ------------------------------------------------------------------------


def test_lth_lenet_density_ladder_matches_the_paper():
    ladder = lth_ladder(LTH_LENET.sections["lottery"].config.levels)
    assert len(ladder) == max(PAPER_LADDER)
    assert {level: round(100 * ladder[level - 1], 1) for level in PAPER_LADDER} == PAPER_LADDER


def test_a_real_lottery_walks_the_same_ladder_end_to_end_in_seconds(lth):
    (result,) = lth.experiment.lotteries
    assert lth.seconds < 30
    assert [level.number for level in result.levels] == [0, 1, 2, 3]
    assert [level.remaining for level in result.levels] == [1.0, *lth_ladder(3)]
    for level in result.levels:
        assert {"best", "final", "iterations"} <= level.summary.keys()
        assert level.summary["best"]["test_acc"] > 0.8  # chance is 0.1
        assert 0 < level.summary["best"]["iteration"] <= level.summary["iterations"]
    for level in result.levels[1:]:
        mask = level.retrained.mask()
        assert mask.kept() == level.summary["kept"]
        assert torch.count_nonzero(level.retrained.state_dict()["fc1.weight"]) <= int(mask["fc1.weight"].sum())


# --- rewinding -------------------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["at_init", "late"])
def test_rewinding_restores_the_survivors_bit_for_bit(fixture, request):
    (result,) = request.getfixturevalue(fixture).experiment.lotteries
    step = result.dense.checkpoint_name(result.config.rewind)
    rewound = result.dense.state_dict(step)
    for level in result.levels[1:]:
        mask = level.retrained.mask()
        assert mask.kept() < mask.total()
        # A retraining checkpoints its starting weights: the rewind step is one of its save-at steps.
        assert is_masked(level.retrained.state_dict(step), rewound, mask)
        assert not is_masked(level.retrained.state_dict("final"), rewound, mask)  # and then it trained


def test_late_rewinding_restarts_from_the_rewind_step(late, at_init):
    (late_lottery,), (init_lottery,) = late.experiment.lotteries, at_init.experiment.lotteries
    assert [level.summary["start_iteration"] for level in late_lottery.levels[1:]] == [5, 5]
    assert [level.summary["start_iteration"] for level in init_lottery.levels[1:]] == [0, 0]
    assert not torch.equal(late_lottery.dense.state_dict("5it")["fc1.weight"],
                           late_lottery.dense.state_dict("0it")["fc1.weight"])


# --- controls --------------------------------------------------------------------------------


def control_start(experiment, name):
    """The control of level 2, its ticket, the dense run, and the weights it started from
    (a retraining checkpoints them: its first iteration, 0it or 5it, is a save-at step)."""
    done = experiment.controls[(0, 2, name)]
    step = "0it" if done.summary["start_iteration"] == 0 else "5it"
    return done, experiment.lotteries[0].levels[2].retrained, experiment.lotteries[0].dense, done.state_dict(step)


def test_random_mask_keeps_each_layers_count_but_not_its_mask(late):
    done, ticket, dense, start = control_start(late.experiment, "random_mask")
    mask, ticket_mask = done.mask(), ticket.mask()
    assert {layer.name: layer.kept for layer in mask.layers()} == {layer.name: layer.kept
                                                                   for layer in ticket_mask.layers()}
    assert mask.hamming(ticket_mask) > 0
    assert done.summary["start_iteration"] == 5
    assert is_masked(start, dense.state_dict("5it"), mask)


def test_reinit_starts_from_a_fresh_init_of_the_same_distribution(late):
    done, ticket, dense, start = control_start(late.experiment, "reinit")
    mask = done.mask()
    assert mask == ticket.mask() and done.summary["start_iteration"] == 5
    fresh = Setting.of(dense, late.runtime).model(dense.training.seed + REINIT_SEED_OFFSET).state_dict()
    assert is_masked(start, fresh, mask)
    rewound, init = dense.state_dict("5it"), dense.state_dict("0it")
    for name in mask:
        assert not torch.equal(start[name][mask[name]], rewound[name][mask[name]])
        assert float(fresh[name].std()) == pytest.approx(float(init[name].std()), rel=0.1)
        assert abs(float(fresh[name].mean())) < 0.1 * float(init[name].std())


def test_reinit_survivors_draws_from_each_layers_surviving_rewound_values(late):
    done, ticket, dense, start = control_start(late.experiment, "reinit_survivors")
    mask = done.mask()
    assert mask == ticket.mask() and done.summary["start_iteration"] == 5
    rewound = dense.state_dict("5it")
    for name, keep in mask.items():
        drawn, survivors = start[name][keep], rewound[name][keep]
        assert torch.isin(drawn, survivors).all()
        assert not torch.equal(drawn, survivors)
        assert (start[name][~keep] == 0).all()
    assert all(torch.equal(start[k], rewound[k]) for k in rewound if k not in mask)


def test_finetune_starts_from_the_previous_levels_trained_weights(late):
    done, ticket, _, start = control_start(late.experiment, "finetune")
    assert done.mask() == ticket.mask() and done.summary["start_iteration"] == 0
    assert is_masked(start, late.experiment.lotteries[0].levels[1].retrained.state_dict("final"), done.mask())


def test_scratch_starts_at_iteration_zero_from_a_fresh_init(late):
    done, ticket, dense, start = control_start(late.experiment, "scratch")
    assert done.mask() == ticket.mask() and done.summary["start_iteration"] == 0
    with open(done.run.file("metrics.csv"), newline="") as handle:
        assert next(csv.DictReader(handle))["iteration"] == "0"
    fresh = Setting.of(dense, late.runtime).model(dense.training.seed + REINIT_SEED_OFFSET).state_dict()
    assert is_masked(start, fresh, done.mask())


# --- resuming ----------------------------------------------------------------------------------


def test_a_lottery_killed_after_level_1_resumes_without_retraining_it(tmp_path):
    training, cfg = TrainConfig(steps="8ep"), LotteryConfig(levels=3)
    killed = quiet(tmp_path / "killed")
    code = (f"from ticketlab.config import *; from ticketlab.lottery.experiment import run_lottery; "
            f"run_lottery({DIGITS!r}, {LENET!r}, {training!r}, {cfg!r}, {killed!r})")
    dense = train_run_handle(DIGITS, LENET, with_checkpoints(training, ["0it", cfg.rewind]), killed.runs_dir)
    level_1, level_2 = (level_run(dense, cfg, n, killed) for n in (1, 2))
    process = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(SRC)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    # Killed once level 1 has finished and level 2 has saved a resume point (after its first epoch).
    while time.monotonic() < deadline and process.poll() is None and not level_2.file("resume.pt").exists():
        time.sleep(0.005)
    assert process.poll() is None, f"the lottery ended before it could be killed: {process.stderr.read()}"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert level_1.done and not level_2.done
    level_1_files = sorted(p for p in level_1.path.rglob("*") if p.suffix in (".json", ".pt"))
    stamps = [p.stat().st_mtime_ns for p in level_1_files]

    resumed = run_lottery(DIGITS, LENET, training, cfg, killed).lotteries[0]
    assert [p.stat().st_mtime_ns for p in level_1_files] == stamps
    clean = run_lottery(DIGITS, LENET, training, cfg, quiet(tmp_path / "clean")).lotteries[0]

    def metrics(level):
        return {key: {k: v for k, v in level.summary[key].items() if k != "wall_time"} for key in ("best", "final")}

    assert [metrics(level) for level in resumed.levels] == [metrics(level) for level in clean.levels]
    assert [level.remaining for level in resumed.levels] == [level.remaining for level in clean.levels]
    final, clean_final = resumed.levels[-1].retrained.state_dict(), clean.levels[-1].retrained.state_dict()
    assert all(torch.equal(final[k], clean_final[k]) for k in clean_final)


# --- bad input -------------------------------------------------------------------------------


def run_dirs(runtime: Runtime) -> dict[str, bool]:
    """Each run directory under the runtime's root, and whether it finished."""
    root = Path(runtime.runs_dir)
    return {p.name: (p / "summary.json").exists() for p in root.iterdir()} if root.exists() else {}


def test_a_level_past_what_the_mask_can_reach_fails_before_writing_it(tmp_path):
    runtime, training, cfg = quiet(tmp_path), TrainConfig(steps="20it"), LotteryConfig(levels=8, rate=0.9)
    with pytest.raises(TicketlabError, match="level 5 cannot prune further"):
        run_lottery(DIGITS, LENET, training, cfg, runtime)
    dense = train_run_handle(DIGITS, LENET, with_checkpoints(training, ["0it", cfg.rewind]), runtime.runs_dir)
    assert not level_run(dense, cfg, 5, runtime).path.exists()
    assert sorted(run_dirs(runtime)) == sorted([dense.run.name] + [level_run(dense, cfg, n, runtime).name
                                                                    for n in range(1, 5)])
    assert all(run_dirs(runtime).values())


def test_bad_rewind_steps_are_clear_errors(tmp_path):
    runtime = quiet(tmp_path)
    with pytest.raises(TicketlabError, match="after the end of training"):
        run_lottery(DIGITS, LENET, TrainConfig(steps="1ep"), LotteryConfig(rewind="100it"), runtime)
    assert run_dirs(runtime) == {}
    dense = train(DIGITS, LENET, TrainConfig(steps="1ep"), runtime)  # keeps only 0it
    with pytest.raises(TicketlabError, match="kept no checkpoint at 5it"):
        lottery(dense, LotteryConfig(rewind="5it"), runtime)
    with pytest.raises(TicketlabError, match="end of training"):
        run_lottery(DIGITS, LENET, TrainConfig(steps="1ep"), LotteryConfig(rewind="1ep"), runtime)
    assert all(name.startswith("train-") for name in run_dirs(runtime))


def test_controls_on_missing_levels_and_unknown_controls_are_clear_errors(at_init, tmp_path):
    (result,), runtime = at_init.experiment.lotteries, at_init.runtime
    before = run_dirs(runtime)
    with pytest.raises(TicketlabError, match="controls on level"):
        run_lottery(DIGITS, LENET, SHORT, LotteryConfig(levels=2), quiet(tmp_path), controls=["reinit"],
                    control_levels=[9])
    with pytest.raises(TicketlabError, match="unknown control"):
        run_lottery(DIGITS, LENET, SHORT, LotteryConfig(levels=2), quiet(tmp_path), controls=["bogus"])
    with pytest.raises(TicketlabError, match="replicates"):
        run_lottery(DIGITS, LENET, SHORT, LotteryConfig(levels=2), quiet(tmp_path), replicates=0)
    assert run_dirs(quiet(tmp_path)) == {}
    with pytest.raises(TicketlabError, match="level 9 does not exist"):
        result.level(9)
    with pytest.raises(TicketlabError, match="level 9 does not exist"):
        control(result, 9, "reinit", runtime)
    with pytest.raises(TicketlabError, match="pruned level"):
        control(result, 0, "reinit", runtime)
    with pytest.raises(TicketlabError, match="unknown control 'bogus'"):
        control(result, 1, "bogus", runtime)
    assert run_dirs(runtime) == before


# --- replicates --------------------------------------------------------------------------------


def test_replicates_train_seeds_s_and_s_plus_1_and_report_their_spread(tmp_path):
    seeded = TrainConfig(steps="2ep", seed=3)
    experiment = run_lottery(DIGITS, LENET, seeded, LotteryConfig(levels=1), quiet(tmp_path), replicates=2)
    first, second = (result.dense for result in experiment.lotteries)
    assert (first.training.seed, second.training.seed) == (3, 4) and first.run.name != second.run.name
    assert not torch.equal(first.state_dict("0it")["fc1.weight"], second.state_dict("0it")["fc1.weight"])
    rows = lottery_rows(experiment)
    assert [(row["level"], row["n"]) for row in rows] == [(0, 2), (1, 2)]
    assert all(row["test_acc_std"] > 0 for row in rows)
