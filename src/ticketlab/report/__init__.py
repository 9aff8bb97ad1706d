"""Drawing what studies found: the plot helpers (plots.py) and the lottery's table and plot."""
