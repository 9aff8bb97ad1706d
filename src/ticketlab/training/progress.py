"""A progress bar on stderr that costs nothing when turned off (--quiet)."""

from __future__ import annotations

import sys

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, label: str, enabled: bool = True, initial: int = 0, unit: str = "it"):
        self._bar = tqdm(total=total, initial=initial, desc=label, unit=unit, disable=not enabled,
                         leave=False, dynamic_ncols=True, mininterval=0.2, file=sys.stderr)

    def update(self, n: int = 1) -> None:
        self._bar.update(n)

    def note(self, **values: float) -> None:
        self._bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)

    def close(self) -> None:
        self._bar.close()
