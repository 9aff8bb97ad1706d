import pytest

from ticketlab.config import TicketlabError, TrainConfig
from ticketlab.training.optim import lr_factor_fn
from ticketlab.training.steps import Step, parse_steps, step_name


@pytest.mark.parametrize("text, iterations", [("160ep", 160 * 7), ("500it", 500), ("2ep100it", 114), ("0it", 0)])
def test_steps_become_iterations(text, iterations):
    assert Step.parse(text).to_iterations(7) == iterations


@pytest.mark.parametrize("text", ["", "ep", "3", "1.5ep", "100it2ep", "-1it", "3 epochs"])
def test_bad_steps_are_refused_with_the_expected_forms(text):
    with pytest.raises(TicketlabError, match="expected forms like 160ep"):
        Step.parse(text)


def test_step_names_are_canonical():
    assert step_name(0, 10) == "0it"
    assert step_name(30, 10) == "3ep"
    assert step_name(35, 10) == "3ep5it"
    assert [str(s) for s in parse_steps("0it, 1ep,2ep100it")] == ["0it", "1ep", "2ep100it"]


def test_multistep_schedule_with_warmup():
    cfg = TrainConfig(schedule="multistep", milestones="2ep,3ep", gamma=0.1, warmup="4it")
    factor = lr_factor_fn(cfg, iterations_per_epoch=10, total_iterations=40)
    assert [factor(i) for i in (0, 1, 3)] == [0.25, 0.5, 1.0]
    assert factor(19) == 1.0
    assert factor(20) == pytest.approx(0.1)
    assert factor(30) == pytest.approx(0.01)


def test_cosine_schedule_ends_at_zero():
    factor = lr_factor_fn(TrainConfig(schedule="cosine"), iterations_per_epoch=10, total_iterations=100)
    assert factor(0) == 1.0
    assert factor(50) == pytest.approx(0.5)
    assert factor(100) == pytest.approx(0.0)


def test_multistep_without_milestones_is_an_error():
    with pytest.raises(TicketlabError, match="milestones"):
        lr_factor_fn(TrainConfig(schedule="multistep"), 10, 100)
