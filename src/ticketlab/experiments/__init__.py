"""Experiments: a preset read and compiled into a study (preset.py), its sections' builders
(sections/), the study engine and its executors (study.py, ray_executor.py), the plan and status
of a study (plan.py), and the experiments that span sections' stages (comparison.py,
structured.py)."""
