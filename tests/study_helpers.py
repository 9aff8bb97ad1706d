"""What the study tests share: a small comparison preset, and the finished runs of a runs directory
in a form two identical studies agree on."""

import json

COMPARISON = """\
description: two masks at two sparsities on two seeds, for the study tests
data: {name: digits}
model: {name: lenet300_100}
train: {steps: 60it, batch_size: 32, save_at: 0it}
replicates: 2
compare:
  sparsities: [0.5, 0.8]
  methods:
    - {name: magnitude, prune: {criterion: magnitude}}
    - {name: random, prune: {criterion: random}}
"""


def finished(root):
    return {p.name: json.loads((p / "summary.json").read_text()) for p in root.iterdir()
            if (p / "summary.json").exists()}


def comparable(summary):
    """A summary without what differs between two identical runs: wall-clock time and thread placement."""
    drop = {"wall_time", "seconds", "evaluations_per_s"}
    if isinstance(summary, dict):
        return {k: comparable(v) for k, v in summary.items() if k not in drop}
    if isinstance(summary, list):
        return [comparable(v) for v in summary]
    return summary
