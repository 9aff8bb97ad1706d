import math
from dataclasses import replace

import pytest
import torch

from ticketlab.config import SearchConfig, TicketlabError
from ticketlab.search import anneal as anneal_module
from ticketlab.search.anneal import THESIS, accept, anneal
from ticketlab.search.baselines import greedy, random_search
from ticketlab.search.moves import next_h
from ticketlab.search.space import Layer, SearchSpace


def toy_space(*sizes):
    layers, start = [], 0
    for i, size in enumerate(sizes):
        layers.append(Layer(f"layer{i}", slice(start, start + size)))
        start += size
    return SearchSpace(layers, expand=None, project=None, granularity="filter")


class Overlap:
    """A toy evaluator with a known best mask: the score is the fraction of the target's units kept."""

    def __init__(self, space, target):
        self.space, self.target, self.evaluations = space, target, 0

    def score(self, keep, move=None):
        self.evaluations += 1
        return float((keep & self.target).sum()) / float(self.target.sum())

    def score_many(self, keeps, moves=None):
        return [self.score(keep) for keep in keeps]


class Scripted(Overlap):
    """Scores given in advance, one per evaluation."""

    def __init__(self, space, scores):
        super().__init__(space, None)
        self.scores = list(scores)

    def score(self, keep, move=None):
        self.evaluations += 1
        return self.scores[self.evaluations - 1]


SPACE = toy_space(10, 10, 10)
TARGET = SPACE.random(0.8, torch.Generator().manual_seed(123))


def start_mask(seed=0, space=SPACE):
    return space.random(0.8, torch.Generator().manual_seed(seed))


def run(cfg, seed=0, evaluator=None, method=anneal, **kwargs):
    evaluator = evaluator or Overlap(SPACE, TARGET)
    generator = torch.Generator().manual_seed(seed)
    if method is random_search:
        return random_search(evaluator, cfg, generator, progress=False, **kwargs)
    return method(evaluator, start_mask(seed, evaluator.space), cfg, generator, progress=False, **kwargs)


def test_accept_takes_no_worse_candidates_and_worse_ones_by_a_fixed_stream():
    generator = torch.Generator().manual_seed(7)
    before = generator.get_state()
    assert accept(-0.1, 0.01, generator) and accept(0.0, 0.01, generator)
    assert not accept(1e-9, 0.0, generator)  # zero temperature: greedy
    assert torch.equal(generator.get_state(), before)  # no draw was needed
    for delta, temperature in [(0.01, 0.01), (0.05, 0.01), (0.001, 0.01), (0.02, 0.1)] * 5:
        replay = torch.Generator().manual_seed(0)
        replay.set_state(generator.get_state())
        u = float(torch.rand((), generator=replay))
        assert accept(delta, temperature, generator) == (u < math.exp(-delta / temperature))
        assert torch.equal(generator.get_state(), replay.get_state())  # exactly one draw


@pytest.mark.parametrize("mode", ["default", "thesis"])
def test_each_mode_compares_with_its_reference(monkeypatch, mode):
    calls = []

    def recording(delta, temperature, generator):
        calls.append((delta, temperature))
        return accept(delta, temperature, generator)

    monkeypatch.setattr(anneal_module, "accept", recording)
    result = run(SearchConfig(granularity="filter", budget=120, mode=mode, seed=1))
    rows = result.history
    loop = [i for i, row in enumerate(rows) if row["temperature"] is not None]
    assert len(calls) == len(loop)
    for (delta, temperature), i in zip(calls, loop):
        before = rows[i - 1]
        reference = before["mean"] if mode == "thesis" else before["current"]
        assert delta == pytest.approx(reference - rows[i]["candidate"]) and temperature == rows[i]["temperature"]
    if mode == "thesis":  # the running mean restarts from the last mean at each temperature: 2 steps each
        assert rows[0]["mean"] == rows[0]["candidate"]
        assert {rows[i]["temperature"] for i in (1, 2)} == {THESIS["filter"].t0}


