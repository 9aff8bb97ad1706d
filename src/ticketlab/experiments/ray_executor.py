"""A study's nodes as Ray Core tasks: on a local Ray of this machine's cores, or on the cluster
at an address (`ray start --head` there; every node needs ticketlab installed and the runs
directory on a filesystem they all see).

Each node is a task of `threads` CPUs, so Ray runs as many at once as the CPUs allow. A task
whose worker process dies is run again by Ray (at most RETRIES times), resuming what its stage
saved; what it makes is in its run directory, so a task returns only its one-line error or None.
"""

from __future__ import annotations

import os
import socket

from ticketlab.config import TicketlabError
from ticketlab.experiments.study import RETRIES, Tracker, make


def run_on_ray(tracker: Tracker, address: str | None, threads: int) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no network calls from a study
    try:
        import ray
        from ray.exceptions import RayError
    except ImportError:
        raise TicketlabError("--backend ray needs Ray: pip install 'ticketlab[ray]'") from None
    if address is not None:
        _check_reachable(address)
    started_here = not ray.is_initialized()  # else the caller's own ray.init() says where to run
    if started_here:
        options = dict(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
        try:
            if address is None:
                ray.init(num_cpus=os.cpu_count() or 1, **options)
            else:
                ray.init(address=address, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            reason = str(exc).splitlines()[0]
            if address is None:
                raise TicketlabError(f"cannot start a local Ray: {reason}") from None
            raise TicketlabError(f"cannot join the Ray cluster at {address}: {reason} (a cluster with token "
                                 "authentication needs its token here: $RAY_AUTH_TOKEN or ~/.ray/auth_token)") from None
    try:
        task = ray.remote(num_cpus=threads, max_retries=RETRIES, retry_exceptions=False)(make)
        capacity = max(int(ray.cluster_resources().get("CPU", 1)) // threads, 1)
        running: dict[ray.ObjectRef, str] = {}
        while tracker.pending or running:
            for node in tracker.ready()[:capacity - len(running)]:
                tracker.start(node)
                running[task.remote(node)] = node.name
            if not running:
                return
            finished, _ = ray.wait(list(running), num_returns=1)
            for ref in finished:
                name = running.pop(ref)
                try:
                    error = ray.get(ref)
                except RayError as exc:  # its worker died more than RETRIES times, or Ray lost it
                    error = f"its Ray task failed {RETRIES + 1} times ({type(exc).__name__}); run the same command " \
                            "again to resume it"
                tracker.settle(name, error)
    finally:
        if started_here:
            ray.shutdown()


def _check_reachable(address: str) -> None:
    """A HOST:PORT that nothing answers at fails in seconds, not after Ray's minutes of retries."""
    if address == "auto" or address.startswith("ray://"):
        return  # auto: Ray finds the local cluster or says at once that there is none
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, ValueError):
        raise TicketlabError(f"no Ray cluster answers at {address}; expected HOST:PORT of a head node started with "
                             "`ray start --head` (or auto for this machine's)") from None
