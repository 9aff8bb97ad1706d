"""The `ticketlab` command: thin wrappers over the library's public functions.

Flags are generated from the config dataclasses (flags.py); each module here holds one group
of commands and registers them. Every command prints a human summary and, with --json, one
JSON object as its last line. Every error the user can cause or meet is one line,
`ticketlab: error: ...`, with exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import select
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from ticketlab.cli import analysis, experiments, listing, pruning, report, training
from ticketlab.cli.flags import Command, HelpFormatter, Parser
from ticketlab.config import TicketlabError
from ticketlab.store import set_invocation

GROUPS = (training, pruning, experiments, analysis, report, listing)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="ticketlab", formatter_class=HelpFormatter,
                    description="Find lottery tickets: sparse subnetworks that train as well as their dense parent.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.register(commands, HelpFormatter)
    return parser


def os_error_message(exc: OSError) -> str:
    """What a filesystem error means for the user, in one line."""
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno == errno.ENOSPC:
        return f"the disk is full{where}; free some space or use another --runs-dir, then run the command again"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write{where}: {exc.strerror}; use a writable --runs-dir"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        blocking = _first_file(exc.filename)
        return (f"{blocking} is a file, where a directory was to be made ({exc.filename}); --runs-dir and "
                "$TICKETLAB_RUNS must name a directory or a path where one can be made") if blocking else \
            f"{exc.strerror}{where}"
    return f"{exc.strerror or exc}{where}"


def _first_file(path: str | None) -> str | None:
    """The part of `path` that exists and is a file, which stops directories being made below it."""
    if not path:
        return None
    for parent in (Path(path), *Path(path).parents):
        if parent.is_file():
            return str(parent)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv` (default: sys.argv[1:]); returns the exit status.

    For a caller in the same process: main() leaves SIGPIPE as it finds it (Python ignores it),
    and when standard output is a pipe whose reader has gone it points this process's file
    descriptor 1 at /dev/null for good and returns 141.
    """
    # SIGPIPE stays ignored: with its default action, a write to a worker that has just died would
    # kill a study's driver without a word (and kill whatever process called main()).
    try:
        return _main(argv)
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise
        # `ticketlab runs | head`: the reader has what it wanted. End quietly, with the status a
        # tool killed by SIGPIPE has, and let nothing flush into the closed pipe as Python exits.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13


def _stdout_reader_gone() -> bool:
    """Whether standard output is a pipe whose reading end has been closed."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):  # replaced by an object that is no file
        return False
    poller = select.poll()
    poller.register(descriptor, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poller.poll(0))


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    set_invocation("ticketlab " + shlex.join(argv))
    try:
        args = build_parser().parse_args(argv)
        handler: Command = args.handler
        lines, payload = handler(args)
    except TicketlabError as exc:
        print(f"ticketlab: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the user's disk or directories: a full disk, a read-only or missing path
        if isinstance(exc, BrokenPipeError) and _stdout_reader_gone():
            raise  # not an error: see main()
        print(f"ticketlab: error: {os_error_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ticketlab: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    finally:  # runs made later in this process by library calls were not made by this command
        set_invocation(None)
    print("\n".join(lines))
    if args.json:
        print(json.dumps({"command": args.command, **payload}, default=str))
    sys.stdout.flush()  # a closed pipe is met here, not as Python exits
    return 0
