"""A study before and while it runs: each node's state from the runs it makes (done, running,
diverged) and from the study's record (failed, skipped, interrupted), counted by kind, with the
trainings and search evaluations still to run. `ticketlab run --plan` and `ticketlab status`."""

from __future__ import annotations

import os
import socket
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ticketlab.config import TicketlabError, stable_hash
from ticketlab.experiments.board import stage_progress
from ticketlab.experiments.study import Node
from ticketlab.store import read_json, run_status, runs_root

STUDIES = "studies"  # the folder of the runs directory that holds each study's record
TO_RUN = ("pending", "interrupted", "failed", "skipped")  # what a run of the study would (re)try


def record_path(name: str, nodes: Sequence[Node], runs_dir: str | None) -> Path:
    """Where a study's record lives: named by the preset and by the nodes it has."""
    return runs_root(runs_dir) / STUDIES / f"{name}-{stable_hash(sorted(node.name for node in nodes))}.json"


def read_record(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        record = read_json(path)
    except TicketlabError:
        return None  # a damaged record only loses the failures it listed; the runs say the rest
    return record if isinstance(record, dict) else None


def node_states(nodes: Sequence[Node], runs_dir: str | None, record: dict[str, Any] | None) -> dict[str, str]:
    """done, running, failed, skipped, interrupted or pending, for each node."""
    root, recorded = runs_root(runs_dir), (record or {}).get("states", {})
    driving = record is not None and _driver_alive(record)
    states = {}
    for node in nodes:
        runs = [run_status(root / name) for name in node.runs]
        was = recorded.get(node.name, "pending")
        if runs and all(status == "done" for status in runs):
            states[node.name] = "done"
        elif "running" in runs:
            states[node.name] = "running"
        elif "diverged" in runs:
            states[node.name] = "failed"
        elif was == "done" and not runs:  # its runs are named only once it has run: the record says
            states[node.name] = "done"
        elif was == "running" and driving:
            states[node.name] = "running"
        elif was == "running" or "interrupted" in runs:  # its process is gone: it resumes next time
            states[node.name] = "interrupted"
        else:
            states[node.name] = was if was in ("failed", "skipped") else "pending"
    return states


def _driver_alive(record: dict[str, Any]) -> bool:
    """Whether the process that runs the study is alive (one on another host is taken at its word)."""
    if record.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(record["pid"]), 0)
    except (ProcessLookupError, PermissionError, KeyError, ValueError):
        return False
    return True


def _estimate(nodes: Sequence[Node], states: dict[str, str], record: dict[str, Any]) -> str:
    """While the driver runs: the time left at the pace of the trainings done since it started (a
    node that trains nothing counts as one), as its progress line says."""
    if "running" not in states.values():
        return ""
    done = sum(max(n.trainings, 1) for n in nodes if record["states"].get(n.name) == "done")
    left = sum(max(n.trainings, 1) for n in nodes if states[n.name] not in ("done", "failed", "skipped"))
    elapsed = time.time() - record["started"]
    return f"; {elapsed:.0f} s in, about {elapsed / done * left:.0f} s left" if done else f"; {elapsed:.0f} s in"


def describe_study(title: str, nodes: Sequence[Node], states: dict[str, str], record: dict[str, Any] | None = None,
                   runs_root: Path | None = None) -> tuple[list[str], dict[str, Any]]:
    """The plan or status of a study: its nodes by kind and state, what is left to run, and each
    node not done (a running one with how far its stage has got, from the runs in `runs_root`)."""
    count = Counter(states.values())
    to_run = [node for node in nodes if states[node.name] in TO_RUN]
    trainings = sum(node.trainings for node in to_run)
    evaluations = sum(node.evaluations for node in to_run)
    lines = [f"{title}: {len(nodes)} nodes, " + ", ".join(f"{count[s]} {s}" for s in
                                                          ("done", "running", "failed", "skipped", "interrupted",
                                                           "pending") if count[s])]
    if record is not None:
        lines.append(f"  started {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(record['started']))}, "
                     f"last change {time.time() - record['updated']:.0f} s ago (driver pid {record['pid']})"
                     + _estimate(nodes, states, record))
    kinds = list(dict.fromkeys(node.kind for node in nodes))
    width = max([10, *map(len, kinds)])
    lines.append(f"  {'kind':<{width}} {'nodes':>5} {'done':>5} {'to run':>6}")
    for kind in kinds:
        mine = [node for node in nodes if node.kind == kind]
        lines.append(f"  {kind:<{width}} {len(mine):>5} {sum(states[n.name] == 'done' for n in mine):>5} "
                     f"{sum(n in to_run for n in mine):>6}")
    lines.append(f"  to run: {trainings} training(s), {evaluations} search evaluation(s)")
    errors = (record or {}).get("errors", {})
    for node in nodes:
        state = states[node.name]
        if state != "done":
            error = f": {errors[node.name]}" if state == "failed" and node.name in errors else ""
            if state == "running" and runs_root is not None:
                error = f"  {stage_progress(runs_root, node.runs)}".rstrip()
            lines.append(f"  {state:<11} {node.kind:<{width}} {node.name}{error}")
    payload = {"nodes": [{"name": node.name, "kind": node.kind, "state": states[node.name], "needs": list(node.needs),
                          "runs": list(node.runs), "trainings": node.trainings, "evaluations": node.evaluations}
                         for node in nodes],
               "to_run": {"nodes": len(to_run), "trainings": trainings, "evaluations": evaluations}}
    return lines, payload
