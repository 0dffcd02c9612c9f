"""Monitoring: per-feature drift statistics, multivariate drift and the report plots (pure, no Dagster)."""
