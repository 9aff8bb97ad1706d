"""A study: stages as nodes of a graph, run as soon as the nodes they need are done, serially,
on local worker processes, or as Ray Core tasks (ray_executor.py).

A node names the run it makes and calls a module-level function (so that it can be sent to a
worker) that makes it: the function asks for the node's inputs again, which are cached by then,
and then for its own stage. Everything a node makes lives in its run directory, so a worker
returns nothing but whether it failed, and the same study gives the same runs whichever executor
ran it. A node that fails is reported in one line; the nodes that need it are skipped; the
others still run. With a record file, the study's state (each node's, and when it started) is
written there as it changes, for `ticketlab status` to read from another terminal.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import multiprocessing
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ticketlab.config import TicketlabError
from ticketlab.experiments.board import Board, stage_progress
from ticketlab.store import atomic_write_json, note

RETRIES = 2  # times a node runs again after its worker process died under it
BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class Node:
    name: str  # unique in a study: the run it makes (train-3fc3da0406aa), or what it makes
    make: Callable[..., Any]  # a module-level function, picklable
    args: tuple[Any, ...]
    needs: tuple[str, ...] = ()  # names of the nodes that must be done first
    kind: str = "stage"  # what it makes, for the plan: train, prune, search, lottery, ...
    runs: tuple[str, ...] = ()  # the runs it makes whose names are known before it runs (done when all are)
    trainings: int = 0  # trainings it runs (dense, retrainings), for the plan's estimate
    evaluations: int = 0  # masks a search evaluates


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


def make(node: Node) -> str | None:
    """Run one node; its one-line error, or None."""
    try:
        node.make(*node.args)
    except TicketlabError as exc:
        return str(exc)
    except Exception as exc:  # a bug in one stage must not stop the other branches
        return f"{type(exc).__name__}: {exc}"
    return None


class Tracker:
    """The study's state as nodes start and end: what is ready, the progress line, the record."""

    def __init__(self, nodes: Sequence[Node], progress: bool, record: Path | None):
        self.pending = {node.name: node for node in nodes}
        self.running: dict[str, float] = {}  # name -> when it started
        self.outcome = Outcome()
        self.nodes = {node.name: node for node in nodes}
        self.record = record
        # Notes, and (with progress) the study's line as each node ends; a board (board.py) shows
        # the line itself and prints notes above it.
        self.say: Callable[[str], None] = note
        self.line_each_end = progress
        self.started = time.time()
        # The record is first written as a node starts: a study that cannot start leaves none.

    def ready(self) -> list[Node]:
        done = set(self.outcome.done)
        return [node for node in self.pending.values() if all(need in done for need in node.needs)]

    def start(self, node: Node) -> None:
        del self.pending[node.name]
        self.running[node.name] = time.time()
        self._write()

    def again(self, node: Node) -> None:
        """A node whose worker died: pending once more."""
        self.running.pop(node.name, None)
        self.pending[node.name] = node

    def settle(self, name: str, error: str | None) -> None:
        """A node ended, with its one-line error or None."""
        self.running.pop(name, None)
        if error is None:
            self.outcome.done.append(name)
        else:
            self.outcome.failed[name] = error
            self.say(f"{name} failed: {error}")
            self._skip_dependants(name)
        if self.line_each_end:
            note(self.line())
        self._write()

    def finish(self) -> Outcome:
        self.outcome.skipped += list(self.pending)  # what needs each other in a cycle can never start
        self.pending.clear()
        self._write()
        return self.outcome

    def line(self) -> str:
        """study: done / running / failed / pending, elapsed, and an estimate of what is left (by the
        trainings done so far; a node that trains nothing counts as one)."""
        elapsed = time.time() - self.started
        weight = {name: max(node.trainings, 1) for name, node in self.nodes.items()}
        done = sum(weight[name] for name in self.outcome.done)
        left = sum(weight[name] for name in (*self.pending, *self.running))
        estimate = f", about {elapsed / done * left:.0f} s left" if done and left else ""
        return (f"study: {len(self.outcome.done)} done, {len(self.running)} running, "
                f"{len(self.outcome.failed)} failed, {len(self.pending)} pending of {len(self.nodes)} "
                f"({elapsed:.0f} s{estimate})")

    def board_lines(self, runs_root: Path) -> list[str]:
        """The study's line, and a line per running node: its kind, time running, name, and how far
        its stage has got."""
        now, running = time.time(), self.running.copy()  # copied at once: the study changes it meanwhile
        return [self.line(), *(f"  {self.nodes[name].kind:<8} {now - since:>5.0f} s  {name}  "
                               f"{stage_progress(runs_root, self.nodes[name].runs)}".rstrip()
                               for name, since in sorted(running.items(), key=lambda item: item[1]))]

    def _skip_dependants(self, name: str) -> None:
        blocked = {name}
        while True:
            more = [n for n, node in self.pending.items() if blocked & set(node.needs)]
            if not more:
                return
            for skipped in more:
                del self.pending[skipped]
                self.outcome.skipped.append(skipped)
                blocked.add(skipped)

    def _write(self) -> None:
        if self.record is None:
            return
        states = {name: "pending" for name in self.pending}
        states |= {name: "running" for name in self.running}
        states |= {name: "done" for name in self.outcome.done}
        states |= {name: "skipped" for name in self.outcome.skipped}
        states |= {name: "failed" for name in self.outcome.failed}
        atomic_write_json(self.record, {"started": self.started, "updated": time.time(), "pid": os.getpid(),
                                        "host": socket.gethostname(), "states": states,
                                        "errors": self.outcome.failed})


