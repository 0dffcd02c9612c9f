"""Computation of feature values: windowed snapshot aggregations (polars and compiled window loops). No I/O, no Dagster."""

from feature_pipelines.compute.snapshots import snapshot_features

__all__ = ["snapshot_features"]
