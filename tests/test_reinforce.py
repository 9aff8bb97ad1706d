import itertools
import json
import math
from pathlib import Path

import pytest
import torch

from ticketlab.cli import main
from ticketlab.experiments.comparison import compare_masks
from ticketlab.config import (DataConfig, MaskMethod, ModelConfig, PruneConfig, Runtime, SearchConfig, TicketlabError,
                              TrainConfig)
from ticketlab.data import load_data
from ticketlab.search import stage as stage_module
from ticketlab.search.features import FEATURES, unit_features
from ticketlab.search.reinforce import POLICY_BLOCK, UnitPolicy, draw, gumbel, log_prob, reinforce
from ticketlab.search.space import Layer, SearchSpace, unit_space
from ticketlab.search.stage import objective_score, search
from ticketlab.sparsity.mask import Mask
from ticketlab.store import find_run
from ticketlab.training.stage import find_train_run, init_model, train

# Two layers of 2 and 3 units, one unit kept in each, then one more from the three left.
TINY = [Layer("a", slice(0, 2)), Layer("b", slice(2, 5))]
TINY_FLOORS, TINY_KEPT = [1, 1], 3


def tiny_orders():
    """Every order `draw` can produce on TINY: a's unit, b's unit, then one of the other three."""
    for a, b in itertools.product(range(2), range(2, 5)):
        for c in sorted(set(range(5)) - {a, b}):
            yield torch.tensor([a, b, c])


def by_hand(scores, order):
    """The product of sequential softmax probabilities, over each stage's candidates, in plain Python."""
    s = [float(v) for v in scores]
    stages = [(range(0, 2), order[:1]), (range(2, 5), order[1:2]),
              ([u for u in range(5) if u not in order[:2]], order[2:])]
    probability = 1.0
    for candidates, picks in stages:
        left = list(candidates)
        for pick in picks:
            probability *= math.exp(s[pick]) / sum(math.exp(s[u]) for u in left)
            left.remove(pick)
    return probability


def test_log_prob_of_a_draw_is_the_product_of_its_sequential_softmaxes():
    scores = torch.tensor([0.3, -1.2, 2.0, 0.1, -0.4])
    total = 0.0
    for order in tiny_orders():
        logp, _ = log_prob(scores, order, TINY, TINY_FLOORS)
        assert math.exp(float(logp)) == pytest.approx(by_hand(scores, order.tolist()), rel=1e-9)
        total += math.exp(float(logp))
    assert total == pytest.approx(1.0, abs=1e-9)  # the orders `draw` can produce are all of them
    # One layer, choose 2 of 4, large scores: the whole draw is one stage of Plackett-Luce.
    big = torch.tensor([30.0, 10.0, -5.0, 29.0])
    logp, _ = log_prob(big, torch.tensor([3, 1]), [Layer("all", slice(0, 4))], [1])
    expected = (29 - math.log(math.exp(30) + math.exp(10) + math.exp(-5) + math.exp(29))) + \
        (10 - math.log(math.exp(30) + math.exp(10) + math.exp(-5)))
    assert float(logp) == pytest.approx(expected, rel=1e-12)


def test_draws_come_at_the_frequencies_their_log_prob_gives():
    scores = torch.tensor([0.5, -0.5, 1.0, 0.0, -1.0])
    generator, n = torch.Generator().manual_seed(0), 20000
    counts: dict[tuple[int, ...], int] = {}
    for _ in range(n):
        order = tuple(draw(scores, TINY, TINY_FLOORS, TINY_KEPT, generator).tolist())
        counts[order] = counts.get(order, 0) + 1
    for order in tiny_orders():
        p = math.exp(float(log_prob(scores, order, TINY, TINY_FLOORS)[0]))
        assert abs(counts.get(tuple(order.tolist()), 0) / n - p) < 4.5 * math.sqrt(p * (1 - p) / n) + 1e-4
    assert set(counts) <= {tuple(o.tolist()) for o in tiny_orders()}


