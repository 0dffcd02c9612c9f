"""The fitted statistics of the server's feature services, loaded once at startup.

A service that pins statistics is served only with exactly that version (`load_fitted_statistics`);
when it cannot be loaded (never fitted, fitted for another service version) the service answers
503 naming the reason and what to run, and `GET /feature-services` shows it as not ready. No
serving path computes a statistic: without the fitted version there is no answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from feature_pipelines.features.services import FeatureService
from feature_pipelines.features.transforms import FittedStatistics
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.offline.fitted_statistics import StatisticsNotFoundError, load_fitted_statistics
from feature_pipelines.serving.errors import ServiceUnavailableError

NOT_LOADED = "its fitted statistics were not loaded (the server was started without the lake)"


@dataclass(frozen=True)
class ServiceStatistics:
    """Per service: its fitted statistics (None when it needs none), or why they are missing."""

    loaded: Mapping[str, FittedStatistics | None] = field(default_factory=dict)
    missing: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, store: DeltaStore, services: Mapping[str, FeatureService]) -> ServiceStatistics:
        loaded: dict[str, FittedStatistics | None] = {}
        missing: dict[str, str] = {}
        for name, service in services.items():
            if not service.needs_statistics:
                loaded[name] = None
                continue
            try:
                loaded[name] = load_fitted_statistics(store, service)
            except StatisticsNotFoundError as error:
                missing[name] = f"{error}; fit them with `feature-pipelines backfill` or by materializing {name}_statistics"
        return cls(loaded, missing)

    @classmethod
    def without_lake(cls, services: Mapping[str, FeatureService]) -> ServiceStatistics:
        """No lake to read: services needing statistics are not ready."""
        return cls({name: None for name, s in services.items() if not s.needs_statistics},
                   {name: NOT_LOADED for name, s in services.items() if s.needs_statistics})

    def for_service(self, service: FeatureService) -> FittedStatistics | None:
        """The statistics to apply, or a 503 saying why the service cannot be served."""
        if service.name in self.loaded:
            return self.loaded[service.name]
        reason = self.missing.get(service.name, NOT_LOADED)
        raise ServiceUnavailableError(f"feature service {service.name!r} (version {service.version}) is not served: {reason}")
