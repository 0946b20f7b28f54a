"""Combining runs: the stacker, the log-linear pool, the member runs' features."""
