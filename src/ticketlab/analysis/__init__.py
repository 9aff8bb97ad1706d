"""Analyses of trained and pruned networks: sparsity sweeps without retraining, validation-size effects."""
