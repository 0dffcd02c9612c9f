"""On-demand features: values computed at request time from stored features and request data.

Each one is defined once, as a polars expression over feature columns (named as in the training
frame: feature names are unique across views) and request columns. `apply_on_demand` is the only
way either path evaluates them: the training path runs it over a whole `get_historical_features`
frame, the online path over the handful of rows of one request. Identical code on identical
inputs cannot drift, which is the point: a ratio computed one way in a notebook and another in
the server is the classic source of training/serving skew.

That guarantee needs the expression to be row-wise: the value of a row may depend on that row
only. An aggregation (`pl.col(x).mean()`) or a window (`.over()`, `.shift()`) would give a
different answer for a one-row request than for a training frame; `check_row_wise` catches that
and the test suite runs it over the whole catalog.

Request columns are values only the caller knows at prediction time (a scheduled departure
time). The training entity frame must carry the same column, with the same meaning, as its
prediction-time input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import polars as pl

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.features.references import UnknownFeatureError, parse_reference
from feature_pipelines.features.spec import DTYPES, FeatureDefinitionError, FeatureView

"""The view name under which the feature server accepts on-demand references ("on_demand:name")."""

_DTYPES = DTYPES  # the same declared dtype names as stored features


class OnDemandFeatureError(ValueError):
    """An on-demand definition or an input frame that cannot be evaluated without guessing."""


@dataclass(frozen=True, eq=False)  # eq=False: pl.Expr does not support == as a boolean
class OnDemandFeature:
    """A feature computed from stored features (`inputs`, as "view:feature") and request columns.

    `dtype` is one of "int64", "float64", "string", "bool", like a stored feature's. The result of
    `expression` is cast to it (strictly: a lossy cast is an error, not a silent null).
    `request_dtypes` declares the dtype of each request column; a Datetime entry only requires
    a timezone-aware datetime (any zone, any unit), because the expression converts it itself.
    """

    name: str
    dtype: str
    expression: pl.Expr
    inputs: tuple[str, ...]
    request_columns: tuple[str, ...] = ()
    description: str = ""
    request_dtypes: Mapping[str, pl.DataType] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise FeatureDefinitionError(
                f"on-demand feature {self.name!r}: dtype {self.dtype!r} is not one of {sorted(_DTYPES)}"
            )
        if not self.inputs and not self.request_columns:
            raise FeatureDefinitionError(
                f"on-demand feature {self.name!r} needs at least one input feature or request column"
            )
        for reference in self.inputs:
            try:
                parse_reference(reference)
            except UnknownFeatureError as error:
                raise FeatureDefinitionError(f"on-demand feature {self.name!r}: input {error}") from error
        if set(self.request_dtypes) != set(self.request_columns):
            raise FeatureDefinitionError(
                f"on-demand feature {self.name!r}: request_dtypes must declare exactly the request "
                f"columns {list(self.request_columns)}, got {sorted(self.request_dtypes)}"
            )

    @property
    def polars_dtype(self) -> pl.DataType:
        return _DTYPES[self.dtype]

    @property
    def input_features(self) -> tuple[str, ...]:
        """The input feature names: the columns the expression reads from the feature frame."""
        return tuple(parse_reference(reference).feature for reference in self.inputs)

    def input_views(self) -> tuple[str, ...]:
        """The views of the inputs, in first-appearance order (statuses are derived from them)."""
        return tuple(dict.fromkeys(parse_reference(reference).view for reference in self.inputs))


def validate_on_demand(
    features: Sequence[OnDemandFeature], views: Mapping[str, FeatureView]
) -> dict[str, OnDemandFeature]:
    """Index on-demand features by name and check them against the views, at load time.

    A name shared with a stored feature would make a training frame column ambiguous; an input
    the catalog does not declare would fail on the first request rather than at startup.
    """
    stored = {name for view in views.values() for name in view.feature_names}
    by_name: dict[str, OnDemandFeature] = {}
    for feature in features:
        if feature.name in by_name:
            raise FeatureDefinitionError(f"on-demand feature {feature.name!r} is declared twice")
        if feature.name in stored:
            raise FeatureDefinitionError(
                f"on-demand feature {feature.name!r} has the name of a stored feature"
            )
        for reference in feature.inputs:
            parsed = parse_reference(reference)
            view = views.get(parsed.view)
            if view is None or parsed.feature not in view.feature_names:
                raise FeatureDefinitionError(
                    f"on-demand feature {feature.name!r}: input {reference!r} is not declared by "
                    "the feature views"
                )
        by_name[feature.name] = feature
    return by_name


def required_references(features: Sequence[str], on_demand: Sequence[OnDemandFeature]) -> list[str]:
    """The stored references to read: the requested ones, then on-demand inputs not requested.

    Both paths read this same list, so an on-demand feature sees the same inputs whether or not
    the caller also asked for them.
    """
    out = list(features)
    seen = set(out)
    for feature in on_demand:
        for reference in feature.inputs:
            if reference not in seen:
                seen.add(reference)
                out.append(reference)
    return out


def _check_request_column(frame: pl.DataFrame, feature: OnDemandFeature, column: str) -> None:
    if column not in frame.columns:
        raise OnDemandFeatureError(
            f"on-demand feature {feature.name!r} needs request column {column!r}, which the "
            f"frame lacks (columns: {frame.columns})"
        )
    declared = feature.request_dtypes[column]
    actual = frame.schema[column]
    if isinstance(declared, pl.Datetime) or declared == pl.Datetime:
        if not isinstance(actual, pl.Datetime) or actual.time_zone is None:
            raise OnDemandFeatureError(
                f"on-demand feature {feature.name!r}: request column {column!r} must be a "
                f"timezone-aware datetime, got {actual}"
            )
    elif actual != declared and actual != pl.Null:
        raise OnDemandFeatureError(
            f"on-demand feature {feature.name!r}: request column {column!r} must be {declared}, got {actual}"
        )


def apply_on_demand(frame: pl.DataFrame, features: Sequence[OnDemandFeature]) -> pl.DataFrame:
    """Append each on-demand feature as a column of its declared dtype, after `frame`'s columns.

    `frame` must hold every input feature and request column; nothing else is read. All
    features are evaluated in one `with_columns` from the same inputs (an on-demand feature
    cannot read another one), so their order does not change any value.
    """
    if not features:
        return frame
    names = [feature.name for feature in features]
    if len(set(names)) != len(names):
        raise OnDemandFeatureError(f"on-demand features requested twice: {names}")
    present = set(frame.columns)
    clash = [name for name in names if name in present]
    if clash:
        raise OnDemandFeatureError(f"on-demand feature(s) {clash} collide with columns of the frame")
    for feature in features:
        missing = [name for name in feature.input_features if name not in present]
        if missing:
            raise OnDemandFeatureError(
                f"on-demand feature {feature.name!r} needs input feature(s) {missing}, which the "
                f"frame lacks; read them with required_references()"
            )
        for column in feature.request_columns:
            _check_request_column(frame, feature, column)
    try:
        return frame.with_columns(
            feature.expression.cast(feature.polars_dtype, strict=True).alias(feature.name)
            for feature in features
        )
    except pl.exceptions.PolarsError as error:
        raise OnDemandFeatureError(f"on-demand features {names} failed to evaluate: {error}") from error


def check_row_wise(feature: OnDemandFeature, frame: pl.DataFrame) -> None:
    """Raise unless evaluating `feature` row by row gives exactly what the whole frame gives.

    The serving path evaluates a request's few rows, the training path millions: an
    expression that looks across rows would silently differ between them.
    """
    whole = apply_on_demand(frame, [feature]).get_column(feature.name)
    for row in range(frame.height):
        single = apply_on_demand(frame.slice(row, 1), [feature]).get_column(feature.name)
        left = whole.slice(row, 1)
        if not left.equals(single, check_dtypes=True, null_equal=True):
            raise OnDemandFeatureError(
                f"on-demand feature {feature.name!r} is not row-wise: row {row} gives "
                f"{left.item()!r} over the whole frame but {single.item()!r} alone"
            )


# -- the catalog ---------------------------------------------------------------------------------


def safe_ratio(numerator: str, denominator: str) -> pl.Expr:
    """numerator / denominator, null whenever that is not a finite number.

    Policy: a null input, a zero (or -0.0) denominator, and any NaN or infinite result give
    null, never inf or NaN, so a model sees "unknown" rather than an extreme value that a
    near-empty window produced.
    """
    num, den = pl.col(numerator).cast(pl.Float64), pl.col(denominator).cast(pl.Float64)
    ratio = num / den
    return pl.when(den.is_not_null() & (den != 0.0) & ratio.is_finite()).then(ratio)


def delay_ratio_24h_7d(view: str, entity: str, description: str) -> OnDemandFeature:
    """`<entity>_dep_delay_ratio_24h_7d`: the view's 24h mean departure delay over its 7d mean."""
    short, long = f"{entity}_dep_delay_mean_24h", f"{entity}_dep_delay_mean_7d"
    return OnDemandFeature(
        name=f"{entity}_dep_delay_ratio_24h_7d",
        dtype="float64",
        expression=safe_ratio(short, long),
        inputs=(f"{view}:{short}", f"{view}:{long}"),
        description=description,
    )


