"""feature_pipelines: features defined once, computed with polars, stored in Delta Lake, gated by
Great Expectations, served from Redis, orchestrated by Dagster."""

from feature_pipelines.offline.point_in_time import PointInTimeJoinError, point_in_time_join

__all__ = ["FeatureStore", "PointInTimeJoinError", "point_in_time_join"]


def __getattr__(name: str) -> object:
    # FeatureStore pulls in Redis and the catalog; import it only when asked for.
    if name == "FeatureStore":
        from feature_pipelines.feature_store import FeatureStore

        return FeatureStore
    raise AttributeError(name)
