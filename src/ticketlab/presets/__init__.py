"""Named experiments as data: one YAML file per preset in this folder.

A preset has a description, the configs of the dense training (`data`, `model`, `train`),
optional later stages (`prune`, `sweep`), and optionally a `fallback` with the data (and
training changes) to use when the preset's data set is not available here. A user's own
YAML file in the same format runs the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ticketlab.config import DataConfig, ModelConfig, PruneConfig, TicketlabError, TrainConfig, from_dict

STAGES = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "prune": PruneConfig}
SWEEP_KEYS = {"ks", "step"}


@dataclass(frozen=True)
class Fallback:
    data: DataConfig
    train: TrainConfig


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    prune: PruneConfig | None = None
    sweep: dict[str, Any] | None = None
    fallback: Fallback | None = None


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files(__package__).iterdir()
                  if p.name.endswith(".yaml"))


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TicketlabError(f"{where} must be a mapping of field: value")
    return value


def parse_preset(name: str, text: str) -> Preset:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TicketlabError(f"{name}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise TicketlabError(f"{name}: expected a mapping with sections {', '.join(STAGES)}")
    known = {*STAGES, "description", "sweep", "fallback"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise TicketlabError(f"{name}: unknown section(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
    configs = {key: from_dict(cls, _mapping(raw.get(key), f"{name}: {key}"), f"{name}: {key}")
               for key, cls in STAGES.items() if key in raw or key != "prune"}
    sweep = None
    if "sweep" in raw:
        sweep = _mapping(raw["sweep"], f"{name}: sweep")
        if set(sweep) - SWEEP_KEYS:
            raise TicketlabError(f"{name}: sweep: unknown key(s) {', '.join(sorted(set(sweep) - SWEEP_KEYS))}; "
                                 f"expected some of {', '.join(sorted(SWEEP_KEYS))}")
    fallback = None
    if "fallback" in raw:
        section = _mapping(raw["fallback"], f"{name}: fallback")
        if set(section) - {"data", "train"}:
            raise TicketlabError(f"{name}: fallback takes data and train sections only")
        fallback = Fallback(
            from_dict(DataConfig, _mapping(section.get("data"), f"{name}: fallback.data"), f"{name}: fallback.data"),
            from_dict(TrainConfig, {**configs["train"].__dict__, **_mapping(section.get("train"), f"{name}: fallback.train")},
                      f"{name}: fallback.train"),
        )
    return Preset(name, str(raw.get("description", "")).strip(), configs["data"], configs["model"], configs["train"],
                  configs.get("prune"), sweep, fallback)


def load_preset(name_or_file: str) -> Preset:
    """A built-in preset by name, or a YAML file by path."""
    path = Path(name_or_file)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise TicketlabError(f"preset file {path} does not exist")
        return parse_preset(path.stem, path.read_text())
    if name_or_file not in preset_names():
        raise TicketlabError(
            f"unknown preset {name_or_file!r}: expected one of {', '.join(preset_names())} or a FILE.yaml"
        )
    text = resources.files(__package__).joinpath(f"{name_or_file}.yaml").read_text()
    return parse_preset(name_or_file, text)
