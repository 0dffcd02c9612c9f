"""Typed specs for entities, features and feature views, validated when the catalog loads."""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Literal

import polars as pl

from feature_pipelines.features.windows import WindowParseError, parse_window, window_token

_SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
LATEST_TOKEN = "latest"


class FeatureDefinitionError(ValueError):
    """A feature view or feature that breaks the definition rules; raised at catalog load time."""


class Partitioning(str, enum.Enum):
    """A time grain: of a view's Dagster partitions (how much one run computes and records) or of
    its snapshots (how often a value is stamped)."""

    HOURLY = "hourly"
    DAILY = "daily"

    @property
    def interval(self) -> timedelta:
        return timedelta(hours=1) if self is Partitioning.HOURLY else timedelta(days=1)


class Lifecycle(str, enum.Enum):
    EXPERIMENTAL = "experimental"
    PRODUCTION = "production"
    DEPRECATED = "deprecated"


StreamingRead = Literal["at_instant", "snapshots"]
"""How a streaming view is read, online and offline alike. "at_instant": its windows computed at
the read's own instant (online from the stream's tiles, offline from its raw events: the same
values, see `streaming.online`); "snapshots": its published snapshots, like any view's (what a
snapshot publish and its parity check read)."""


class Aggregation(str, enum.Enum):
    """How a feature reduces the events of its window to one value per entity."""

    COUNT = "count"  # number of events in the window (0 is a real value, never null)
    MEAN = "mean"
    SUM = "sum"
    MIN = "min"
    MAX = "max"
    P90 = "p90"  # 90th percentile, linear interpolation
    RATE = "rate"  # mean of a boolean column: the share of events where it is true
    LATEST = "latest"  # the value of the latest event before the snapshot (window bounds staleness)


class NullPolicy(str, enum.Enum):
    """What a null input value means for the aggregation; applied identically offline and online.

    SKIP: nulls are left out of the aggregate (a window with only nulls gives null).
    PROPAGATE: any null input in the window makes the aggregate null.
    KEEP: for LATEST: the latest event's value is taken as it is, null included.
    """

    SKIP = "skip"
    PROPAGATE = "propagate"
    KEEP = "keep"


DTYPES: dict[str, pl.DataType] = {
    "int64": pl.Int64(),
    "float64": pl.Float64(),
    "string": pl.String(),
    "bool": pl.Boolean(),
}


