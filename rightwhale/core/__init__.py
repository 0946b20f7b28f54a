"""Bottom layer: errors, atomic writes, locks, the configuration, run records and metrics. Imports nothing of rightwhale above it."""
