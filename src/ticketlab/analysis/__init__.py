"""Analyses of trained and pruned networks: sparsity sweeps without retraining."""

from ticketlab.analysis.sweep import DEFAULT_KS, SweepResult, sweep, unit_mask, unit_norms, weight_mask

__all__ = ["DEFAULT_KS", "SweepResult", "sweep", "unit_mask", "unit_norms", "weight_mask"]