def test_a_large_space_is_scored_in_blocks_as_in_one_pass_and_drawn_as_by_a_full_sort():
    n = 3 * POLICY_BLOCK + 5
    features = torch.rand(n, len(FEATURES), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    policy = UnitPolicy(features, 16)
    torch.nn.init.normal_(policy.net[-1].weight)  # not the uniform start, so the scores differ
    scores = policy()
    assert torch.allclose(scores, policy.net(features).squeeze(1) + policy.offset, rtol=1e-5, atol=1e-6)
    layers, floors = [Layer("a", slice(0, POLICY_BLOCK)), Layer("b", slice(POLICY_BLOCK, n))], [7, 11]
    order = draw(scores, layers, floors, 500, torch.Generator().manual_seed(1))
    # The same noise by hand: each floor by a stable full sort within its layer, then the rest over all.
    generator, noisy = torch.Generator().manual_seed(1), scores.detach().double()
    first = noisy + gumbel(n, generator)
    expected = [first[:POLICY_BLOCK].argsort(descending=True, stable=True)[:7],
                first[POLICY_BLOCK:].argsort(descending=True, stable=True)[:11] + POLICY_BLOCK]
    rest = torch.ones(n, dtype=torch.bool)
    rest[torch.cat(expected)] = False
    rest = rest.nonzero().flatten()
    second = noisy + gumbel(n, generator)
    expected.append(rest[second[rest].argsort(descending=True, stable=True)[:500 - 18]])
    assert torch.equal(order, torch.cat(expected))


def test_the_estimator_is_unbiased():
    """The mean of single-sample REINFORCE gradients R * grad log P equals the exact gradient of E[R]."""
    reward = {frozenset(s): r for s, r in zip(itertools.combinations(range(5), 3),
                                              torch.rand(10, generator=torch.Generator().manual_seed(1)).tolist())}
    scores = torch.tensor([0.2, -0.3, 0.5, 0.0, -0.6], requires_grad=True)
    expected = sum(torch.exp(log_prob(scores, order, TINY, TINY_FLOORS)[0]) * reward[frozenset(order.tolist())]
                   for order in tiny_orders())
    exact, = torch.autograd.grad(expected, scores)
    generator, n, estimate = torch.Generator().manual_seed(2), 6000, torch.zeros(5, dtype=torch.float64)
    squares = torch.zeros(5, dtype=torch.float64)
    for _ in range(n):
        order = draw(scores, TINY, TINY_FLOORS, TINY_KEPT, generator)
        g, = torch.autograd.grad(log_prob(scores, order, TINY, TINY_FLOORS)[0], scores)
        sample = reward[frozenset(order.tolist())] * g.double()
        estimate += sample / n
        squares += sample ** 2 / n
    error = ((squares - estimate ** 2) / n).sqrt()
    assert exact.abs().max() > 0.01  # a gradient worth estimating
    assert ((estimate - exact.double()).abs() < 4.5 * error + 1e-4).all(), (estimate, exact)


class Bandit:
    """A fake evaluator: the fraction of a hidden best set a mask keeps; remembers every mask."""

    def __init__(self, space, best):
        self.space, self.best, self.evaluations, self.seen = space, best, 0, []

    def score(self, keep, move=None):
        self.evaluations += 1
        self.seen.append(keep.clone())
        return float((keep & self.best).sum()) / float(self.best.sum())


def bandit(best=(1, 5, 9, 12, 15, 19)):
    space = SearchSpace([Layer("a", slice(0, 8)), Layer("b", slice(8, 20))], None, None, "filter")
    hidden = torch.zeros(20, dtype=torch.bool)
    hidden[list(best)] = True
    return Bandit(space, hidden)


FEATURES_20 = torch.rand(20, len(FEATURES), generator=torch.Generator().manual_seed(0))
BANDIT = SearchConfig(method="reinforce", granularity="filter", sparsity=0.7, budget=500, policy_lr=0.05)


def test_the_agent_finds_the_best_set_of_a_toy_bandit():
    evaluator = bandit()
    found = reinforce(evaluator, FEATURES_20, BANDIT, torch.Generator().manual_seed(0), progress=False)
    assert found.best_score == 1.0 and torch.equal(found.best, evaluator.best)
    # It learned rather than stumbled on it: late rewards beat early ones, and the entropy fell.
    rewards = [row["reward"] for row in found.history]
    assert sum(rewards[-50:]) / 50 > sum(rewards[:50]) / 50 + 0.2
    assert found.history[-1]["entropy"] < found.history[0]["entropy"]
    assert found.history[-1]["baseline"] > 0.7


def test_seeded_runs_reproduce_and_every_mask_has_the_exact_count_and_floors():
    cfg = SearchConfig(method="reinforce", granularity="filter", sparsity=0.75, budget=60, layer_min=0.25, seed=4)
    first, second = bandit(), bandit()
    a = reinforce(first, FEATURES_20, cfg, torch.Generator().manual_seed(0), progress=False)
    b = reinforce(second, FEATURES_20, cfg, torch.Generator().manual_seed(0), progress=False)
    assert a.history == b.history and all(torch.equal(x, y) for x, y in zip(first.seen, second.seen))
    other = reinforce(bandit(), FEATURES_20, cfg, torch.Generator().manual_seed(1), progress=False)
    assert other.history != a.history
    for keep in first.seen:
        assert int(keep.sum()) == 5  # 20 - round(20 * 0.75)
        assert int(keep[:8].sum()) >= 2 and int(keep[8:].sum()) >= 3  # ceil(0.25 * size)


def test_thesis_mode_is_deterministic_and_keeps_the_highest_probabilities():
    cfg = SearchConfig(method="reinforce", granularity="filter", mode="thesis", sparsity=0.7, budget=5, hidden=16)
    evaluator = bandit()
    found = reinforce(evaluator, FEATURES_20, cfg, torch.Generator().manual_seed(0), progress=False)
    again = bandit()
    reinforce(again, FEATURES_20, cfg, torch.Generator().manual_seed(99), progress=False)  # no draw uses it
    assert all(torch.equal(x, y) for x, y in zip(evaluator.seen, again.seen))
    assert found.history[0]["baseline"] is None and len(found.history) == 5
    assert all(int(keep.sum()) == 6 for keep in evaluator.seen)


# --- the stage, through the CLI --------------------------------------------------------------

@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    return Runtime(runs_dir=str(tmp_path_factory.mktemp("reinforce-runs")), progress=False)


@pytest.fixture(scope="module")
def conv(runtime):
    return train(DataConfig(name="digits"), ModelConfig(name="conv2"), TrainConfig(steps="1ep"), runtime)


def test_features_are_normalised_per_layer_and_follow_the_space(conv):
    model = init_model(conv.model_config, load_data(conv.data), 0)
    model.load_state_dict(conv.state_dict("final"))
    space = unit_space(model)
    features = unit_features(model, space)
    assert features.shape == (space.size, len(FEATURES)) and torch.isfinite(features).all()
    for i, layer in enumerate(space.layers):
        rows = features[layer.slice]
        assert rows[:, 0].min() == 0 and rows[:, 0].max() == 1  # magnitude, min-max within the layer
        assert (rows[:, 3] == i / (len(space.layers) - 1)).all()
    assert (features[:, 2] == 0).all()  # conv2 has no BatchNorm


def test_the_cli_runs_a_reinforce_search_that_caches(conv, runtime, capsys):
    argv = ["search", "reinforce", "--run", conv.run.name, "--runs-dir", runtime.runs_dir, "--at", "final",
            "--granularity", "filter", "--sparsity", "0.7", "--budget", "24", "--val-size", "100",
            "--episodes", "4", "--quiet", "--json"]
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    summary = payload["metrics"]
    assert summary["method"] == "reinforce" and summary["evaluations"] == 24
    assert summary["kept"] == summary["units"] - round(0.7 * summary["units"])
    assert set(summary["policy"]) == {"first_entropy", "final_entropy", "final_baseline"}
    path = Path(payload["run_dir"])
    assert (path / "history.csv").read_text().splitlines()[0].endswith(",episode,reward,baseline,entropy")
    assert {"mask.safetensors", "summary.json"} <= {p.name for p in path.iterdir()}
    assert main(argv) == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["cached"]


# Per weight, conv2's 367,680 units span many of the policy's blocks (reinforce.POLICY_BLOCK).
@pytest.mark.parametrize("granularity", ["filter", "weight"])
def test_an_interrupted_reinforce_search_resumes_to_the_same_result(conv, tmp_path, monkeypatch, granularity):
    cfg = SearchConfig(method="reinforce", granularity=granularity, sparsity=0.6, budget=30, val_size=100,
                       at="final", episodes=3, seed=2)
    whole = search(conv, cfg, Runtime(runs_dir=str(tmp_path / "whole"), progress=False))
    interrupted = Runtime(runs_dir=str(tmp_path / "interrupted"), progress=False)
    monkeypatch.setattr(stage_module, "CHECKPOINT_EVERY", 10)  # 10 and 20: mid-batch, with 2 episodes pending
    save, saved = stage_module.atomic_torch_save, []

    def save_then_die(state, path):
        save(state, path)
        saved.append(state["step"])
        if len(saved) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(stage_module, "atomic_torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        search(conv, cfg, interrupted)
    monkeypatch.setattr(stage_module, "atomic_torch_save", save)
    resumed = search(conv, cfg, interrupted)
    assert resumed.summary["resumed_from"] == 20
    assert resumed.history() == whole.history() and resumed.mask() == whole.mask()


def test_thesis_mode_runs_in_the_stage_with_either_sign(conv, runtime):
    for sign in (1, -1):
        cfg = SearchConfig(method="reinforce", mode="thesis", reward_sign=sign, granularity="filter", sparsity=0.5,
                           budget=6, val_size=100, at="final")
        result = search(conv, cfg, runtime)
        assert result.summary["evaluations"] == 6 and result.mask().sparsity() > 0


@pytest.mark.parametrize("changes, message", [
    (dict(policy_lr=-0.1), "policy_lr must be above 0, got -0.1"),
    (dict(policy_lr=0.0), "policy_lr must be above 0"),
    (dict(entropy=-1.0), "entropy bonus must be at least 0"),
    (dict(baseline_decay=1.0), "baseline_decay must be in \\[0, 1\\)"),
    (dict(episodes=0), "episodes must be at least 1"),
    (dict(hidden=0), "hidden must be at least 1"),
    (dict(mode="thesis", reward_sign=2), "reward_sign must be 1 or -1"),
    (dict(reward_sign=-1), "use it with reinforce --mode thesis"),
    (dict(mode="thesis", granularity="weight"), "use --granularity filter"),
    (dict(layer_min=0.9), "fewer than the .* floors need"),
])
def test_bad_input_is_one_clear_error(conv, runtime, changes, message):
    cfg = SearchConfig(**{**dict(method="reinforce", granularity="filter", sparsity=0.5, budget=5, val_size=100,
                                 at="final"), **changes})
    with pytest.raises(TicketlabError, match=message) as error:
        search(conv, cfg, runtime)
    assert "\n" not in str(error.value)


def test_a_comparison_reports_best_scores_and_evaluations(runtime):
    methods = [MaskMethod("REINFORCE", SearchConfig(method="reinforce", granularity="filter", at="1ep", budget=8,
                                                    val_size=100, episodes=4)),
               MaskMethod("random", SearchConfig(method="random", granularity="filter", at="1ep", budget=6,
                                                 val_size=100)),
               MaskMethod("magnitude", PruneConfig(criterion="l1_norm", structured=True, at="1ep"))]
    result = compare_masks(DataConfig(name="digits"), ModelConfig(name="conv2"), TrainConfig(steps="2ep"), methods,
                           [0.5], runtime)
    rows = {row["method"]: row for row in result.rows}
    assert [rows[name]["evaluations"] for name in ("REINFORCE", "random", "magnitude")] == [8, 6, 0]
    assert [run["method"] for run in result.runs if run["searched_objective"]] == ["REINFORCE", "random"]
    for run in result.runs:  # every mask scored on the same objective: a search's own best equals it
        made, hparams = find_run(run["mask_run"], ("search", "prune"), runtime.runs_dir)
        mask = Mask.load(made / "mask.safetensors")
        dense = find_train_run(hparams["train"], runtime.runs_dir)
        assert objective_score(dense, methods[0].config, mask, runtime) == pytest.approx(run["search_score"], abs=0)
