"""Named experiments as data: one YAML file per preset in this folder.

A preset has a description and one section per stage config (`data`, `model`, `train`);
a user's own YAML file in the same format runs the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ticketlab.config import DataConfig, ModelConfig, TicketlabError, TrainConfig, from_dict

SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    data: DataConfig
    model: ModelConfig
    train: TrainConfig


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files(__package__).iterdir()
                  if p.name.endswith(".yaml"))


def parse_preset(name: str, text: str) -> Preset:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TicketlabError(f"{name}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise TicketlabError(f"{name}: expected a mapping with sections {', '.join(SECTIONS)}")
    unknown = sorted(set(raw) - set(SECTIONS) - {"description"})
    if unknown:
        raise TicketlabError(f"{name}: unknown section(s) {', '.join(unknown)}; expected {', '.join(SECTIONS)}")
    sections: dict[str, Any] = {}
    for key, cls in SECTIONS.items():
        values = raw.get(key) or {}
        if not isinstance(values, dict):
            raise TicketlabError(f"{name}: section {key} must be a mapping of field: value")
        sections[key] = from_dict(cls, values, f"{name}: {key}")
    return Preset(name, str(raw.get("description", "")).strip(), **sections)


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
