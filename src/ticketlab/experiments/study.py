"""A study: stages as nodes of a graph, run as soon as the nodes they need are done, serially or
on local worker processes.

A node names the run it makes and calls a module-level function (so that it can be sent to a
worker) that makes it: the function asks for the node's inputs again, which are cached by then,
and then for its own stage. Everything a node makes lives in its run directory, so a worker
returns nothing but whether it failed, and the same study gives the same runs whichever executor
ran it. A node that fails is reported in one line; the nodes that need it are skipped; the
others still run.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import multiprocessing
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from ticketlab.config import TicketlabError
from ticketlab.store import note


RETRIES = 2  # times a node runs again after its worker process died under it


@dataclass(frozen=True)
class Node:
    name: str  # unique in a study: the run it makes (train-3fc3da0406aa), or what it makes
    make: Callable[..., Any]  # a module-level function, picklable
    args: tuple[Any, ...]
    needs: tuple[str, ...] = ()  # names of the nodes that must be done first


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # name -> one-line error
    skipped: list[str] = field(default_factory=list)  # they needed a failed node


def check_study(nodes: Sequence[Node]) -> None:
    names = [node.name for node in nodes]
    if len(set(names)) != len(names):
        raise TicketlabError(f"a study names a run twice: {sorted({n for n in names if names.count(n) > 1})}")
    unknown = sorted({need for node in nodes for need in node.needs} - set(names))
    if unknown:
        raise TicketlabError(f"a study's nodes need runs it does not make: {', '.join(unknown)}")


def _make(node: Node) -> str | None:
    """Run one node; its one-line error, or None."""
    try:
        node.make(*node.args)
    except TicketlabError as exc:
        return str(exc)
    except Exception as exc:  # a bug in one stage must not stop the other branches
        return f"{type(exc).__name__}: {exc}"
    return None


def _worker_setup(modules: Sequence[str]) -> None:
    """Import what the nodes run (torch and the stages' modules take seconds) as the worker starts."""
    import torch

    torch.set_num_threads(1)  # each stage sets its runtime's threads; until then, no oversubscription
    for module in modules:
        importlib.import_module(module)


def _started() -> None:
    time.sleep(0.2)  # held long enough that each warm-up call starts a worker of its own


def run_study(nodes: Sequence[Node], workers: int = 1, progress: bool = True) -> Outcome:
    """Run every node once its needs are done: in this process (workers=1) or on `workers` processes.
    With `progress`, a line on stderr as each node ends (a failure is always reported)."""
    check_study(nodes)
    pending = {node.name: node for node in nodes}
    outcome = Outcome()
    started, total = time.perf_counter(), len(nodes)

    def ready() -> list[Node]:
        return [node for node in pending.values() if all(need in outcome.done for need in node.needs)]

    def settle(name: str, error: str | None) -> None:
        if error is None:
            outcome.done.append(name)
        else:
            outcome.failed[name] = error
            note(f"{name} failed: {error}")
            _skip_dependants(name, pending, outcome)
        if progress:
            note(f"study: {len(outcome.done)}/{total} done, {len(outcome.failed)} failed, {len(pending)} left "
                 f"({time.perf_counter() - started:.0f} s)")

    if workers == 1:
        while ready():
            node = ready()[0]
            del pending[node.name]
            settle(node.name, _make(node))
        outcome.skipped += list(pending)  # what needs each other in a cycle can never start
        return outcome
    lost: dict[str, int] = {}  # how often each node's worker died under it
    while pending:
        if not _run_pool(pending, ready, settle, workers, sorted({n.make.__module__ for n in nodes}), lost):
            break
    outcome.skipped += list(pending)  # what needs each other in a cycle can never start
    return outcome


def _run_pool(pending: dict[str, Node], ready: Callable[[], list[Node]], settle: Callable[[str, str | None], None],
              workers: int, modules: Sequence[str], lost: dict[str, int]) -> bool:
    """Run what is pending on one pool of workers until it is all done (False), or until a worker
    dies, which breaks the pool (True: the nodes it was running are pending again, for a new pool;
    a node whose worker died RETRIES times fails). A retried stage resumes from what it had saved."""
    context = multiprocessing.get_context("spawn")  # no fork of a process with torch's threads
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_setup,
                                                initargs=(modules,)) as pool:
        # Every worker starts (and imports) at once, not one by one as the first nodes come to need them.
        concurrent.futures.wait([pool.submit(_started) for _ in range(workers)])
        running: dict[concurrent.futures.Future[str | None], Node] = {}
        while pending or running:
            for node in ready():
                if len(running) >= workers:
                    break
                del pending[node.name]
                running[pool.submit(_make, node)] = node
            if not running:
                return False
            finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            broken = False
            for future in finished:
                node = running.pop(future)
                try:
                    settle(node.name, future.result())
                except BrokenProcessPool:  # a worker was killed: every node the pool ran is lost
                    broken = True
                    lost[node.name] = lost.get(node.name, 0) + 1
                    if lost[node.name] > RETRIES:
                        settle(node.name, f"its worker process died {lost[node.name]} times; run the same command "
                                          "again to resume it")
                    else:
                        note(f"{node.name}: its worker process died; running it again")
                        pending[node.name] = node
            if broken:
                for node in running.values():  # they were lost with the pool: they run again, no fault of theirs
                    pending[node.name] = node
                return True
    return False


def _skip_dependants(name: str, pending: dict[str, Node], outcome: Outcome) -> None:
    blocked = {name}
    while True:
        more = [n for n, node in pending.items() if blocked & set(node.needs)]
        if not more:
            return
        for skipped in more:
            del pending[skipped]
            outcome.skipped.append(skipped)
            blocked.add(skipped)


def check_workers(workers: int, threads: int) -> None:
    """Workers × threads must fit the machine's cores: oversubscribed, small-batch PyTorch runs
    several times slower (BENCHMARKS.md, threads)."""
    cores = os.cpu_count() or 1
    if workers < 1:
        raise TicketlabError(f"workers must be at least 1, got {workers}")
    if workers * threads > cores:
        raise TicketlabError(f"--workers {workers} × --threads {threads} is more than this machine's {cores} cores; "
                             f"expected at most {max(cores // threads, 1)} workers at {threads} thread(s) each")