route_dep_delay_ratio_24h_7d = delay_ratio_24h_7d(
    "route_delay_stats", "route",
    "Route mean departure delay over 24h relative to its 7d mean: > 1 means the route "
    "runs later than usual today. Null when either mean is null, the 7d mean is 0, or the ratio "
    "is not finite.",
)
"""How unusual today's delays on a route are; a ratio rather than a difference so that routes
with long and short typical delays share one scale."""

carrier_dep_delay_ratio_24h_7d = delay_ratio_24h_7d(
    "carrier_delay_stats", "carrier",
    "Airline mean departure delay over 24h relative to its 7d mean; same null policy "
    "as route_dep_delay_ratio_24h_7d.",
)
"""The same signal per airline: a carrier-wide disruption shows before a route has enough
flights to move its own ratio."""

scheduled_departure_hour_utc = OnDemandFeature(
    name="scheduled_departure_hour_utc",
    dtype="int64",
    expression=pl.col("scheduled_departure").dt.convert_time_zone("UTC").dt.hour().cast(pl.Int64),
    inputs=(),
    request_columns=("scheduled_departure",),
    request_dtypes={"scheduled_departure": pl.Datetime("us", "UTC")},
    description="Hour of day (0-23, UTC) of the flight's scheduled departure, given in the "
    "request; null when it is null.",
)
"""Delay builds up over the day; the hour is taken in UTC so that it never depends on the zone
in which a caller happened to write the timestamp."""


ON_DEMAND_FEATURES: dict[str, OnDemandFeature] = validate_on_demand(
    [route_dep_delay_ratio_24h_7d, carrier_dep_delay_ratio_24h_7d, scheduled_departure_hour_utc],
    FEATURE_VIEWS,
)
