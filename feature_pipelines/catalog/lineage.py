"""Lineage down to raw columns: what a stored feature aggregates, and through an on-demand feature's inputs
what it is computed from (a service's transformations apply to a feature's column and read nothing more)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from feature_pipelines.catalog.entries import REQUEST_TABLE, RawColumn
from feature_pipelines.features.on_demand import OnDemandFeature
from feature_pipelines.features.references import parse_reference
from feature_pipelines.features.spec import Feature, FeatureView


def stored_lineage(view: FeatureView, feature: Feature) -> tuple[RawColumn, ...]:
    """The raw columns a stored feature reads: its source column (none for a count), the column that stamps
    each event in time (it decides which events fall in the window), and the entity's keys."""
    table = view.source.asset
    columns = [RawColumn(table, feature.source_column, "value")] if feature.source_column else []
    columns.append(RawColumn(table, view.source.known_at_column, "time"))
    columns.extend(RawColumn(table, key, "key") for key in view.entity_keys)
    return tuple(columns)


def on_demand_lineage(feature: OnDemandFeature, views: Mapping[str, FeatureView]) -> tuple[RawColumn, ...]:
    """The raw columns under each input feature, then the request columns, each once."""
    columns: list[RawColumn] = []
    for reference in feature.inputs:
        parsed = parse_reference(reference)
        view = views[parsed.view]
        columns.extend(stored_lineage(view, view.feature(parsed.feature)))
    columns.extend(RawColumn(REQUEST_TABLE, column, "request") for column in feature.request_columns)
    return _once(columns)


def _once(columns: Iterable[RawColumn]) -> tuple[RawColumn, ...]:
    return tuple(dict.fromkeys(columns))
