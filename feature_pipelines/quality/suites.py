"""Great Expectations suites derived from feature views, and the GX runner the quality layer shares.

One ephemeral GX context per process; one suite per view, built from its declaration and cached by
view name. A partition costs one verdicts-only GX call when it passes, plus one complete call (to
name the offending rows) when it fails. A GX call costs about 0.1-0.3 s whatever the frame's size
(bookkeeping per expectation, not data work), so a backfill range is validated in one complete
call (`validate_feature_partitions`) and its findings split per partition.
"""

from __future__ import annotations

import functools
import statistics
import threading
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone

import great_expectations as gx
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
from great_expectations.core import ExpectationSuiteValidationResult
from great_expectations.core.batch_definition import BatchDefinition
from great_expectations.data_context.types.base import (
    DataContextConfig,
    InMemoryStoreBackendDefaults,
    ProgressBarsConfig,
)

from feature_pipelines.features.spec import FeatureView
from feature_pipelines.names import CREATED_TIMESTAMP, EVENT_TIMESTAMP
from feature_pipelines.quality.actions import RuleAction, drop, fail
from feature_pipelines.quality.gx_adapter import CUSTOM_EXPECTATIONS, OUTCOME_META_KEY, gx_findings
from feature_pipelines.quality.outcome import CheckOutcome, Finding, outcome
from feature_pipelines.timeutil import PartitionWindow

KEY_DTYPE = pl.String()  # entity keys are not typed in the spec; every join key here is a code
TIMESTAMP_DTYPE = pl.Datetime("us", "UTC")
SCHEMA, NULLS, RANGES, UNIQUE, VOLUME = (
    "schema_matches_declaration",
    "feature_nulls_within_limits",
    "feature_values_in_range",
    "entity_keys_unique_per_timestamp",
    "row_volume_within_tolerance",
)
# Each feature-table rule with its action (see quality.actions) and why.
FEATURE_RULES: dict[str, RuleAction] = {
    SCHEMA: fail("a table that does not have its declared columns and dtypes cannot be read by training or serving"),
    NULLS: fail("a feature's null share is judged over the partition: past its declared limit the partition as a whole is suspect"),
    RANGES: drop("a value outside its declared range is one bad snapshot of one entity; training and serving both fall back "
                 "to that entity's previous snapshot within the TTL, so they stay equal"),
    UNIQUE: fail("two rows for one entity and instant mean the computation itself is wrong"),
    VOLUME: fail("an empty partition whose source had events in its windows means rows were lost; relative volume is "
                 "judged at the raw tables, against the source's own history"),
    CUSTOM_EXPECTATIONS: fail("a view's own expectation guards what its declaration cannot say"),
}
FEATURE_CHECKS = (SCHEMA, NULLS, RANGES, UNIQUE, VOLUME)
UPSTREAM = "upstream_partitions_ready"
FEATURE_RULES[UPSTREAM] = fail("a partition whose windows read a raw partition that was never written, or was held back, "
                               "would compute features from partial history; it is refused by name, and only it")

E = gx.expectations
# Expectations a view adds on top of those derived from its declaration, by view name.
EXTRA_EXPECTATIONS: dict[str, list[E.Expectation]] = {}
_SUITES: dict[str, gx.ExpectationSuite] = {}
_GX_LOCK = threading.Lock()  # the GX context is not documented as thread-safe
_PANDAS_TYPES = {
    pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype(),
    pa.uint8(): pd.UInt8Dtype(), pa.uint16(): pd.UInt16Dtype(), pa.uint32(): pd.UInt32Dtype(),
    pa.uint64(): pd.UInt64Dtype(), pa.bool_(): pd.BooleanDtype(),
}
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def view_rules(view: FeatureView) -> dict[str, RuleAction]:
    """The view's checks with their actions, in the order the gate reports them."""
    names = [*FEATURE_CHECKS, *([CUSTOM_EXPECTATIONS] if EXTRA_EXPECTATIONS.get(view.name) else []), UPSTREAM]
    return {name: FEATURE_RULES[name] for name in names}