def run_study(nodes: Sequence[Node], workers: int = 1, progress: bool = True, *, backend: str = "local",
              address: str | None = None, threads: int = 1, record: Path | None = None,
              runs_root: Path | None = None) -> Outcome:
    """Run every node once its needs are done: in this process (workers=1), on `workers` local
    processes whose stages run `threads` threads each, or (backend "ray") as Ray tasks of `threads`
    CPUs each, on a local Ray of the machine's cores or on the cluster at `address`. With
    `progress`, a line on stderr as each node ends (a failure is always reported), or, with nodes
    running side by side in a terminal, a board (board.py) of the running nodes' stages in
    `runs_root`; with `record`, the study's state in that JSON file."""
    check_study(nodes)
    if backend not in BACKENDS:
        raise TicketlabError(f"unknown backend {backend!r}; expected {' or '.join(BACKENDS)}")
    tracker = Tracker(nodes, progress, record)
    side_by_side = backend == "ray" or workers > 1
    if not (progress and side_by_side and runs_root is not None and sys.stderr.isatty()):
        _run(tracker, workers, backend, address, threads)
        return tracker.finish()
    board = Board(lambda: tracker.board_lines(runs_root))
    tracker.say, tracker.line_each_end = board.say, False
    with board:
        _run(tracker, workers, backend, address, threads)
    note(tracker.line())
    return tracker.finish()


def _run(tracker: Tracker, workers: int, backend: str, address: str | None, threads: int) -> None:
    if backend == "ray":
        from ticketlab.experiments.ray_executor import run_on_ray

        run_on_ray(tracker, address, threads)
    elif workers == 1:
        while tracker.ready():
            node = tracker.ready()[0]
            tracker.start(node)
            tracker.settle(node.name, make(node))
    else:
        lost: dict[str, int] = {}  # how often each node's worker died under it
        modules = sorted({node.make.__module__ for node in tracker.nodes.values()})
        while tracker.pending and _run_pool(tracker, workers, threads, modules, lost):
            pass


def _worker_setup(modules: Sequence[str], driver: int) -> None:
    """End with the driver; import what the nodes run (torch and the stages' modules take seconds)
    as the worker starts (a forked worker has them already)."""
    _die_with_driver(driver)
    import torch

    torch.set_num_threads(1)  # each stage sets its runtime's threads; until then, no oversubscription
    for module in modules:
        importlib.import_module(module)


def _die_with_driver(driver: int) -> None:
    """Ask Linux to end this worker when its driver (process `driver`) ends, however it ends (a
    kill, a scheduler's SIGTERM, a crash): an orphaned worker would go on writing the run it was
    making while the next study resumes that same run, then wait on the pool's queue for good.
    Other systems have no such request: there a driver killed outright leaves orphans."""
    if sys.platform != "linux":
        return
    import ctypes

    pr_set_pdeathsig = 1
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != driver:  # the driver ended before the request was made
        os._exit(1)


