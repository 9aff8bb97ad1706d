"""Named experiments as data: one YAML file per preset in this folder.

A preset has a description and one section per config: the dense training (`data`,
`model`, `train`) and optional later stages (`prune`, `lottery` with `replicates`,
`controls` and `control_levels`, `sweep`, `compare`, and structured pruning: `earlybird`
draws tickets while the dense network trains, `shrink` lists structured prunings that are
physically shrunk and retrained). Two optional sections change it:
`fallback` gives the data (and training changes) to use when the preset's data set is not
available here; `smoke` gives overrides (tiny generated data, a few steps) that run the
same pipeline in seconds, for tests (`ticketlab run PRESET --smoke`). A user's own YAML
file in the same format runs the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from ticketlab.config import (DataConfig, LotteryConfig, MaskMethod, ModelConfig, PruneConfig, SearchConfig,
                              TicketlabError, TrainConfig, coerce, from_dict)

CONFIGS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "prune": PruneConfig,
           "lottery": LotteryConfig}
OPTIONAL = ("prune", "lottery")
SWEEP_KEYS = {"ks", "step"}
OTHER_KEYS = {"description", "sweep", "fallback", "smoke", "replicates", "controls", "control_levels", "compare",
              "earlybird", "shrink"}
EARLYBIRD_OPTIONS = {"criterion": str, "threshold": float, "stop": bool}  # as earlybird() takes them
EARLYBIRD_AT = "earlybird"  # a shrink entry's `at` that means each ratio's early-bird ticket


@dataclass(frozen=True)
class Compare:
    """Masks from several methods at several sparsities, scored before and after retraining."""

    methods: tuple[MaskMethod, ...]
    sparsities: tuple[float, ...]
    rewind: str = "0it"


def _compare(section: Any, name: str) -> Compare:
    section = _mapping(section, f"{name}: compare")
    if set(section) - {"methods", "sparsities", "rewind"} or not section.get("methods") or not section.get("sparsities"):
        raise TicketlabError(f"{name}: compare takes methods (a list), sparsities (a list) and optionally rewind")
    methods = []
    for entry in section["methods"]:
        entry = _mapping(entry, f"{name}: compare.methods")
        kinds = [k for k in ("prune", "search") if k in entry]
        if "name" not in entry or len(kinds) != 1 or set(entry) - {"name", *kinds}:
            raise TicketlabError(f"{name}: each compare method has a name and one prune or search section")
        cls = PruneConfig if kinds[0] == "prune" else SearchConfig
        where = f"{name}: compare.{entry['name']}"
        methods.append(MaskMethod(str(entry["name"]), from_dict(cls, _mapping(entry[kinds[0]], where), where)))
    return Compare(tuple(methods), tuple(float(s) for s in section["sparsities"]), str(section.get("rewind", "0it")))


@dataclass(frozen=True)
class EarlyBirdSection:
    """Early-bird tickets drawn while the dense network trains (You et al.): the pruning ratios,
    and `options` for earlybird() (criterion, threshold, stop; its defaults where absent)."""

    ratios: tuple[float, ...]
    options: dict[str, Any] = field(default_factory=dict)


def _earlybird(section: Any, name: str) -> EarlyBirdSection:
    section = _mapping(section, f"{name}: earlybird")
    extra = set(section) - {"ratios", *EARLYBIRD_OPTIONS}
    if extra or not isinstance(section.get("ratios"), list) or not section["ratios"]:
        raise TicketlabError(f"{name}: earlybird takes ratios (a list) and optionally "
                             f"{', '.join(EARLYBIRD_OPTIONS)}" + (f"; not {', '.join(sorted(extra))}" if extra else ""))
    options = {key: coerce(section[key], kind, f"{name}: earlybird.{key}")
               for key, kind in EARLYBIRD_OPTIONS.items() if key in section}
    return EarlyBirdSection(tuple(coerce(r, float, f"{name}: earlybird.ratios") for r in section["ratios"]), options)


@dataclass(frozen=True)
class ShrinkPlan:
    """One entry of a `shrink` section: the dense run pruned by `prune` (structured; criterion
    bn_scale unless given) at each step of `at` and each ratio, every mask physically shrunk,
    and each small network retrained in each `retrain` mode (finetune, rewind, scratch), rewind
    starting from `rewind`: a saved step, or `at` for the step pruned at. Without `at` or
    `ratios`, the preset's earlybird section gives them: each ratio pruned at its ticket."""

    prune: PruneConfig
    at: tuple[str, ...] = ()
    ratios: tuple[float, ...] = ()
    retrain: tuple[str, ...] = ("finetune",)
    rewind: str = "0it"


