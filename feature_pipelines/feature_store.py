"""The user-facing facade: one object for training reads (Delta) and serving reads (Redis)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypedDict, Unpack

import polars as pl
import redis

from feature_pipelines.features.access import ConsumerPolicy, check_feature_access
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.on_demand import ON_DEMAND_FEATURES, OnDemandFeature
from feature_pipelines.features.references import UnknownFeatureError
from feature_pipelines.features.services import FEATURE_SERVICES, FeatureService
from feature_pipelines.features.spec import FeatureView, StreamingRead
from feature_pipelines.features.transforms import FittedStatistics
from feature_pipelines.names import EVENT_TIMESTAMP, online_key_prefix
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.offline.fitted_statistics import load_fitted_statistics
from feature_pipelines.offline.historical import AsOf, HistoricalFeatures, get_historical_features
from feature_pipelines.online.retrieval import get_online_features, metadata_columns
from feature_pipelines.online.service_vectors import service_read, service_vector
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.settings import load_settings
from feature_pipelines.timeutil import utc_now


class HistoricalOptions(TypedDict, total=False):
    """How a training frame is read: at which table versions, stamped by which column, whether
    partitions whose blocking checks failed may be read, and by which feature service (with which
    fitted statistics version, or untransformed), and whether streaming views are computed at each
    row's instant (the default) or joined from their snapshots."""

    as_of: AsOf
    timestamp_column: str
    allow_failed_checks: bool
    feature_service: str | FeatureService | None
    statistics_version: int | None
    untransformed: bool
    streaming_views: StreamingRead


@dataclass
class FeatureStore:
    """`get_historical_features` for training (point-in-time, pinned versions, quality-gated) and
    `get_online_features` for serving (Redis), returning the same columns and dtypes."""

    lake: DeltaStore
    views: Mapping[str, FeatureView] = field(default_factory=lambda: dict(FEATURE_VIEWS))
    services: Mapping[str, FeatureService] = field(default_factory=lambda: dict(FEATURE_SERVICES))
    redis_client: redis.Redis | None = None
    key_prefix: str = "fp:local"
    consumer: ConsumerPolicy | None = None  # a consumer's policy (PII, views), applied to both paths
    # Fitted statistics by (service, service version, pinned version), read from the lake once.
    _statistics: dict[tuple[str, str, int | None], FittedStatistics | None] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def from_environment(cls, *, redis_client: redis.Redis | None = None) -> FeatureStore:
        """The lake of FEATURE_PIPELINES_LAKE_ROOT and the environment's key prefix."""
        from feature_pipelines.orchestration.resources_by_env import lake_for  # the one place for paths and options

        settings = load_settings()
        return cls(lake=lake_for(settings).store(), redis_client=redis_client, key_prefix=online_key_prefix(settings.environment))

    def get_historical_features(
        self, entity_df: pl.DataFrame | pl.LazyFrame, features: Sequence[str] = (), **options: Unpack[HistoricalOptions]
    ) -> pl.DataFrame:
        """The training frame alone; see `get_historical_features_with_versions`."""
        return self.get_historical_features_with_versions(entity_df, features, **options).frame

    def get_historical_features_with_versions(
        self,
        entity_df: pl.DataFrame | pl.LazyFrame,
        features: Sequence[str] = (),
        *,
        as_of: AsOf = None,
        timestamp_column: str = EVENT_TIMESTAMP,
        allow_failed_checks: bool = False,
        feature_service: str | FeatureService | None = None,
        statistics_version: int | None = None,
        untransformed: bool = False,
        streaming_views: StreamingRead = "at_instant",
    ) -> HistoricalFeatures:
        """The frame and the Delta version of every table read (pass them back as `as_of`).

        `feature_service` (a name in `services`, or a service) instead of `features` builds exactly
        the service's vector with its pinned fitted statistics applied (or `statistics_version`;
        `untransformed=True` for the raw vector); the result names the service, its version and
        the statistics version applied.

        A streaming view's values are computed at each row's own timestamp from its raw events,
        what the stream serves at that instant (`streaming_views="snapshots"` joins its snapshots).
        """
        return get_historical_features(
            self.lake, self.views, entity_df, features, timestamp_column=timestamp_column, as_of=as_of,
            ledger=QualityLedger(self.lake), allow_failed_checks=allow_failed_checks, consumer=self.consumer,
            feature_service=self.service(feature_service) if feature_service is not None else None,
            statistics_version=statistics_version, untransformed=untransformed, streaming_views=streaming_views,
        )

    def service(self, service: str | FeatureService) -> FeatureService:
        """A feature service of this store's catalog, by name (a service passed whole is returned as is)."""
        if isinstance(service, FeatureService):
            return service
        found = self.services.get(service)
        if found is None:
            raise UnknownFeatureError(f"unknown feature service {service!r}; known: {sorted(self.services)}")
        return found

    def get_online_features(
        self,
        entity_rows: pl.DataFrame,
        features: Sequence[str] = (),
        *,
        now: datetime | None = None,
        include_metadata: bool = False,
        on_demand: Sequence[OnDemandFeature] = (),
        feature_service: str | FeatureService | None = None,
    ) -> pl.DataFrame:
        """Values past their TTL at `now` come back null, as they would offline.

        `feature_service` instead of `features` and `on_demand` reads the service's vector: the
        entity rows' columns, then exactly the service's columns in its order, with the dtypes and
        the fitted transformations (its pinned statistics version, read from the lake once per
        store) of its training frame.
        """
        if self.redis_client is None:
            raise ValueError("this FeatureStore has no Redis client: pass redis_client= to read online features")
        if feature_service is None:
            check_feature_access(features, self.views, self.consumer)
            return get_online_features(
                self.redis_client, prefix=self.key_prefix, views=self.views, entity_rows=entity_rows,
                features=features, now=now or utc_now(), include_metadata=include_metadata, on_demand=on_demand,
            )
        if features or on_demand:
            raise ValueError("pass either features (and on_demand) or feature_service, not both")
        service = self.service(feature_service)
        read = service_read(service, ON_DEMAND_FEATURES)
        check_feature_access(read.stored, self.views, self.consumer)
        frame = get_online_features(
            self.redis_client, prefix=self.key_prefix, views=self.views, entity_rows=entity_rows,
            features=read.stored, now=now or utc_now(), include_metadata=include_metadata, on_demand=read.on_demand,
        )
        read_views = {name for view in self.views for name in metadata_columns(view)}
        trailing = [column for column in frame.columns if column in read_views]
        return service_vector(frame, service, self.statistics(service), leading=entity_rows.columns, trailing=trailing)

    def statistics(self, service: FeatureService) -> FittedStatistics | None:
        """The fitted statistics `service` pins, read from the lake once per store (None if it needs none)."""
        if not service.needs_statistics:
            return None
        key = (service.name, service.version, service.statistics_version)
        if key not in self._statistics:
            self._statistics[key] = load_fitted_statistics(self.lake, service)
        return self._statistics[key]
