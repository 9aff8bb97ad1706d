"""Run names that earlier versions gave: run names are a user's data (their runs/ directories),
so a change that renames any run fails the tests that check against these. Never edit
pinned_run_names.json to make a change pass."""

import json
from pathlib import Path

# Every run each preset's smoke variant makes, by name.
PINNED_RUN_NAMES: dict[str, list[str]] = json.loads((Path(__file__).parent / "pinned_run_names.json").read_text())


def finished_runs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if (p / "summary.json").exists())
