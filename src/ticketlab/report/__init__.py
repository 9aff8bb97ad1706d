"""Figures and tables from results: reusable plots written atomically, headless."""

from ticketlab.report.plots import animate, histogram_grid, line_panels, save_figure

__all__ = ["animate", "histogram_grid", "line_panels", "save_figure"]