def register_expectation(view_name: str, expectation: E.Expectation) -> None:
    """Add `expectation` to the view's suite; its results form the `custom_expectations` check."""
    EXTRA_EXPECTATIONS.setdefault(view_name, []).append(expectation)
    _SUITES.pop(view_name, None)


@functools.cache
def _batch_definition() -> BatchDefinition:
    config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        analytics_enabled=False,
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=config)
    asset = context.data_sources.add_pandas("quality").add_dataframe_asset("frame")
    return asset.add_batch_definition_whole_dataframe("whole_frame")


def to_pandas(frame: pl.DataFrame) -> pd.DataFrame:
    """The frame as pandas with a RangeIndex; integers and booleans stay nullable (Int64,
    boolean) instead of turning into float/object when they hold nulls; instants stay UTC."""
    return frame.to_pandas(types_mapper=_PANDAS_TYPES.get)


def run_suite(
    suite: gx.ExpectationSuite,
    frame: pl.DataFrame,
    *,
    parameters: Mapping[str, object] | None = None,
    complete: bool = True,
) -> ExpectationSuiteValidationResult:
    """Validate the whole frame in one GX call. complete=True lists every unexpected row (by
    index, for per-partition splitting and examples); False gives verdicts only (about half
    the cost)."""
    data = to_pandas(frame)
    result_format = {"result_format": "COMPLETE", "partial_unexpected_count": 5} if complete else "BOOLEAN_ONLY"
    with _GX_LOCK, warnings.catch_warnings():
        # GX's column-pair metrics read tz-aware columns through Series.values (UTC instants, as
        # wanted); pandas 3.1 warns that this will change. Nothing the caller can act on.
        warnings.filterwarnings("ignore", message="Series.values returning an ndarray that drops timezone")
        batch = _batch_definition().get_batch(batch_parameters={"dataframe": data})
        return batch.validate(
            suite, result_format=result_format, expectation_parameters=dict(parameters) if parameters else None
        )


def validate_frame(
    suite: gx.ExpectationSuite,
    frame: pl.DataFrame,
    *,
    n_partitions: int,
    parameters: Mapping[str, object] | None = None,
) -> ExpectationSuiteValidationResult:
    """One partition: a verdicts-only call, and a complete one only when something failed (to
    name the rows). Several partitions: one complete call, split per partition by the caller."""
    if n_partitions == 1:
        result = run_suite(suite, frame, parameters=parameters, complete=False)
        if result.success:
            return result
    return run_suite(suite, frame, parameters=parameters, complete=True)


def gx_type(dtype: pl.DataType) -> str:
    """The type name GX's pandas type check matches for a polars dtype after `to_pandas`
    (GX compares the pandas dtype's scalar type; it cannot see a Datetime's unit or zone)."""
    if isinstance(dtype, pl.Datetime):
        return "Timestamp" if dtype.time_zone else "datetime64"
    if dtype == pl.String:
        return "str"
    if dtype == pl.Boolean:
        return "bool"
    return type(dtype).__name__.lower()  # Int64 -> "int64" matches numpy int64 and pandas Int64


def tagged(expectation: E.Expectation, check: str) -> E.Expectation:
    expectation.meta = {OUTCOME_META_KEY: check}
    return expectation


def declared_schema(view: FeatureView) -> dict[str, pl.DataType]:
    """Every column of the view's table, in order: keys, event_timestamp, features, created_timestamp."""
    keys = {key: KEY_DTYPE for key in view.entity_keys}
    return {**keys, EVENT_TIMESTAMP: TIMESTAMP_DTYPE, **view.schema(), CREATED_TIMESTAMP: TIMESTAMP_DTYPE}


