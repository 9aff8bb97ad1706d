"""Flags generated from the config dataclasses, and the parser with ticketlab's one-line errors.

Each field's help text and default become its flag's, so the command line and the Python
API cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ticketlab.config import DataConfig, ModelConfig, Runtime, TicketlabError, TrainConfig, coerce

# What a command returns: its human summary lines, and the JSON payload --json prints.
Result = tuple[list[str], dict[str, Any]]
Command = Callable[[argparse.Namespace], Result]

# Flag names where a field's own name would be ambiguous on one command line.
RENAMES = {DataConfig: {"name": "dataset"}, ModelConfig: {"name": "model"}}


def flag_name(cls: type, name: str) -> str:
    return "--" + RENAMES.get(cls, {}).get(name, name).replace("_", "-")


def typed(annotation: Any, flag: str) -> Callable[[str], Any]:
    """An argparse type that converts as the configs do: one-line errors, finite numbers only."""
    return lambda text: coerce(text, annotation, flag)


def add_config_flags(parser: argparse.ArgumentParser, cls: type, title: str, skip: Sequence[str] = (),
                     sections: Mapping[str, Sequence[str]] | None = None) -> None:
    """A flag per field of the config dataclass `cls`, under `title`; the fields a section names
    go under that section's title instead (e.g. the options of one searcher)."""
    group = parser.add_argument_group(title)
    section_of = {}
    for heading, names in (sections or {}).items():
        section = parser.add_argument_group(heading)
        section_of.update(dict.fromkeys(names, section))
    types = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:  # set another way, e.g. a positional argument
            continue
        flag, annotation = flag_name(cls, f.name), types[f.name]
        kwargs: dict[str, Any] = {"dest": f"{cls.__name__}.{f.name}", "default": f.default,
                                  "help": f.metadata["help"]}
        if bool in (annotation, *typing.get_args(annotation)):
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = typed(annotation, flag)
            kwargs["metavar"] = flag.removeprefix("--").upper().replace("-", "_")
        section_of.get(f.name, group).add_argument(flag, **kwargs)


def config_from_args(args: argparse.Namespace, cls: type, **values: Any) -> Any:
    """The config from its flags; `values` gives the fields that have no flag."""
    return cls(**{f.name: values[f.name] if f.name in values else getattr(args, f"{cls.__name__}.{f.name}")
                  for f in dataclasses.fields(cls)})


def add_runtime_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("runtime (does not change results)")
    types = typing.get_type_hints(Runtime)
    for f in dataclasses.fields(Runtime):
        if f.name == "progress":
            continue
        if f.name == "force":
            group.add_argument("--force", action="store_true", help=f.metadata["help"])
            continue
        flag = flag_name(Runtime, f.name)
        group.add_argument(flag, dest=f"Runtime.{f.name}", default=f.default,
                           metavar=flag.removeprefix("--").upper().replace("-", "_"),
                           type=typed(types[f.name], flag),
                           help=f.metadata["help"])
    add_output_flags(parser)


def add_run_flag(parser: argparse.ArgumentParser, what: str = "the training run: its directory or name") -> None:
    parser.add_argument("--run", required=True, help=f"{what} (see `ticketlab runs`)")


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the results last")


def add_training_flags(parser: argparse.ArgumentParser, training_title: str = "training") -> None:
    """The flags of a dense training: data, model, training, and --epochs."""
    add_config_flags(parser, DataConfig, "data")
    add_config_flags(parser, ModelConfig, "model")
    add_config_flags(parser, TrainConfig, training_title)
    parser.add_argument("--epochs", type=typed(int, "--epochs"), default=None, help="shorthand for --steps Nep")


def training_from_args(args: argparse.Namespace) -> tuple[DataConfig, ModelConfig, TrainConfig]:
    training = config_from_args(args, TrainConfig)
    if args.epochs is not None:
        if training.steps != TrainConfig.steps:
            raise TicketlabError("give either --epochs or --steps, not both")
        training = dataclasses.replace(training, steps=f"{args.epochs}ep")
    return config_from_args(args, DataConfig), config_from_args(args, ModelConfig), training


def runtime_from_args(args: argparse.Namespace) -> Runtime:
    from ticketlab.training.stage import check_runtime  # imports torch: only for commands that run stages

    values = {f.name: getattr(args, f"Runtime.{f.name}") for f in dataclasses.fields(Runtime)
              if f.name not in ("force", "progress")}
    runtime = Runtime(**values, force=args.force, progress=not args.quiet)
    check_runtime(runtime)  # also when the run asked for is finished and nothing else would look
    return runtime


class Parser(argparse.ArgumentParser):
    """argparse with ticketlab's one-line errors instead of usage text and exit code 2 of its own."""

    def error(self, message: str) -> typing.NoReturn:
        raise TicketlabError(f"{message} (see `{self.prog} --help`)")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a flag's default once: not where its help already says it, nor for no value (None, off)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "(default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)
