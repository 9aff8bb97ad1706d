"""Training steps written as text: `160ep`, `500it`, `2ep100it`, and lists of them.

A step is fixed in epochs plus iterations; it becomes an absolute iteration only once the
number of iterations per epoch (training set size / batch size) is known.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ticketlab.config import TicketlabError

_STEP = re.compile(r"^(?:(\d+)ep)?(?:(\d+)it)?$")


@dataclass(frozen=True)
class Step:
    epochs: int = 0
    iterations: int = 0

    @classmethod
    def parse(cls, text: str) -> Step:
        match = _STEP.match(text.strip())
        if not text.strip() or match is None:
            raise TicketlabError(f"bad step {text!r}: expected forms like 160ep, 500it or 2ep100it")
        epochs, iterations = match.groups()
        return cls(int(epochs or 0), int(iterations or 0))

    def to_iterations(self, iterations_per_epoch: int) -> int:
        return self.epochs * iterations_per_epoch + self.iterations

    def __str__(self) -> str:
        if self.epochs and self.iterations:
            return f"{self.epochs}ep{self.iterations}it"
        return f"{self.epochs}ep" if self.epochs else f"{self.iterations}it"


def parse_steps(text: str) -> list[Step]:
    """A comma-separated list of steps; empty text is an empty list."""
    return [Step.parse(part) for part in text.split(",") if part.strip()]


def step_name(iteration: int, iterations_per_epoch: int) -> str:
    """The canonical name of an absolute iteration: `3ep` on an epoch boundary, else `3ep20it`."""
    return str(Step(*divmod(iteration, iterations_per_epoch)))
