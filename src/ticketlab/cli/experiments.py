"""Commands for named experiments: `run` (a preset or a YAML file) and `presets`."""

from __future__ import annotations

import argparse
from typing import Any

from ticketlab.cli.flags import Result, add_output_flags, add_runtime_flags, runtime_from_args, typed
from ticketlab.cli.report import report_path, write_report
from ticketlab.cli.training import describe_training
from ticketlab.config import TicketlabError
from ticketlab.experiments.study import BACKENDS, check_workers


def cmd_run(args: argparse.Namespace) -> Result:
    from ticketlab.experiments.preset import load_preset, plan_preset, run_preset
    from ticketlab.experiments.sections import SECTIONS

    preset = load_preset(args.preset)
    preset = preset.smoked() if args.smoke else preset
    if args.address is not None and args.backend != "ray":
        raise TicketlabError("--address joins a Ray cluster: give --backend ray with it")
    if args.workers != 1 and args.backend == "ray":
        raise TicketlabError("--workers is for the local backend; Ray runs as many stages at once as the cluster's "
                             "CPUs allow at --threads each")
    if args.plan:
        runtime = runtime_from_args(args)
        if args.backend == "local":
            check_workers(args.workers, runtime.threads)  # a plan of a run that could not start is no plan
        return plan_preset(preset, runtime)
    runtime = runtime_from_args(args)
    result = run_preset(preset, runtime, workers=args.workers, backend=args.backend, address=args.address)
    lines, payload = describe_training(result.train)
    title = f"preset {result.preset.name}" + (f": {result.preset.description}" if result.preset.description else
                                               f" ({args.preset})")
    lines = [title, *([result.data_note] if result.data_note else []), *lines]
    payload = {"preset": result.preset.name, "data_note": result.data_note, **payload}
    for name, section in result.sections.items():
        more, entries = SECTIONS[name].describe(section)
        lines += more
        payload |= entries
    report, _ = write_report([args.preset], report_path(result.preset.name, runtime.runs_dir), runtime, args.smoke)
    lines.append(f"report: {report.absolute()}")
    return lines, {**payload, "report": str(report.absolute())}


def cmd_status(args: argparse.Namespace) -> Result:
    from ticketlab.experiments.preset import load_preset, plan_preset

    preset = load_preset(args.preset)
    return plan_preset(preset.smoked() if args.smoke else preset, runtime_from_args(args))


def cmd_presets(args: argparse.Namespace) -> Result:
    from ticketlab.experiments.preset import load_preset
    from ticketlab.presets import preset_names

    presets = [load_preset(name) for name in preset_names()]

    def data(preset: Any) -> str:  # what it needs, and what it runs on where that is absent
        return preset.data.name + (f" (else {preset.fallback.data.name})" if preset.fallback else "")

    lines = [f"{'preset':<28} {'data':<22} what it reproduces"]
    lines += [f"{p.name:<28} {data(p):<22} {p.description.splitlines()[0] if p.description else ''}" for p in presets]
    return lines, {"presets": {p.name: {"description": p.description, "data": data(p)} for p in presets}}


def register(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    run = commands.add_parser("run", help="run a named experiment (preset) or a YAML file",
                              formatter_class=formatter)
    run.add_argument("preset", nargs="?", default="quickstart", help="preset name or FILE.yaml")
    run.add_argument("--smoke", action="store_true", help="the preset's smoke variant: tiny generated data, few steps")
    run.add_argument("--workers", type=typed(int, "--workers"), default=1,
                     help="local worker processes running the study's stages that do not depend on each other "
                          "(a comparison's masks and tickets, a lottery's replicates and controls); workers × "
                          "--threads must fit the cores")
    run.add_argument("--backend", choices=BACKENDS, default="local",
                     help="local: this process or --workers processes; ray: Ray Core tasks of --threads CPUs each")
    run.add_argument("--address", default=None,
                     help="with --backend ray: the cluster to join (auto, or HOST:PORT; default: a local Ray of "
                          "this machine's cores); --runs-dir must then be on a filesystem every node mounts")
    run.add_argument("--plan", action="store_true",
                     help="print the study (its stages by kind, which are done, what would run) and run nothing")
    add_runtime_flags(run)
    run.set_defaults(handler=cmd_run)

    status = commands.add_parser("status", help="the state of a preset's study: done, running, failed, pending",
                                 formatter_class=formatter)
    status.add_argument("preset", help="preset name or FILE.yaml")
    status.add_argument("--smoke", action="store_true", help="the preset's smoke variant")
    add_runtime_flags(status)
    status.set_defaults(handler=cmd_status)

    presets = commands.add_parser("presets", help="list the built-in presets", formatter_class=formatter)
    add_output_flags(presets)
    presets.set_defaults(handler=cmd_presets)
