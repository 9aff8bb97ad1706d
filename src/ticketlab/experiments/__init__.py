"""Experiments: presets run section by section (preset.py), and studies, which run a preset's
independent stages on several worker processes (study.py)."""