def _started() -> None:
    time.sleep(0.2)  # held long enough that each warm-up call starts a worker of its own


def start_method(threads: int) -> str:
    """fork where it is safe, else spawn. A forked worker starts at once with everything the driver
    has imported and loaded (a spawned one imports torch and the stages, ~3 s, and ran each stage
    ~7% slower: BENCHMARKS.md). Safe on Linux when the stages run one thread each: an OpenMP thread
    pool the driver started does not survive a fork, and a single thread never uses it."""
    return "fork" if sys.platform == "linux" and threads == 1 else "spawn"


def _run_pool(tracker: Tracker, workers: int, threads: int, modules: Sequence[str], lost: dict[str, int]) -> bool:
    """Run what is pending on one pool of workers until it is all done (False), or until a worker
    dies, which breaks the pool (True: the nodes it was running are pending again, for a new pool;
    a node whose worker died RETRIES times fails). A retried stage resumes from what it had saved."""
    context = multiprocessing.get_context(start_method(threads))
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_setup,
                                                initargs=(modules, os.getpid())) as pool:
        # Every worker starts (and imports) at once, not one by one as the first nodes come to need them.
        try:
            for warmed in [pool.submit(_started) for _ in range(workers)]:
                warmed.result()
        except BrokenProcessPool:
            raise TicketlabError("the study's worker processes died as they started (out of memory?); "
                                 "try fewer --workers") from None
        try:
            return _fill_pool(pool, tracker, workers, lost)
        except BaseException:  # Ctrl-C, or SIGINT to the driver alone: leaving the pool would wait for the
            _stop_workers(pool)  # running nodes to end; they stop now instead, and resume when run again
            raise


def _fill_pool(pool: concurrent.futures.ProcessPoolExecutor, tracker: Tracker, workers: int,
               lost: dict[str, int]) -> bool:
    """_run_pool's loop: give the pool's free workers ready nodes and settle those that end."""
    running: dict[concurrent.futures.Future[str | None], Node] = {}
    while tracker.pending or running:
        refused = False
        for node in tracker.ready():
            if len(running) >= workers:
                break
            tracker.start(node)
            try:
                running[pool.submit(make, node)] = node
            except BrokenProcessPool:  # a worker died since the last wait: the pool takes nothing more
                tracker.again(node)
                refused = True
                break
        if not running:
            return refused
        finished, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
        broken = False
        for future in finished:
            node = running.pop(future)
            try:
                tracker.settle(node.name, future.result())
            except BrokenProcessPool:  # a worker was killed: every node the pool ran is lost
                broken = True
                lost[node.name] = lost.get(node.name, 0) + 1
                if lost[node.name] > RETRIES:
                    tracker.settle(node.name, f"its worker process died {lost[node.name]} times; run the same "
                                              "command again to resume it")
                else:
                    tracker.say(f"{node.name}: its worker process died; running it again")
                    tracker.again(node)
        if broken:
            for node in running.values():  # they were lost with the pool: they run again, no fault of theirs
                tracker.again(node)
            return True
    return False


def _stop_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """End the pool's workers at once, whatever they are running (Python 3.14 has
    pool.terminate_workers(); until then its table of processes is the only handle on them)."""
    processes = list(pool._processes.values())
    for process in processes:
        process.terminate()
    for process in processes:
        process.join()
    pool.shutdown(wait=False, cancel_futures=True)


def check_workers(workers: int, threads: int) -> None:
    """Workers × threads must fit the machine's cores: oversubscribed, small-batch PyTorch runs
    several times slower (BENCHMARKS.md, threads)."""
    cores = os.cpu_count() or 1
    if workers < 1:
        raise TicketlabError(f"workers must be at least 1, got {workers}")
    if workers * threads > cores:
        raise TicketlabError(f"--workers {workers} × --threads {threads} is more than this machine's {cores} cores; "
                             f"expected at most {max(cores // threads, 1)} workers at {threads} thread(s) each")
