"""The preset sections, each a Section (base.py) in a file of its own. A preset runs and
describes its sections in this order; adding one is a file and a line here."""

from ticketlab.experiments.sections import compare, lottery, prune, sensitivity, structured, sweep
from ticketlab.experiments.sections.base import Context, Section

SECTIONS: dict[str, Section] = {section.name: section for section in (
    prune.SECTION,
    sensitivity.SECTION,
    lottery.SECTION,
    compare.SECTION,
    sweep.SECTION,
    structured.SECTION,
)}

__all__ = ["SECTIONS", "Context", "Section"]
