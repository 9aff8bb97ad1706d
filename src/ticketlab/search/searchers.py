"""Mask searchers, by name. Adding one is a new file (a search.base.Searcher) and one line in SEARCHERS."""

from __future__ import annotations

import dataclasses
from typing import Any

from ticketlab.config import SearchConfig, TicketlabError
from ticketlab.search.anneal import Annealer
from ticketlab.search.base import Searcher, check_common
from ticketlab.search.baselines import Greedy, RandomSearch
from ticketlab.search.reinforce import Reinforce

SEARCHERS: dict[str, type[Searcher]] = {searcher.name: searcher for searcher in (
    Annealer,
    RandomSearch,
    Greedy,
    Reinforce,
)}


def get_searcher(name: str) -> type[Searcher]:
    if name not in SEARCHERS:
        raise TicketlabError(f"unknown method {name!r}; expected one of {', '.join(SEARCHERS)}")
    return SEARCHERS[name]


def option_sections() -> dict[str, list[str]]:
    """The SearchConfig fields each searcher alone reads, under a heading naming those searchers
    (greedy shares annealing's): the sections of `ticketlab search --help`."""
    owners: dict[str, list[str]] = {}
    for searcher in SEARCHERS.values():
        for option in searcher.options:
            owners.setdefault(option, []).append(searcher.name)
    sections: dict[str, list[str]] = {}
    for option, names in owners.items():
        sections.setdefault(f"options of {', '.join(names)}", []).append(option)
    return sections


# The options whose default is the searcher's (Searcher.defaults), and the value each had as
# the one default before: run names are taken against these, so a run asked for with them
# (--start random --neighbourhood sawtooth) keeps the name it had when they were the defaults.
NAMED_AGAINST: dict[str, Any] = {"start": "random", "neighbourhood": "sawtooth"}


def resolve(cfg: SearchConfig) -> SearchConfig:
    """cfg with its unset options set: to its searcher's defaults, or where the searcher does not
    read them, to the values runs are named against."""
    own = get_searcher(cfg.method).defaults(cfg)
    unset = {name: own.get(name, NAMED_AGAINST[name]) for name in NAMED_AGAINST if getattr(cfg, name) is None}
    return dataclasses.replace(cfg, **unset)


def identity(cfg: SearchConfig) -> dict[str, Any]:
    """What names a search run: the options of the resolved config that differ from their
    defaults (for NAMED_AGAINST's, from the values there)."""
    resolved = resolve(cfg)
    return {f.name: getattr(resolved, f.name) for f in dataclasses.fields(resolved)
            if getattr(resolved, f.name) != NAMED_AGAINST.get(f.name, f.default)}


def check_config(cfg: SearchConfig) -> type[Searcher]:
    """The searcher cfg.method names, once every option of cfg is checked (one-line TicketlabErrors):
    the shared ones, then each searcher's own."""
    searcher = get_searcher(cfg.method)
    check_common(cfg)
    for each in SEARCHERS.values():
        each.check(cfg)
    return searcher
