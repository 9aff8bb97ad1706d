"""Sparsity: masks, pruning criteria, selection of what to prune, and masked training."""