def test_scripted_decisions_differ_between_the_rules_at_zero_temperature():
    scores = [0.5, 0.6, 0.55, 0.56, 0.4]
    space = toy_space(30)
    thesis = run(SearchConfig(granularity="filter", budget=5, mode="thesis", t0=0.0), evaluator=Scripted(space, scores))
    default = run(SearchConfig(granularity="filter", budget=5, t0=0.0), evaluator=Scripted(space, scores))
    # thesis: 0.55 ties the running mean of [0.5, 0.6] and is taken; after two steps the next
    # temperature's mean starts from the last one, 0.55, which 0.56 beats.
    assert [row["accepted"] for row in thesis.history] == [True, True, True, True, False]
    assert [row["mean"] for row in thesis.history] == pytest.approx([0.5, 0.55, 0.55, 0.555, 0.555])
    # default: against the current mask's 0.6, everything after it is worse
    assert [row["accepted"] for row in default.history] == [True, True, False, False, False]
    assert default.best_score == thesis.best_score == 0.6


def test_a_seeded_search_is_reproducible():
    cfg = SearchConfig(granularity="filter", budget=150, restarts=1)
    first, second, other = run(cfg, seed=3), run(cfg, seed=3), run(cfg, seed=4)
    assert first.history == second.history and torch.equal(first.best, second.best)
    assert first.history != other.history


@pytest.mark.parametrize("mode", ["default", "thesis"])
def test_the_toy_problems_best_mask_is_found_and_random_search_does_worse(mode):
    cfg = SearchConfig(granularity="filter", budget=600, mode=mode)
    found = run(cfg, seed=0)
    assert found.best_score == 1.0 and torch.equal(found.best, TARGET)
    assert run(cfg, seed=0, method=random_search).best_score < 0.9  # 1 in 593,775 random masks is the target
    assert run(cfg, seed=0, method=greedy).best_score > 0.8


def test_thesis_mode_runs_its_constants_and_sawtooth():
    space = toy_space(100)
    result = run(SearchConfig(granularity="filter", sparsity=0.8, budget=61, mode="thesis"),
                 evaluator=Overlap(space, space.random(0.8, torch.Generator())))
    h = peak = 19  # 20 kept, one held back by the layer's floor
    expected = []
    for _ in range(30):
        expected += [h, h]  # two iterations per temperature at first
        h, peak = next_h(h, peak, 0.99, sawtooth=True)
    loop = result.history[1:]
    assert [row["h"] for row in loop] == expected
    assert [row["temperature"] for row in loop[::2]] == pytest.approx([0.005 * 0.995 ** k for k in range(30)])
    assert result.best_mean is not None and result.t0 == 0.005


@pytest.mark.parametrize("budget", [1, 2, 11, 37])
@pytest.mark.parametrize("cfg", [SearchConfig(granularity="filter"), SearchConfig(granularity="filter", mode="thesis"),
                                 SearchConfig(granularity="filter", restarts=2, neighbourhood="geometric")])
@pytest.mark.parametrize("method", [anneal, greedy, random_search])
def test_the_budget_is_spent_exactly(cfg, method, budget):
    evaluator = Overlap(SPACE, TARGET)
    result = run(replace(cfg, budget=budget), evaluator=evaluator, method=method)
    assert evaluator.evaluations == result.evaluations == len(result.history) == budget
    assert [row["step"] for row in result.history] == list(range(1, budget + 1))
    assert int(result.best.sum()) == 6 and result.best_score == max(row["candidate"] for row in result.history)


@pytest.mark.parametrize("method, cfg", [(anneal, SearchConfig(granularity="filter", budget=90, restarts=1)),
                                         (anneal, SearchConfig(granularity="weight", budget=90, mode="thesis")),
                                         (greedy, SearchConfig(granularity="filter", budget=90)),
                                         (anneal, SearchConfig(granularity="filter", budget=90,
                                                               neighbourhood="adaptive", start="magnitude")),
                                         (random_search, SearchConfig(granularity="filter", budget=90))])
