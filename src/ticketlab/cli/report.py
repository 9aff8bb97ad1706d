"""`ticketlab report`: what a study found, as one self-contained HTML file."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from ticketlab.cli.flags import Result, add_runtime_flags, runtime_from_args
from ticketlab.config import Runtime, TicketlabError


def is_preset(target: str) -> bool:
    from ticketlab.presets import preset_names

    return target in preset_names() or Path(target).suffix in (".yaml", ".yml")


def report_path(preset: str, runs_dir: str | None) -> Path:
    """Where `ticketlab run PRESET` writes its study's report."""
    from ticketlab.store import runs_root

    return runs_root(runs_dir) / "reports" / f"{preset}.html"


def figures_hint(run_name: str, runtime: Runtime) -> str:
    """The line a command that made a run prints last: runs hold data, and this draws them."""
    where = f" --runs-dir {shlex.quote(runtime.runs_dir)}" if runtime.runs_dir else ""
    return f"  figures: ticketlab report {run_name}{where} -o {run_name}.html"


def write_report(targets: list[str], out: Path, runtime: Runtime, smoke: bool = False) -> tuple[Path, int]:
    """The report over the targets (presets' studies, or runs by name or directory) written to `out`;
    its path and the number of figures in it. A study's report shows what of it is done."""
    from ticketlab.experiments.preset import load_preset, study_runs
    from ticketlab.report.build import build_report
    from ticketlab.store import atomic_write_text, run_status, runs_root

    names, titles = [], []
    for target in targets:
        if is_preset(target):
            preset = load_preset(target)
            found, _ = study_runs(preset.smoked() if smoke else preset, runtime)
            done = [name for name in found if run_status(runs_root(runtime.runs_dir) / name) == "done"]
            if not done:
                raise TicketlabError(f"preset {preset.name} has no finished runs under {runs_root(runtime.runs_dir)}; "
                                     f"run `ticketlab run {target}{' --smoke' if smoke else ''}` first")
            names += done
            titles.append(f"preset {preset.name}")
        else:
            names.append(Path(target).name if Path(target).is_dir() else target)
            titles.append(names[-1])
    if out.suffix != ".html":
        raise TicketlabError(f"report file {out} should end in .html")
    existing = next(parent for parent in out.absolute().parents if parent.exists())
    if not existing.is_dir():
        raise TicketlabError(f"cannot write the report to {out}: {existing} is not a directory; expected -o FILE.html "
                             "in a directory")
    page = build_report(f"ticketlab report: {', '.join(titles)}",
                        "What the runs found: each kind of run in a section of its own, every table also as CSV "
                        "and every figure with the command that made its runs.", names, runtime.runs_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, page)
    return out, page.count("<figure>")


def cmd_report(args: argparse.Namespace) -> Result:
    runtime = runtime_from_args(args)
    path, figures = write_report(args.targets, Path(args.output), runtime, args.smoke)
    return [f"report: {path.absolute()} ({figures} figures)"], {"report": str(path.absolute()), "figures": figures}


def register(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    report = commands.add_parser("report", help="what a study found, as one self-contained HTML file",
                                 formatter_class=formatter)
    report.add_argument("targets", nargs="+", metavar="STUDY|RUN",
                        help="a preset name or FILE.yaml (the runs its study made), or runs by name or directory "
                             "(with the runs they were made from)")
    report.add_argument("-o", "--output", default="report.html", help="the HTML file to write (default report.html)")
    report.add_argument("--smoke", action="store_true", help="a preset's smoke variant")
    add_runtime_flags(report)
    report.set_defaults(handler=cmd_report)
