"""Mask searchers, by name. Adding one is a new file (a search.base.Searcher) and one line in SEARCHERS."""

from __future__ import annotations

import dataclasses
from typing import Any

from ticketlab.config import SearchConfig, TicketlabError
from ticketlab.search.anneal import Annealer
from ticketlab.search.base import NAMED_AGAINST, Searcher, check_common
from ticketlab.search.baselines import Greedy, RandomSearch
from ticketlab.search.gradient import EdgePopup, Supermask
from ticketlab.search.reinforce import Reinforce

SEARCHERS: dict[str, type[Searcher]] = {searcher.name: searcher for searcher in (
    Annealer,
    RandomSearch,
    Greedy,
    Reinforce,
    EdgePopup,
    Supermask,
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


def resolve(cfg: SearchConfig) -> SearchConfig:
    """cfg with its unset options set as the searcher it names sets them (Searcher.resolved)."""
    return get_searcher(cfg.method).resolved(cfg)


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
