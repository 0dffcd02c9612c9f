"""Training sets: labels with prediction times, declared feature lists, leakage audits (no Dagster)."""
