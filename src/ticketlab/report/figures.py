"""The report's figures, drawn from the runs' data (CSV and JSON) into PNG bytes.

Read at a glance: axes labelled with units, legends beside the axes (never over the data), a
reference line for the dense network where there is one, error bars where there are replicates.
"""

from __future__ import annotations

import io
import math
from collections.abc import Collection, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402 (the backend must be chosen first)
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

DPI = 100
Series = tuple[Sequence[float], Sequence[float], Sequence[float] | None]  # x, y, error (None: no bars)


def png(figure: Figure) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    buffer = io.BytesIO()
    try:
        figure.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    finally:
        plt.close(figure)
    return buffer.getvalue()


def _legend(ax: Axes) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)


def panels(panels: Mapping[str, Mapping[str, Series]], *, xlabel: str, title: str | None = None,
           references: Mapping[str, tuple[str, float]] | None = None, log_x: bool = False,
           reverse_x: bool = False, width: float = 5.2, dots: Collection[str] = ()) -> bytes:
    """Side-by-side panels, one per key (its y label), one line per series (x, y, error); a panel's
    reference (label, value) is a dashed horizontal line, e.g. the dense network's accuracy. With
    `log_x`, x is on a log scale ticked at the series' x values (pruning levels sit evenly apart).
    Series named in `dots` are small grey points (many noisy values, such as each candidate's score)."""
    figure, axes = plt.subplots(1, len(panels), figsize=(width * len(panels), 3.6), squeeze=False)
    for ax, (ylabel, series) in zip(axes[0], panels.items()):
        for label, (x, y, error) in series.items():
            if label in dots:
                ax.plot(x, y, linestyle="none", marker=".", markersize=2, color="0.6", label=label)
            elif error is None:
                ax.plot(x, y, marker="o" if len(x) < 30 else None, markersize=3, linewidth=1.2, label=label)
            else:
                ax.errorbar(x, y, yerr=error, marker="o", markersize=3, capsize=3, label=label)
        reference = (references or {}).get(ylabel)
        if reference is not None:
            ax.axhline(reference[1], color="black", linestyle="--", linewidth=1, label=reference[0])
        if log_x:
            ticks = sorted({float(v) for x, _, _ in series.values() for v in x if v > 0})
            ax.set_xscale("log")
            step = max(1, math.ceil(len(ticks) / 8))
            ax.set_xticks(ticks[::step], [f"{v:.3g}" for v in ticks[::step]])
            ax.minorticks_off()
        if reverse_x:
            ax.invert_xaxis()
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        _legend(ax)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.tight_layout()
    return png(figure)


def matrix(values: Sequence[Sequence[float]], labels: Sequence[str], *, colorbar: str, title: str | None = None,
           vmin: float | None = None, vmax: float | None = None, annotate: bool = True) -> bytes:
    """A labelled square matrix (mask similarities), each cell's value written in it when it fits."""
    data = np.asarray(values, dtype=float)
    size = max(4.0, 0.55 * len(labels) + 2.5)
    figure, ax = plt.subplots(figsize=(size + 1.2, size))
    image = ax.imshow(data, cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    if annotate and len(labels) <= 16:
        middle = np.nanmean(data) if data.size else 0
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if data[i, j] < middle else "black")
    figure.colorbar(image, ax=ax, label=colorbar, fraction=0.046, pad=0.04)
    if title:
        ax.set_title(title, fontsize=10)
    figure.tight_layout()
    return png(figure)


def grid(values: Sequence[Sequence[float]], ticks: Sequence[float], *, label: str, colorbar: str,
         contour: float | None = None, title: str | None = None) -> bytes:
    """A square matrix over numbered steps (early-bird mask distances between epochs); `contour`
    outlines where it crosses that level (the threshold)."""
    data = np.asarray(values, dtype=float)
    figure, ax = plt.subplots(figsize=(5.2, 4.4))
    image = ax.imshow(data, cmap="RdYlBu", interpolation="nearest")
    if contour is not None and data.size > 1 and data.min() < contour < data.max():
        ax.contour(data, levels=[contour], colors="red", linewidths=1)
    step = max(1, math.ceil(len(ticks) / 10))
    positions = np.arange(len(ticks))[::step]
    ax.set_xticks(positions, [f"{t:g}" for t in np.asarray(ticks)[::step]])
    ax.set_yticks(positions, [f"{t:g}" for t in np.asarray(ticks)[::step]])
    ax.set_xlabel(label)
    ax.set_ylabel(label)
    figure.colorbar(image, ax=ax, label=colorbar)
    if title:
        ax.set_title(title, fontsize=10)
    figure.tight_layout()
    return png(figure)


def bars(groups: Sequence[str], series: Mapping[str, Sequence[float]], *, ylabel: str,
         title: str | None = None) -> bytes:
    """Grouped bars: one group per layer, one bar per series (a mask's per-layer sparsity)."""
    figure, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(groups) * max(len(series), 1) / 3 + 3), 3.6))
    width = 0.8 / max(len(series), 1)
    for i, (label, values) in enumerate(series.items()):
        ax.bar(np.arange(len(groups)) + i * width - 0.4 + width / 2, values, width, label=label)
    ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    _legend(ax)
    if title:
        ax.set_title(title, fontsize=10)
    figure.tight_layout()
    return png(figure)


def histograms(series: Mapping[str, Mapping[str, Sequence[int]]], ranges: Mapping[str, Sequence[float]], *,
               xlabel: str, title: str | None = None, columns: int = 4) -> bytes:
    """One panel per layer, each series (label -> layer -> counts in equal bins over the layer's
    range) a step line on a log count axis, so a few survivors stay visible beside many."""
    layers = list(ranges)
    columns = min(columns, len(layers))
    rows = math.ceil(len(layers) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.4 * columns, 2.6 * rows), squeeze=False)
    for ax, layer in zip(axes.flat, layers):
        low, high = ranges[layer]
        for label, counts in series.items():
            if layer in counts:
                edges = np.linspace(low, high, len(counts[layer]) + 1)
                ax.stairs(np.maximum(counts[layer], 0.5), edges, baseline=0.5, label=label,
                          fill=len(series) == 1)  # an empty bin sits on the axis, not below it
        ax.set_yscale("log")
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("count", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(layers):]:
        ax.set_visible(False)
    if len(series) > 1:
        axes.flat[columns - 1].legend(*axes.flat[0].get_legend_handles_labels(), loc="upper left",
                                      bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return png(figure)


def animation(frames: Sequence[Sequence[bytes]], duration_ms: int = 800) -> bytes:
    """A looping GIF, one frame per item: the item's PNGs stacked top to bottom on white."""
    images = []
    for parts in frames:
        opened = [Image.open(io.BytesIO(part)).convert("RGB") for part in parts]
        canvas = Image.new("RGB", (max(p.width for p in opened), sum(p.height for p in opened)), "white")
        top = 0
        for part in opened:
            canvas.paste(part, (0, top))
            top += part.height
        images.append(canvas)
    size = (max(i.width for i in images), max(i.height for i in images))  # tight frames differ a little
    images = [image if image.size == size else _padded(image, size) for image in images]
    buffer = io.BytesIO()
    images[0].save(buffer, format="GIF", save_all=True, append_images=images[1:], duration=duration_ms, loop=0)
    return buffer.getvalue()


def _padded(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    canvas = Image.new("RGB", size, "white")
    canvas.paste(image, (0, 0))
    return canvas
