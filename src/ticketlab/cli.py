"""The `ticketlab` command: thin wrappers over the library's public functions.

Flags are generated from the config dataclasses (their help texts and defaults), so the
command line and the Python API cannot drift apart. Every command prints a human summary
and, with --json, one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any

from ticketlab.config import DataConfig, ModelConfig, Runtime, TicketlabError, TrainConfig, coerce

# Flag names where a field's own name would be ambiguous on one command line.
RENAMES = {DataConfig: {"name": "dataset"}, ModelConfig: {"name": "model"}}


def _flag(cls: type, name: str) -> str:
    return "--" + RENAMES.get(cls, {}).get(name, name).replace("_", "-")


def add_config_flags(parser: argparse.ArgumentParser, cls: type, title: str) -> None:
    group = parser.add_argument_group(title)
    types = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag, annotation = _flag(cls, f.name), types[f.name]
        kwargs: dict[str, Any] = {"dest": f"{cls.__name__}.{f.name}", "default": f.default,
                                  "help": f.metadata["help"]}
        if bool in (annotation, *typing.get_args(annotation)):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = lambda text, a=annotation, fl=flag: coerce(text, a, fl)
            kwargs["metavar"] = flag.removeprefix("--").upper().replace("-", "_")
        group.add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace, cls: type) -> Any:
    return cls(**{f.name: getattr(args, f"{cls.__name__}.{f.name}") for f in dataclasses.fields(cls)})


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime (does not change results)")
    types = typing.get_type_hints(Runtime)
    for f in dataclasses.fields(Runtime):
        if f.name == "progress":
            continue
        if f.name == "force":
            group.add_argument("--force", action="store_true", help=f.metadata["help"])
            continue
        flag = _flag(Runtime, f.name)
        group.add_argument(flag, dest=f"Runtime.{f.name}", default=f.default,
                           metavar=flag.removeprefix("--").upper().replace("-", "_"),
                           type=lambda text, a=types[f.name], fl=f.name: coerce(text, a, fl),
                           help=f.metadata["help"])
    add_output_flags(parser)


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the results last")


def runtime_from_args(args: argparse.Namespace) -> Runtime:
    values = {f.name: getattr(args, f"Runtime.{f.name}") for f in dataclasses.fields(Runtime)
              if f.name not in ("force", "progress")}
    return Runtime(**values, force=args.force, progress=not args.quiet)


# --- commands ---------------------------------------------------------------------------

def _describe_training(result: Any) -> tuple[list[str], dict[str, Any]]:
    summary = result.summary
    best, final = summary["best"], summary["final"]
    lines = [
        f"{'finished earlier: ' if result.cached else ''}trained {result.model_config.name} on {result.data.name} "
        f"for {result.training.steps} ({summary['iterations']} iterations, {summary['wall_time']:.1f} s)",
        f"  data: {summary['data_source']}",
        f"  best step {best['step']} by {summary['select_by']}: val acc {best['val_acc']:.4f}, "
        f"test acc {best['test_acc']:.4f}",
        f"  final step {final['step']}: val acc {final['val_acc']:.4f}, test acc {final['test_acc']:.4f}",
        f"  run: {result.path}",
    ]
    payload = {"run_dir": str(result.path), "cached": result.cached, "metrics": summary}
    return lines, payload


def cmd_train(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    from ticketlab.training.stage import train

    training = config_from_args(args, TrainConfig)
    if args.epochs is not None:
        if training.steps != TrainConfig.steps:
            raise TicketlabError("give either --epochs or --steps, not both")
        training = dataclasses.replace(training, steps=f"{args.epochs}ep")
    result = train(config_from_args(args, DataConfig), config_from_args(args, ModelConfig), training,
                   runtime_from_args(args))
    return _describe_training(result)


def cmd_run(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    from ticketlab.presets import load_preset
    from ticketlab.training.stage import train

    preset = load_preset(args.preset)
    result = train(preset.data, preset.model, preset.train, runtime_from_args(args))
    lines, payload = _describe_training(result)
    return [f"preset {preset.name}: {preset.description}", *lines], {"preset": preset.name, **payload}


def cmd_runs(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    from ticketlab.store import list_runs, runs_root

    rows = list_runs(args.runs_dir)
    if not rows:
        return [f"no runs under {runs_root(args.runs_dir)}"], {"runs": []}
    lines = [f"{'run':<20} {'status':<12} {'dataset':<9} {'model':<13} {'steps':<9} {'val acc':>8} {'test acc':>8}"]
    for row in rows:
        config, best = row["hparams"], row["summary"].get("best", {})
        lines.append(
            f"{row['name']:<20} {row['status']:<12} {config.get('data', {}).get('name', '?'):<9} "
            f"{config.get('model', {}).get('name', '?'):<13} {config.get('train', {}).get('steps', '?'):<9} "
            f"{best.get('val_acc', float('nan')):>8.4f} {best.get('test_acc', float('nan')):>8.4f}"
        )
    lines.append("(accuracies at the best step by validation)")
    return lines, {"runs": [{k: row[k] for k in ("name", "path", "kind", "status", "summary")} for row in rows]}


def cmd_presets(args: argparse.Namespace) -> tuple[list[str], dict[str, Any]]:
    from ticketlab.presets import load_preset, preset_names

    presets = [load_preset(name) for name in preset_names()]
    return ([f"{p.name:<16} {p.description}" for p in presets],
            {"presets": {p.name: p.description for p in presets}})


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="ticketlab", formatter_class=formatter,
                                     description="Find lottery tickets: sparse subnetworks that train as well as "
                                                 "their dense parent.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train a dense network (cached by its hyperparameters)",
                                formatter_class=formatter)
    add_config_flags(train, DataConfig, "data")
    add_config_flags(train, ModelConfig, "model")
    add_config_flags(train, TrainConfig, "training")
    train.add_argument("--epochs", type=int, default=None, help="shorthand for --steps Nep")
    add_runtime_flags(train)
    train.set_defaults(handler=cmd_train)

    run = commands.add_parser("run", help="run a named experiment (preset) or a YAML file",
                              formatter_class=formatter)
    run.add_argument("preset", nargs="?", default="quickstart", help="preset name or FILE.yaml")
    add_runtime_flags(run)
    run.set_defaults(handler=cmd_run)

    runs = commands.add_parser("runs", help="list runs with their status and key metrics",
                               formatter_class=formatter)
    runs.add_argument("--runs-dir", default=None, help=Runtime.__dataclass_fields__["runs_dir"].metadata["help"])
    add_output_flags(runs)
    runs.set_defaults(handler=cmd_runs)

    presets = commands.add_parser("presets", help="list the built-in presets", formatter_class=formatter)
    add_output_flags(presets)
    presets.set_defaults(handler=cmd_presets)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], tuple[list[str], dict[str, Any]]] = args.handler
    try:
        lines, payload = handler(args)
    except TicketlabError as exc:
        print(f"ticketlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ticketlab: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    print("\n".join(lines))
    if args.json:
        print(json.dumps({"command": args.command, **payload}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