def view_suite(view: FeatureView) -> gx.ExpectationSuite:
    """The view's suite, derived from its declaration (cached by view name)."""
    if view.name in _SUITES:
        return _SUITES[view.name]
    schema = declared_schema(view)
    derived = [tagged(E.ExpectTableColumnsToMatchOrderedList(column_list=list(schema)), SCHEMA)]
    derived += [tagged(E.ExpectColumnValuesToBeOfType(column=c, type_=gx_type(t)), SCHEMA) for c, t in schema.items()]
    for column in [*view.entity_keys, EVENT_TIMESTAMP, CREATED_TIMESTAMP]:
        derived.append(tagged(E.ExpectColumnValuesToNotBeNull(column=column), NULLS))
    for feature in view.features:
        mostly = round(1 - feature.max_null_fraction, 12)
        derived.append(tagged(E.ExpectColumnValuesToNotBeNull(column=feature.name, mostly=mostly), NULLS))
        if feature.min_value is not None or feature.max_value is not None:
            derived.append(tagged(E.ExpectColumnValuesToBeBetween(
                column=feature.name, min_value=feature.min_value, max_value=feature.max_value), RANGES))
    derived.append(tagged(E.ExpectCompoundColumnsToBeUnique(column_list=[*view.entity_keys, EVENT_TIMESTAMP]), UNIQUE))
    extra = [expectation.copy(deep=True) for expectation in EXTRA_EXPECTATIONS.get(view.name, [])]
    suite = gx.ExpectationSuite(name=view.name, expectations=derived + extra)
    _SUITES[view.name] = suite
    return suite


def dtype_findings(frame: pl.DataFrame, schema: Mapping[str, pl.DataType], rule: str = "polars_dtype_is") -> list[Finding]:
    """The exact polars dtype of each declared column present (GX cannot see units and zones)."""
    return [
        Finding(f"{rule}({declared})", (name,), frame.schema[name] == declared,
                "" if frame.schema[name] == declared else f"found {frame.schema[name]}", str(frame.schema[name]))
        for name, declared in schema.items() if name in frame.columns
    ]


def check_volume(
    table: str, partition: str, row_count: int, recent_row_counts: Sequence[int], tolerance_factor: float
) -> CheckOutcome:
    """`row_volume_within_tolerance`: fails on an empty partition, or when the row count leaves
    [median / f, median * f] of the recent partitions' counts; passes with a note without history."""
    if tolerance_factor < 1:
        raise ValueError(f"tolerance_factor must be >= 1, got {tolerance_factor}")
    rule = f"row_count_within_recent_median(factor={tolerance_factor:g})"
    history = [int(count) for count in recent_row_counts]
    median = float(statistics.median(history)) if history else None
    bounds: list[float] = []
    if row_count == 0:
        finding = Finding(rule, (), False, "0 rows: the partition is empty", 0)
    elif not history or median == 0:
        note = "no recent partitions to compare with" if not history else "recent partitions were empty"
        finding = Finding(rule, (), True, f"{row_count} rows accepted ({note})", row_count)
    else:
        bounds = [median / tolerance_factor, median * tolerance_factor]
        passed = bounds[0] <= row_count <= bounds[1]
        detail = "" if passed else (
            f"{row_count} rows, outside [{bounds[0]:.1f}, {bounds[1]:.1f}] (median {median:g} of "
            f"{len(history)} recent partitions, tolerance x{tolerance_factor:g})")
        finding = Finding(rule, (), passed, detail, row_count)
    extra: dict[str, object] = {"row_count": row_count, "history_size": len(history)}
    if median is not None:
        extra.update(recent_median=median, bounds=bounds)
    return outcome(VOLUME, table, partition, [finding], details=extra)


