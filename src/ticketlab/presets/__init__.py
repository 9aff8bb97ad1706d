"""Named experiments as data: one YAML file per preset in this folder.

A preset has a description, the dense training (`data`, `model`, `train`, `replicates`) and
optional sections, each read, checked and run by its builder in experiments/sections/
(`prune`, `lottery` with `controls` and `control_levels`, `sweep`, `compare`, and structured
pruning: `earlybird` draws tickets while the dense network trains, `shrink` lists structured
prunings that are physically shrunk and retrained). Two optional sections change it:
`fallback` gives the data (and training changes) to use when the preset's data set is not
available here; `smoke` gives overrides (tiny generated data, a few steps) that run the
same pipeline in seconds, for tests (`ticketlab run PRESET --smoke`). A user's own YAML
file in the same format runs the same way (experiments/preset.py reads both).
"""

from __future__ import annotations

from importlib import resources


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files(__package__).iterdir()
                  if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    """The YAML text of the built-in preset `name` (one of preset_names())."""
    return resources.files(__package__).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