SHRINK_KEYS = {"prune", "at", "ratios", "retrain", "rewind"}


def _shrink(section: Any, name: str) -> tuple[ShrinkPlan, ...]:
    if not isinstance(section, list) or not section:
        raise TicketlabError(f"{name}: shrink must be a list of entries with keys {', '.join(sorted(SHRINK_KEYS))}")
    plans = []
    for i, entry in enumerate(section):
        where = f"{name}: shrink[{i}]"
        entry = _mapping(entry, where)
        extra = set(entry) - SHRINK_KEYS
        if extra:
            raise TicketlabError(f"{where}: unknown key(s) {', '.join(sorted(extra))}; "
                                 f"expected some of {', '.join(sorted(SHRINK_KEYS))}")
        lists = {key: entry[key] for key in ("at", "ratios", "retrain") if key in entry}
        for key, value in lists.items():
            if not isinstance(value, list) or not value:
                raise TicketlabError(f"{where}: {key} must be a non-empty list")
        prune = _mapping(entry.get("prune"), f"{where}.prune")
        fixed = sorted(set(prune) & {"sparsity", "at", "structured"})
        if fixed:
            raise TicketlabError(f"{where}.prune: {', '.join(fixed)} cannot be set here; the entry's ratios "
                                 "and at give them, and shrinking needs structured masks")
        # Global by default, as the early-bird detector and network slimming rank channels: the
        # ticket a plan prunes at an early-bird epoch is then the mask the detector drew.
        plans.append(ShrinkPlan(
            from_dict(PruneConfig, {"criterion": "bn_scale", "scope": "global", **prune, "structured": True},
                      f"{where}.prune"),
            tuple(str(step) for step in lists.get("at", [])),
            tuple(coerce(r, float, f"{where}.ratios") for r in lists.get("ratios", [])),
            tuple(str(mode) for mode in lists.get("retrain", ["finetune"])),
            str(entry.get("rewind", "0it")),
        ))
    return tuple(plans)


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
    lottery: LotteryConfig | None = None
    replicates: int = 1
    controls: tuple[str, ...] = ()
    control_levels: tuple[int, ...] | None = None
    sweep: dict[str, Any] | None = None
    compare: Compare | None = None
    earlybird: EarlyBirdSection | None = None
    shrink: tuple[ShrinkPlan, ...] = ()
    fallback: Fallback | None = None
    smoke: dict[str, Any] = field(default_factory=dict)

    def smoked(self) -> Preset:
        """The preset with its smoke overrides: generated data and a few steps."""
        if not self.smoke:
            raise TicketlabError(f"preset {self.name} has no smoke variant")
        changes: dict[str, Any] = {"fallback": None, "smoke": {}}
        for key, values in self.smoke.items():
            if key == "data":  # other data entirely, not a tweak of the real data's settings
                changes[key] = from_dict(DataConfig, values, f"{self.name}: smoke.data")
            elif key in ("train", "prune", "lottery") and getattr(self, key) is not None:
                current = dataclasses.asdict(getattr(self, key))
                changes[key] = from_dict(CONFIGS[key], {**current, **values}, f"{self.name}: smoke.{key}")
            elif key in ("replicates", "controls", "control_levels"):
                changes[key] = _other(key, values, self.name)
            elif key == "compare":  # a whole smaller comparison: fewer methods, budgets, sparsities
                changes[key] = _compare(values, self.name)
            elif key == "earlybird" and self.earlybird is not None:  # a tweak: fewer ratios, a looser threshold
                current = {"ratios": list(self.earlybird.ratios), **self.earlybird.options}
                changes[key] = _earlybird({**current, **_mapping(values, f"{self.name}: smoke.earlybird")}, self.name)
            elif key == "shrink":  # a whole smaller list: fewer steps, ratios, modes
                changes[key] = _shrink(values, f"{self.name}: smoke")
            else:
                raise TicketlabError(f"{self.name}: smoke cannot change {key}")
        return dataclasses.replace(self, **changes)


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files(__package__).iterdir()
                  if p.name.endswith(".yaml"))


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise TicketlabError(f"{where} must be a mapping of field: value")
    return value


