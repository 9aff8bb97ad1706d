"""Progress on stderr: a bar on a terminal, a short line per quarter in a log; nothing with --quiet."""

from __future__ import annotations

import sys

from tqdm import tqdm

LOG_STEPS = 4  # lines per stage when stderr is a file or a pipe: at 25, 50, 75 and 100%


class Progress:
    def __init__(self, total: int, label: str, enabled: bool = True, initial: int = 0, unit: str = "it"):
        self._log = enabled and not sys.stderr.isatty()  # carriage returns would fill a log file
        self._bar = tqdm(total=total, initial=initial, desc=label, unit=unit, disable=not enabled or self._log,
                         leave=False, dynamic_ncols=True, mininterval=0.2, file=sys.stderr)
        self._label, self._unit, self._total, self._done = label, unit, total, initial
        self._logged = self._quarter(initial)
        self._values: dict[str, float] = {}

    def _quarter(self, done: int) -> int:
        return done * LOG_STEPS // max(self._total, 1)

    def update(self, n: int = 1) -> None:
        self._bar.update(n)
        if self._log:
            self._done += n
            if self._quarter(self._done) > self._logged:
                self._logged = self._quarter(self._done)
                values = "".join(f", {k} {v:.4g}" for k, v in self._values.items())
                print(f"{self._label}: {100 * self._done // max(self._total, 1)}% "
                      f"({self._done}/{self._total} {self._unit}{values})", file=sys.stderr, flush=True)

    def note(self, **values: float) -> None:
        self._values.update(values)
        self._bar.set_postfix({k: f"{v:.4g}" for k, v in values.items()}, refresh=False)

    def close(self) -> None:
        self._bar.close()
