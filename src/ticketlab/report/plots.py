"""Figures as files: line plots of metrics (with error bars too), histogram grids, and GIFs made of PNG frames.

Every figure is drawn with matplotlib's Agg backend (no display needed), written
atomically, and closed at once so long sweeps do not accumulate open figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path


import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from PIL import Image  # noqa: E402

from ticketlab.store import atomic_path  # noqa: E402

Values = Sequence[float] | np.ndarray


def save_figure(figure: Figure, path: Path, dpi: int = 100) -> None:
    """Write a figure as PNG atomically, then close it."""
    try:
        with atomic_path(path) as tmp:
            figure.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(figure)


def line_panels(path: Path, x: Values, panels: Mapping[str, Mapping[str, Values]], *,
                xlabel: str, title: str | None = None, categorical: bool = False) -> None:
    """Side-by-side panels of y against x, one per `panels` key (its y label), one line per series.

    With `categorical`, x values sit at equal spacing with their values as tick labels:
    the readable choice when they crowd together, as sparsities near 1 do.
    """
    positions = np.arange(len(x)) if categorical else np.asarray(x, dtype=float)
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (ylabel, series) in zip(axes[0], panels.items()):
        for label, y in series.items():
            ax.plot(positions, y, marker="o", markersize=3, label=label)
        if categorical:
            ax.set_xticks(positions, [f"{v:g}" for v in x], rotation=45)
        _label(ax, xlabel, ylabel)
    _finish(figure, path, title)


def _label(ax: Axes, xlabel: str, ylabel: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()


def _finish(figure: Figure, path: Path, title: str | None) -> None:
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    save_figure(figure, path)


def errorbar_panels(path: Path, panels: Mapping[str, Mapping[str, tuple[Values, Values, Values]]], *,
                    xlabel: str, title: str | None = None, log_x: bool = False, reverse_x: bool = False) -> None:
    """Side-by-side panels, one per `panels` key (its y label), one line per series (x, y, error):
    y ± error against x, each series with x values of its own.

    With `log_x`, x is on a log scale, ticked at the series' x values (geometric steps, such as
    pruning levels, then sit evenly apart); with `reverse_x`, x decreases from left to right.
    """
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (ylabel, series) in zip(axes[0], panels.items()):
        for label, (x, y, error) in series.items():
            ax.errorbar(x, y, yerr=error, marker="o", markersize=3, capsize=3, label=label)
        if log_x:
            ticks = sorted({float(v) for x, _, _ in series.values() for v in x})
            ax.set_xscale("log")
            ax.set_xticks(ticks, [f"{v:.3g}" for v in ticks], rotation=45)
            ax.minorticks_off()
        if reverse_x:
            ax.invert_xaxis()
        _label(ax, xlabel, ylabel)
    _finish(figure, path, title)


def histogram_grid(path: Path, panels: Mapping[str, Values], *, xlabel: str, bins: int = 50,
                   ranges: Mapping[str, tuple[float, float]] | None = None, title: str | None = None) -> None:
    """One histogram per panel in a grid; `ranges` fixes each panel's x range (and so its bins),
    which keeps frames of an animation comparable."""
    columns = min(math.ceil(math.sqrt(len(panels))), 4)
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4 * columns, 3 * rows), squeeze=False)
    for ax, (name, values) in zip(axes.flat, panels.items()):
        span = ranges.get(name) if ranges else None
        # One stairs artist draws far faster than ax.hist's one patch per bin.
        counts, edges = np.histogram(np.asarray(values, dtype=float), bins=bins, range=span)
        ax.stairs(counts, edges, fill=True)
        if span:
            ax.set_xlim(span)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_title(f"{name} ({len(values):,})", fontsize=9)
        ax.set_xlabel(xlabel)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    # Fixed margins (in inches, as fractions of this size): tight_layout would double the
    # drawing time, and a sweep draws two grids per k.
    width, height = figure.get_size_inches()
    figure.subplots_adjust(left=0.8 / width, right=1 - 0.2 / width, bottom=0.6 / height,
                           top=1 - (0.8 if title else 0.4) / height, wspace=0.35, hspace=0.6)
    save_figure(figure, path)


def animate(frames: Sequence[Path | Sequence[Path]], path: Path, duration_ms: int = 800) -> None:
    """A looping GIF with one frame per item; an item that lists several PNGs stacks them vertically."""
    images = [_stack([item] if isinstance(item, Path) else item) for item in frames]
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:],
                       duration=duration_ms, loop=0)


def _stack(paths: Sequence[Path]) -> Image.Image:
    parts = []
    for p in paths:
        with Image.open(p) as image:
            parts.append(image.convert("RGB"))
    canvas = Image.new("RGB", (max(p.width for p in parts), sum(p.height for p in parts)), "white")
    top = 0
    for part in parts:
        canvas.paste(part, (0, top))
        top += part.height
    return canvas


def twin_axis_lines(path: Path, x: Values, left: Mapping[str, Values], right: Mapping[str, Values], *,
                    xlabel: str, left_label: str, right_label: str, colors: Mapping[str, str] | None = None,
                    dots: Sequence[str] = (), title: str | None = None) -> None:
    """Series against x on two y axes, `left` and `right`, one line per series; series named in
    `dots` are small points instead (many noisy values), and `colors` fixes a series' colour."""
    figure, ax = plt.subplots(figsize=(9, 4))
    twin = ax.twinx()
    colors = colors or {}
    for axis, series in ((ax, left), (twin, right)):
        for label, y in series.items():
            style = (dict(linestyle="none", marker=".", markersize=2, alpha=0.5) if label in dots
                     else dict(linewidth=1.2))
            axis.plot(x, y, label=label, color=colors.get(label), **style)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(left_label)
    twin.set_ylabel(right_label)
    ax.grid(alpha=0.3)
    lines = ax.get_legend_handles_labels()
    twin_lines = twin.get_legend_handles_labels()
    ax.legend(lines[0] + twin_lines[0], lines[1] + twin_lines[1], loc="best", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    figure.tight_layout()
    save_figure(figure, path)


def heatmap(path: Path, matrix: Values, ticks: Values, *, label: str, colorbar: str,
            contour: float | None = None, title: str | None = None) -> None:
    """A square matrix as an image, row and column i labelled ticks[i]; `contour` outlines
    where the matrix crosses that level (e.g. the early-bird distance threshold)."""
    values = np.asarray(matrix, dtype=float)
    figure, ax = plt.subplots(figsize=(5.5, 4.5))
    # Reversed colours: small values (close masks) are warm, as in the early-bird paper.
    image = ax.imshow(values, cmap="RdYlBu", origin="upper", interpolation="nearest")
    if contour is not None and values.size > 1 and values.min() < contour < values.max():
        ax.contour(values, levels=[contour], colors="red", linewidths=1)
    positions = np.arange(len(ticks))
    step = max(1, math.ceil(len(ticks) / 10))
    ax.set_xticks(positions[::step], [f"{t:g}" for t in np.asarray(ticks)[::step]])
    ax.set_yticks(positions[::step], [f"{t:g}" for t in np.asarray(ticks)[::step]])
    ax.set_xlabel(label)
    ax.set_ylabel(label)
    figure.colorbar(image, ax=ax, label=colorbar)
    _finish(figure, path, title)
