"""Offline store: Delta Lake tables and the point-in-time join."""

from feature_pipelines.offline.point_in_time import PointInTimeJoinError, point_in_time_join

__all__ = ["PointInTimeJoinError", "point_in_time_join"]