def assign_partitions(
    frame: pl.DataFrame, column: str, partitions: Sequence[PartitionWindow], *, closed: str
) -> np.ndarray:
    """Index of each row's partition by its time column: closed='left' puts t in [start, end)
    (raw events), 'right' in (start, end] (feature snapshots). Rows before the first or after the
    last window, with a null time, or in a frame whose column is unusable go to the nearest end,
    so the rules that look at them report them there."""
    if not partitions:
        raise ValueError("at least one partition is needed")
    for before, after in zip(partitions, partitions[1:]):
        if before.end != after.start:
            raise ValueError(f"partitions must be contiguous and sorted: {before.key} ends at "
                             f"{before.end.isoformat()}, {after.key} starts at {after.start.isoformat()}")
    if len(partitions) == 1 or column not in frame.columns or not isinstance(frame.schema[column], pl.Datetime):
        return np.zeros(frame.height, dtype=np.int64)
    starts = np.array([(p.start - _EPOCH) // timedelta(microseconds=1) for p in partitions], dtype=np.int64)
    times = frame[column].dt.convert_time_zone("UTC").dt.cast_time_unit("us").to_physical()
    times = times.fill_null(int(starts[0])).to_numpy()
    index = np.searchsorted(starts, times, side="left" if closed == "right" else "right") - 1
    return np.clip(index, 0, len(partitions) - 1).astype(np.int64)


def check_feature_volume(table: str, partition: str, row_count: int, source_rows: int) -> CheckOutcome:
    """`row_volume_within_tolerance` for a feature table: a partition may be empty only when its
    source had no event in the windows its snapshots cover. A feature row count is a function of
    its input, so this verdict depends on the data alone, never on what earlier runs recorded."""
    rule = "rows_when_source_has_events"
    passed = row_count > 0 or source_rows == 0
    detail = "" if passed else f"0 rows although the source has {source_rows} events in the windows of its snapshots"
    if passed and row_count == 0:
        detail = "empty, as its source has no events in the windows of its snapshots"
    finding = Finding(rule, (), passed, detail, row_count)
    return outcome(VOLUME, table, partition, [finding], details={"row_count": row_count, "source_rows": source_rows})


def _feature_outcomes(
    view: FeatureView, frame: pl.DataFrame, keys: Sequence[str], row_partition: np.ndarray,
    source_rows: Mapping[str, int],
) -> dict[str, list[CheckOutcome]]:
    suite = view_suite(view)
    result = validate_frame(suite, frame, n_partitions=len(keys))
    identity = [*view.entity_keys, EVENT_TIMESTAMP]
    per_partition = gx_findings(result, frame, row_partition=row_partition, n_partitions=len(keys), identity=identity)
    exact = dtype_findings(frame, declared_schema(view))
    counts = np.bincount(row_partition, minlength=len(keys))
    names = [*FEATURE_CHECKS, *([CUSTOM_EXPECTATIONS] if EXTRA_EXPECTATIONS.get(view.name) else [])]
    outcomes: dict[str, list[CheckOutcome]] = {}
    for part, key in enumerate(keys):
        found = {**per_partition[part], SCHEMA: per_partition[part].get(SCHEMA, []) + exact}
        checks = []
        for name in names:
            rule = FEATURE_RULES[name]
            if name == VOLUME:
                volume = check_feature_volume(view.name, key, int(counts[part]), int(source_rows.get(key, 0)))
                checks.append(volume.under(rule))
            else:
                checks.append(outcome(name, view.name, key, found.get(name, []), blocking=rule.blocking,
                                      details={"action": rule.action.value}))
        outcomes[key] = checks
    return outcomes


def validate_feature_partition(
    view: FeatureView, frame: pl.DataFrame, *, partition: str, source_rows: int
) -> list[CheckOutcome]:
    """The quality checks of one written partition of a feature table (all of `frame`), in order:
    schema_matches_declaration, feature_nulls_within_limits, feature_values_in_range,
    entity_keys_unique_per_timestamp, row_volume_within_tolerance[, custom_expectations].
    `source_rows` is the number of source events in the windows of its snapshots."""
    rows = np.zeros(frame.height, dtype=np.int64)
    return _feature_outcomes(view, frame, [partition], rows, {partition: source_rows})[partition]


def validate_feature_partitions(
    view: FeatureView, frame: pl.DataFrame, *, partitions: Sequence[PartitionWindow],
    source_rows: Mapping[str, int],
) -> dict[str, list[CheckOutcome]]:
    """The same checks for a backfilled range in one GX call, per partition key. A row belongs to
    the partition whose window ends at or after its event_timestamp (snapshots stamp the end)."""
    rows = assign_partitions(frame, EVENT_TIMESTAMP, partitions, closed="right")
    return _feature_outcomes(view, frame, [p.key for p in partitions], rows, source_rows)