def _other(key: str, value: Any, name: str) -> Any:
    """replicates, controls and control_levels, checked for their type."""
    if key == "replicates":
        if not isinstance(value, int) or value < 1:
            raise TicketlabError(f"{name}: replicates must be a whole number of at least 1")
        return value
    if not isinstance(value, list):
        raise TicketlabError(f"{name}: {key} must be a list")
    return tuple(int(v) for v in value) if key == "control_levels" else tuple(str(v) for v in value)


def parse_preset(name: str, text: str) -> Preset:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TicketlabError(f"{name}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise TicketlabError(f"{name}: expected a mapping with sections {', '.join(CONFIGS)}")
    unknown = sorted(set(raw) - set(CONFIGS) - OTHER_KEYS)
    if unknown:
        raise TicketlabError(f"{name}: unknown section(s) {', '.join(unknown)}; "
                             f"expected some of {', '.join(sorted({*CONFIGS, *OTHER_KEYS}))}")
    fields: dict[str, Any] = {}
    for key, cls in CONFIGS.items():
        if key in raw or key not in OPTIONAL:
            fields[key] = from_dict(cls, _mapping(raw.get(key), f"{name}: {key}"), f"{name}: {key}")
    for key in ("replicates", "controls", "control_levels"):
        if key in raw:
            fields[key] = _other(key, raw[key], name)
    if "sweep" in raw:
        fields["sweep"] = _mapping(raw["sweep"], f"{name}: sweep")
        extra = set(fields["sweep"]) - SWEEP_KEYS
        if extra:
            raise TicketlabError(f"{name}: sweep: unknown key(s) {', '.join(sorted(extra))}; "
                                 f"expected some of {', '.join(sorted(SWEEP_KEYS))}")
    if "compare" in raw:
        fields["compare"] = _compare(raw["compare"], name)
    if "earlybird" in raw:
        fields["earlybird"] = _earlybird(raw["earlybird"], name)
    if "shrink" in raw:
        fields["shrink"] = _shrink(raw["shrink"], name)
    if "fallback" in raw:
        section = _mapping(raw["fallback"], f"{name}: fallback")
        if set(section) - {"data", "train"}:
            raise TicketlabError(f"{name}: fallback takes data and train sections only")
        train = {**dataclasses.asdict(fields["train"]), **_mapping(section.get("train"), f"{name}: fallback.train")}
        fields["fallback"] = Fallback(
            from_dict(DataConfig, _mapping(section.get("data"), f"{name}: fallback.data"), f"{name}: fallback.data"),
            from_dict(TrainConfig, train, f"{name}: fallback.train"),
        )
    fields["smoke"] = _mapping(raw.get("smoke"), f"{name}: smoke")
    preset = Preset(name, str(raw.get("description", "")).strip(), **fields)
    if preset.smoke:
        preset.smoked()  # a broken smoke section is an error now, not when someone first runs it
    return preset


def load_preset(name_or_file: str) -> Preset:
    """A built-in preset by name, or a YAML file by path."""
    path = Path(name_or_file)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise TicketlabError(f"preset file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise TicketlabError(f"preset file {path} is not UTF-8 text; expected a YAML file") from None
        return parse_preset(path.stem, text)
    if name_or_file not in preset_names():
        raise TicketlabError(
            f"unknown preset {name_or_file!r}: expected one of {', '.join(preset_names())} or a FILE.yaml"
        )
    text = resources.files(__package__).joinpath(f"{name_or_file}.yaml").read_text()
    return parse_preset(name_or_file, text)
