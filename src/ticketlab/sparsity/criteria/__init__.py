"""Pruning criteria, by name. Adding one is a new file here and one line in CRITERIA."""

from __future__ import annotations

from ticketlab.config import TicketlabError
from ticketlab.sparsity.criteria.base import Criterion, ScoreContext
from ticketlab.sparsity.criteria.bn_scale import BNScale
from ticketlab.sparsity.criteria.grasp import GraSP
from ticketlab.sparsity.criteria.l1_norm import L1Norm
from ticketlab.sparsity.criteria.l2_norm import L2Norm
from ticketlab.sparsity.criteria.magnitude import Magnitude
from ticketlab.sparsity.criteria.magnitude_increase import MagnitudeIncrease
from ticketlab.sparsity.criteria.magnitude_sign import MagnitudeSign
from ticketlab.sparsity.criteria.magnitude_sign_units import MagnitudeSignUnits
from ticketlab.sparsity.criteria.random import Random
from ticketlab.sparsity.criteria.random_units import RandomUnits
from ticketlab.sparsity.criteria.snip import Snip
from ticketlab.sparsity.criteria.synflow import SynFlow

CRITERIA: dict[str, Criterion] = {
    criterion.name: criterion
    for criterion in (
        Magnitude(),
        MagnitudeSign(),
        MagnitudeIncrease(),
        Random(),
        Snip(),
        GraSP(),
        SynFlow(),
        L1Norm(),
        L2Norm(),
        BNScale(),
        RandomUnits(),
        MagnitudeSignUnits(),
    )
}


def get_criterion(name: str) -> Criterion:
    if name not in CRITERIA:
        raise TicketlabError(f"unknown criterion {name!r}; expected one of {', '.join(CRITERIA)}")
    return CRITERIA[name]


__all__ = ["CRITERIA", "Criterion", "ScoreContext", "get_criterion"]
