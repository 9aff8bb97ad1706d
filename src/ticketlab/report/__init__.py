"""Reports that summarise many runs: the lottery table and plot."""