@dataclass(frozen=True)
class Entity:
    """What features describe, and the columns that identify one (the join keys)."""

    name: str
    join_keys: tuple[str, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if not _SNAKE.match(self.name):
            raise FeatureDefinitionError(f"entity name {self.name!r} must be snake_case")
        if not self.join_keys:
            raise FeatureDefinitionError(f"entity {self.name!r} needs at least one join key")


@dataclass(frozen=True)
class SourceSpec:
    """The raw asset a view aggregates, and when each of its events became known.

    `known_at_column` is the instant the event's values became known (a departure's delay is known
    when it departs, not when it was scheduled). `max_lateness` bounds how long after its raw
    partition an event can become known; the view reads that much more upstream history.
    """

    asset: str
    known_at_column: str
    max_lateness: timedelta = timedelta(0)
    required_columns: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeatureMonitoring:
    """How far serving may stray from training before the monitors raise an alarm.

    Skew (served vs the offline point-in-time reconstruction of the same entity and instant):
    a logged value counts as a mismatch when it differs from the offline value by more than
    `abs_tolerance` (nulls equal only nulls); the blocking skew check fails when the share of
    mismatches for the feature exceeds `skew_tolerance`.

    Drift (a reference distribution, e.g. the training set, vs a current one, e.g. a day of
    serving): Population Stability Index warns at `psi_warn` and fails at `psi_fail` (the usual
    0.1 / 0.25); the Kolmogorov-Smirnov statistic (numeric features) at `ks_warn` / `ks_fail`;
    the Jensen-Shannon divergence (categorical features, base 2, in [0, 1]) at `jsd_warn` /
    `jsd_fail`. `stationary` says the feature's distribution is stable from one day to the next
    in normal operation; only stationary features are compared partition to partition and fed
    to the joint (classifier) drift test. Delays and weather follow the weather: on the 2013 data
    their day-to-day PSI has a median of 0.2-2, so for them a partition-to-partition alarm would
    fire every week and a classifier would tell any two days apart (scripts/calibrate_drift.py).
    """

    skew_tolerance: float = 0.0
    abs_tolerance: float = 1e-9
    psi_warn: float = 0.1
    psi_fail: float = 0.25
    ks_warn: float = 0.1
    ks_fail: float = 0.2
    jsd_warn: float = 0.05
    jsd_fail: float = 0.1
    stationary: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.skew_tolerance <= 1.0:
            raise FeatureDefinitionError(f"skew_tolerance must be in [0, 1], got {self.skew_tolerance}")
        if self.abs_tolerance < 0:
            raise FeatureDefinitionError(f"abs_tolerance must be >= 0, got {self.abs_tolerance}")
        for metric in ("psi", "ks", "jsd"):
            warn, fail = getattr(self, f"{metric}_warn"), getattr(self, f"{metric}_fail")
            if not 0 < warn <= fail:
                raise FeatureDefinitionError(f"{metric} thresholds need 0 < warn <= fail, got {warn} / {fail}")


DEFAULT_MONITORING = FeatureMonitoring()


@dataclass(frozen=True)
class Feature:
    """One feature: a named aggregation of a source column over a trailing window.

    `pii` marks a feature that identifies or describes a person; consumers configured to exclude
    PII never receive it. `monitoring` holds its skew and drift thresholds.
    """

    name: str
    dtype: str
    aggregation: Aggregation
    window: str
    source_column: str | None = None
    null_policy: NullPolicy = NullPolicy.SKIP
    description: str = ""
    min_value: float | None = None
    max_value: float | None = None
    max_null_fraction: float = 0.0
    pii: bool = False
    monitoring: FeatureMonitoring = DEFAULT_MONITORING

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise FeatureDefinitionError(
                f"feature {self.name!r}: dtype {self.dtype!r} is not one of {sorted(DTYPES)}"
            )
        if self.aggregation is not Aggregation.COUNT and self.source_column is None:
            raise FeatureDefinitionError(
                f"feature {self.name!r}: aggregation {self.aggregation.value} needs a source_column"
            )
        if (self.null_policy is NullPolicy.KEEP) != (self.aggregation is Aggregation.LATEST):
            raise FeatureDefinitionError(
                f"feature {self.name!r}: null policy 'keep' is for LATEST features only, and "
                "LATEST features must use it"
            )
        try:
            parse_window(self.window)
        except WindowParseError as error:
            raise FeatureDefinitionError(f"feature {self.name!r}: {error}") from error

    @property
    def window_timedelta(self) -> timedelta:
        return parse_window(self.window)

    @property
    def polars_dtype(self) -> pl.DataType:
        return DTYPES[self.dtype]

    def name_suffix(self) -> str:
        """The token the name must end with: the canonical window, or 'latest' for LATEST."""
        if self.aggregation is Aggregation.LATEST:
            return LATEST_TOKEN
        return window_token(self.window_timedelta)


@dataclass(frozen=True)
class FreshnessSLA:
    """How stale a view may get before Dagster warns and then fails its freshness state."""

    warn_after: timedelta
    fail_after: timedelta

    def __post_init__(self) -> None:
        if not timedelta(0) < self.warn_after <= self.fail_after:
            raise FeatureDefinitionError(
                f"freshness SLA needs 0 < warn_after <= fail_after, got {self.warn_after} / "
                f"{self.fail_after}"
            )


# What a stream can keep per entity and tile and merge exactly (streaming/tiles.py): counts, sums (integers exactly; floats as exact fixed-point integers), extremes,
# true counts and the latest event. A quantile has no such partial aggregate: the p90 of a window
# depends on the rank of every value in it, so only the window's whole multiset of values (or an
# approximate sketch) could give it, and neither is a bounded, exact tile.
STREAMABLE_AGGREGATIONS = frozenset(
    {Aggregation.COUNT, Aggregation.SUM, Aggregation.MEAN, Aggregation.MIN, Aggregation.MAX, Aggregation.RATE,
     Aggregation.LATEST}
)  # fmt: skip


@dataclass(frozen=True)
class StreamingSpec:
    """A view's opt-in to streaming: its values are served fresh to the second from raw events.

    `freshness_seconds` is the SLA from an event's push to the moment its value can be served.
    `max_lateness` bounds how far behind the stream's watermark (the latest known-at instant the
    consumer has seen for the source) an event may arrive and still be counted; a later one goes
    to the dead-letter stream. It is not the source's `max_lateness`, which bounds how long after
    its raw partition an event becomes known (0 for a table partitioned by known-at), while a
    stream delivers events out of order. `tile` is the bucket of the online partial aggregates:
    it divides the cadence and every window, so a read at a snapshot instant merges whole tiles.

    A streaming view's float sums (SUM and MEAN of a Float64 column) are the exact sum of the
    window's values rounded once, in the batch snapshots, the at-instant offline path and the
    stream alike: that sum merges exactly from tiles, where the left-to-right sum of sorted
    values that other views use does not. On integer columns the two are the same value.
    """

    freshness_seconds: float
    max_lateness: timedelta
    tile: timedelta = timedelta(hours=1)
    retention_margin: timedelta = timedelta(hours=1)

    def __post_init__(self) -> None:
        if not self.freshness_seconds > 0:
            raise FeatureDefinitionError(f"streaming freshness_seconds must be > 0, got {self.freshness_seconds}")
        if self.max_lateness < timedelta(0):
            raise FeatureDefinitionError(f"streaming max_lateness must be >= 0, got {self.max_lateness}")
        if self.tile <= timedelta(0) or self.tile % timedelta(seconds=1):
            raise FeatureDefinitionError(f"streaming tile must be a positive whole number of seconds, got {self.tile}")
        if self.retention_margin < timedelta(0):
            raise FeatureDefinitionError(f"streaming retention_margin must be >= 0, got {self.retention_margin}")

    def retention(self, longest_window: timedelta) -> timedelta:
        """How long a tile (and its kept events) lives in Redis after its last write: the longest
        window + one tile + `max_lateness` + `retention_margin`.

        The consumer sets it as a PEXPIRE on every write, so a live stream's memory is bounded by
        this horizon of tiles per entity. Expiry runs on Redis's wall clock from the last write,
        which is right for a live stream, where an event's known-at instant is close to the wall
        clock: a tile's last write comes after its start, so it outlives the last read that needs it
        (at its end + the longest window), with `max_lateness` for the late events that still write
        it and the margin for clock skew between producers and Redis and for reads of the recent
        past (the parity check after a replay). An accelerated replay (event time running faster
        than the wall clock) only keeps its tiles longer than its reads need: every tile still lives
        this long after it was written, which covers the replay and the checks run right after it;
        its memory is given back one retention after the replay ends. (A replay slower than real time
        could see its oldest tiles expire before a read of them: replay at least at real speed.)
        """
        return longest_window + self.tile + self.max_lateness + self.retention_margin


@dataclass(frozen=True)
class FeatureView:
    """A table of features for one entity, computed as snapshots at the end of every cadence step.

    A row (entity, event_timestamp=t) holds the aggregates over the half-open window
    [t - window, t) of the events known before t. A row is valid for `ttl` after t: past that a
    reader (training set or online store) treats the entity as having no value.

    `partitioning` is the Dagster partition grain (one partition = one unit of backfill and one
    materialization event); `snapshot_every` is the cadence of snapshots inside it (default: one
    snapshot at the partition's end). A daily partition with hourly snapshots keeps a full-year
    backfill to 365 materializations per view while values stay hourly fresh.
    """

    name: str
    entity: Entity
    source: SourceSpec
    partitioning: Partitioning
    features: tuple[Feature, ...]
    ttl: timedelta
    owner: str
    description: str
    freshness: FreshnessSLA
    lifecycle: Lifecycle = Lifecycle.EXPERIMENTAL
    tags: Mapping[str, str] = field(default_factory=dict)
    snapshot_every: Partitioning | None = None
    streaming: StreamingSpec | None = None

    def __post_init__(self) -> None:
        if not _SNAKE.match(self.name):
            raise FeatureDefinitionError(f"feature view name {self.name!r} must be snake_case")
        if not self.features:
            raise FeatureDefinitionError(f"feature view {self.name!r} declares no features")
        seen: set[str] = set()
        for feature in self.features:
            self._check_feature(feature)
            if feature.name in seen:
                raise FeatureDefinitionError(
                    f"feature view {self.name!r}: feature {feature.name!r} is declared twice"
                )
            seen.add(feature.name)
        if self.partitioning.interval % self.cadence.interval != timedelta(0):
            raise FeatureDefinitionError(
                f"feature view {self.name!r}: snapshots every {self.cadence.value} do not tile "
                f"{self.partitioning.value} partitions"
            )
        if self.ttl < self.cadence.interval:
            raise FeatureDefinitionError(
                f"feature view {self.name!r}: ttl {self.ttl} is shorter than its snapshot "
                f"interval {self.cadence.interval}, so values would expire between snapshots"
            )
        if self.streaming is not None:
            self._check_streaming(self.streaming)

    def _check_streaming(self, streaming: StreamingSpec) -> None:
        for feature in self.features:
            if feature.aggregation not in STREAMABLE_AGGREGATIONS:
                raise FeatureDefinitionError(
                    f"feature view {self.name!r}: feature {feature.name!r} ({feature.aggregation.value}) cannot be "
                    "streamed: a quantile has no exact mergeable partial aggregate (the p90 of a window depends "
                    "on the rank of every value in it, so per-tile counts, sums and extremes cannot give it, and "
                    "a sketch is approximate); streamable aggregations are "
                    f"{sorted(a.value for a in STREAMABLE_AGGREGATIONS)}. Move the feature to a batch view or "
                    "leave this view batch-only."
                )
            if feature.window_timedelta % streaming.tile != timedelta(0):
                raise FeatureDefinitionError(
                    f"feature view {self.name!r}: feature {feature.name!r} window {feature.window!r} is not a whole "
                    f"number of streaming tiles of {streaming.tile}"
                )
        if self.cadence.interval % streaming.tile != timedelta(0):
            raise FeatureDefinitionError(
                f"feature view {self.name!r}: streaming tile {streaming.tile} does not divide the "
                f"{self.cadence.value} snapshot interval, so snapshot instants would fall inside tiles"
            )

    def _check_feature(self, feature: Feature) -> None:
        prefix = f"{self.entity.name}_"
        suffix = f"_{feature.name_suffix()}"
        middle = feature.name[len(prefix) : len(feature.name) - len(suffix)]
        if (
            not _SNAKE.match(feature.name)
            or not feature.name.startswith(prefix)
            or not feature.name.endswith(suffix)
            or not _SNAKE.match(middle or "-")
        ):
            raise FeatureDefinitionError(
                f"feature view {self.name!r}: feature name {feature.name!r} breaks the "
                f"entity_metric_window convention: expected '{prefix}<metric>{suffix}' "
                f"(snake_case; entity {self.entity.name!r}, window {feature.window!r})"
            )
        interval = self.cadence.interval
        if feature.window_timedelta % interval != timedelta(0):
            raise FeatureDefinitionError(
                f"feature view {self.name!r}: feature {feature.name!r} window {feature.window!r} "
                f"is not a whole number of {self.cadence.value} snapshot steps"
            )
        if feature.name in self.entity.join_keys:
            raise FeatureDefinitionError(
                f"feature view {self.name!r}: feature {feature.name!r} shadows a join key"
            )

    @property
    def cadence(self) -> Partitioning:
        """The snapshot grain: `snapshot_every`, or one snapshot per partition."""
        return self.snapshot_every or self.partitioning

    @property
    def exact_float_sums(self) -> bool:
        """Whether Float64 sums are exact sums rounded once (streaming views; see StreamingSpec)."""
        return self.streaming is not None

    @property
    def entity_keys(self) -> tuple[str, ...]:
        return self.entity.join_keys

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(feature.name for feature in self.features)

    @property
    def max_window(self) -> timedelta:
        return max(feature.window_timedelta for feature in self.features)

    def feature(self, name: str) -> Feature:
        for feature in self.features:
            if feature.name == name:
                return feature
        raise KeyError(f"feature view {self.name!r} has no feature {name!r}")

    def schema(self) -> dict[str, pl.DataType]:
        """The feature columns and their declared polars dtypes, in declaration order."""
        return {feature.name: feature.polars_dtype for feature in self.features}