def test_a_search_resumes_exactly_from_a_saved_state(method, cfg):
    saved = []
    whole = run(cfg, seed=5, method=method, checkpoint=saved.append, checkpoint_every=20)
    assert len(saved) == 4  # after 20, 40, 60 and 80 evaluations
    resumed = run(cfg, seed=99, method=method, resume=saved[1])  # the seed is overridden by the saved stream
    assert resumed.history == whole.history and torch.equal(resumed.best, whole.best)
    assert resumed.best_mean_score == whole.best_mean_score


def test_an_adaptive_neighbourhood_follows_the_share_of_improving_moves():
    space = toy_space(200, 200)
    target = space.random(0.8, torch.Generator().manual_seed(1))
    # From a random start h begins at its largest and shrinks as improvements get rare.
    cfg = SearchConfig(granularity="filter", budget=400, neighbourhood="adaptive", start="random")
    found = run(cfg, evaluator=Overlap(space, target))
    h = [row["h"] for row in found.history[21:]]  # after the 20 calibration moves
    assert h[0] == 78 and h[-1] < 10  # 80 kept, one per layer held back
    assert found.best_score > 0.5  # random search: 0.36 at this budget
    # From a mask of the search's choosing it begins with single swaps; h grows by e^0.08 per
    # improving move and shrinks by e^-0.02 per other one.
    space = toy_space(100, 100)
    cfg = SearchConfig(granularity="filter", budget=60, neighbourhood="adaptive", start="magnitude")
    scores = [0.5] * 6 + [0.5 + 0.01 * k for k in range(1, 31)] + [0.0] * 24  # start, 5 probes, 30 better, 24 worse
    seeded = run(cfg, evaluator=Scripted(space, scores))
    h = [row["h"] for row in seeded.history[6:]]
    expected, real = [], 1.0
    for score in scores[6:]:
        expected.append(max(1, round(real)))
        real = min(38.0, max(1.0, real * math.exp(0.1 * ((score > 0.5) - 0.2))))
    assert h == expected and h[0] == 1 and max(h) == h[30] == 11 and h[-1] == 7
    assert run(cfg, evaluator=Scripted(space, scores)).history == seeded.history  # reproducible


@pytest.mark.parametrize("cfg, message", [
    (SearchConfig(sparsity=0.0), "sparsity must be in \\(0, 1\\)"),
    (SearchConfig(sparsity=1.0), "sparsity must be in \\(0, 1\\)"),
    (SearchConfig(budget=0), "budget must be at least 1"),
    (SearchConfig(mode="fast"), "unknown mode 'fast'"),
    (SearchConfig(mode="thesis", restarts=2), "restarts are not part of the thesis"),
    (SearchConfig(cooling=1.5), "cooling must be in"),
])
def test_bad_configs_are_one_clear_error(cfg, message):
    with pytest.raises(TicketlabError, match=message):
        run(cfg)


def test_a_start_below_a_floor_or_with_no_possible_move_is_refused():
    with pytest.raises(TicketlabError, match="below its floor"):
        keep = torch.zeros(30, dtype=torch.bool)
        keep[:6] = True  # all six kept units in layer 0
        anneal(Overlap(SPACE, TARGET), keep, SearchConfig(granularity="filter"), torch.Generator(), progress=False)
    space = toy_space(2, 2, 2)
    with pytest.raises(TicketlabError, match="no move can change the start mask"):
        keep = torch.tensor([1, 0, 1, 0, 1, 0], dtype=torch.bool)  # every layer at its floor of one
        anneal(Overlap(space, keep), keep, SearchConfig(granularity="filter", sparsity=0.5), torch.Generator(),
               progress=False)
