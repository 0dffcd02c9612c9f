"""Pure polars computation of feature values: windowed snapshot aggregations. No I/O, no Dagster."""

from feature_pipelines.compute.snapshots import snapshot_features

__all__ = ["snapshot_features"]
