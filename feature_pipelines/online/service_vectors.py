"""A feature service's vector read online: the same columns, order, dtypes and transformed values as
its training frame (`training.frames.training_frame`, `get_historical_features(feature_service=...)`).

A service's stored references are read like any request, its on-demand features computed by the
same expressions, then the vector is cut to the service's columns in its declared order and its
fitted transformations applied by `apply_service_transforms`, the one function every path calls
with the statistics version the service pins. Nothing here computes a statistic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import polars as pl

from feature_pipelines.features.on_demand import OnDemandFeature
from feature_pipelines.features.services import FeatureService, apply_service_transforms
from feature_pipelines.features.transforms import FittedStatistics


@dataclass(frozen=True)
class ServiceRead:
    """What to read for a service: its stored references and its on-demand features."""

    stored: list[str]
    on_demand: list[OnDemandFeature]


def service_read(service: FeatureService, on_demand_catalog: Mapping[str, OnDemandFeature]) -> ServiceRead:
    """The references and on-demand features a read of `service` asks for."""
    return ServiceRead(list(service.stored_references), [on_demand_catalog[name] for name in service.on_demand_names])


def service_vector(
    frame: pl.DataFrame,
    service: FeatureService,
    statistics: FittedStatistics | None,
    *,
    leading: Sequence[str],
    trailing: Sequence[str] = (),
) -> pl.DataFrame:
    """`frame` (a read of `service_read(service)`) as the service's vector: the `leading` columns
    (entity keys, request columns), the service's columns in declared order with its fitted
    transformations applied, then the `trailing` ones (read metadata)."""
    chosen = frame.select([*leading, *service.column_names, *trailing])
    return apply_service_transforms(chosen, service, statistics)
