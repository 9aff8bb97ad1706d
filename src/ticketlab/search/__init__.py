"""Mask search: a space of units, an evaluator that scores masks, and searchers (annealing, baselines)."""
