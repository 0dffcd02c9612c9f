"""Exact, mergeable partial aggregates of a streaming view, per entity and tile: what Redis keeps.

A tile is the half-open bucket [k * tile, (k + 1) * tile) of known-at instants (one hour by
default, see `StreamingSpec`). Per (view, entity, tile) it keeps, for each source column its
features read:

- `n`: events (COUNT counts every event, null values included);
- `nn:<col>`: non-null values (MEAN's divisor, RATE's divisor, and the null policies: a window's
  nulls are `n - nn`);
- `s:<col>:<k>`: a Float64 sum as the limbs of its exact fixed-point integer (compute/exact_sum.py);
  `i:<col>`: an Int64 sum, exactly;
- `min:<col>` / `max:<col>`: the extremes of the non-null values;
- `t:<col>`: the true values of a Boolean column (RATE);
- `la`, `lm`, `lq`, `lv`: the latest event, by known-at then stream order (the entry id's
  milliseconds and sequence), and its values for the LATEST features, nulls included.

Every part merges exactly: counts and integer sums add, extremes compare, the latest event is
the greatest (known-at, order). So the aggregate of a window is the same whichever tiles it is cut
into, and `finish` turns it into the values `compute.snapshots` gives: the same formulas, in the
same float operations (a mean is the sum rounded once divided by the count as a float64).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from feature_pipelines.compute.exact_sum import from_limbs, round_fixed, to_fixed, to_limbs
from feature_pipelines.features.spec import Aggregation, Feature, FeatureView, NullPolicy

Order = tuple[int, int, int]  # (known-at microseconds, entry milliseconds, entry sequence)


class TilePlanError(ValueError):
    """A streaming view whose source columns the table does not hold, or not with a usable dtype."""


@dataclass(frozen=True)
class TilePlan:
    """Which parts of a tile a streaming view needs, per source column, from the table's contract."""

    view: FeatureView
    counted: tuple[str, ...]  # columns whose non-null values are counted
    float_sums: tuple[str, ...]
    int_sums: tuple[str, ...]
    mins: tuple[str, ...]
    maxs: tuple[str, ...]
    trues: tuple[str, ...]
    latest: tuple[str, ...]
    tile_us: int
    retention_ms: int  # the TTL every write of a tile sets (`StreamingSpec.retention`)

    @classmethod
    def of(cls, view: FeatureView, schema: Mapping[str, pl.DataType]) -> TilePlan:
        if view.streaming is None:
            raise TilePlanError(f"feature view {view.name!r} does not declare streaming")
        by: dict[Aggregation, list[str]] = {}
        for feature in view.features:
            if feature.source_column is None:
                continue
            if feature.source_column not in schema:
                raise TilePlanError(
                    f"feature view {view.name!r}: feature {feature.name!r} reads column {feature.source_column!r}, "
                    f"which the stream's table does not hold (columns: {sorted(schema)})"
                )
            by.setdefault(feature.aggregation, []).append(feature.source_column)
        summed = sorted(set(by.get(Aggregation.SUM, []) + by.get(Aggregation.MEAN, [])))
        for column in summed:
            if schema[column] not in (pl.Float64, pl.Int64):
                raise TilePlanError(f"feature view {view.name!r}: column {column!r} is {schema[column]}, a stream sums only Int64 and Float64")
        counted = sorted({f.source_column for f in view.features if f.source_column and f.aggregation is not Aggregation.LATEST})
        return cls(
            view=view,
            counted=tuple(counted),
            float_sums=tuple(c for c in summed if schema[c] == pl.Float64),
            int_sums=tuple(c for c in summed if schema[c] == pl.Int64),
            mins=tuple(sorted(set(by.get(Aggregation.MIN, [])))),
            maxs=tuple(sorted(set(by.get(Aggregation.MAX, [])))),
            trues=tuple(sorted(set(by.get(Aggregation.RATE, [])))),
            latest=tuple(sorted(set(by.get(Aggregation.LATEST, [])))),
            tile_us=int(view.streaming.tile.total_seconds()) * 1_000_000,
            retention_ms=int(view.streaming.retention(max(f.window_timedelta for f in view.features)).total_seconds() * 1000),
        )

    @property
    def columns(self) -> tuple[str, ...]:
        """The source columns an event record must keep for this view (edge tiles re-aggregate them)."""
        return tuple(sorted(set(self.counted) | set(self.latest)))

    def tile_of(self, known_at_us: int) -> int:
        """The start (microseconds) of the tile that holds this instant."""
        return known_at_us // self.tile_us * self.tile_us

    def ops(self, values: Mapping[str, Any], order: Order) -> list[list[str]]:
        """The Redis updates that fold one event into its tile (applied by the consumer's script).

        Each op is `[kind, field, argument]`: `incr` (HINCRBY), `min` / `max` (keep the smaller /
        greater number; the argument is the exact decimal form of the value), `latest` (replace the
        latest event when this one's order is greater; the argument is the JSON of order and values).
        """
        ops = [["incr", "n", "1"]]
        for column in self.counted:
            value = values[column]
            if value is None:
                continue
            ops.append(["incr", f"nn:{column}", "1"])
            if column in self.float_sums:
                ops += [["incr", f"s:{column}:{k}", str(d)] for k, d in to_limbs(to_fixed(value)).items()]
            if column in self.int_sums:
                ops.append(["incr", f"i:{column}", str(int(value))])
            if column in self.mins:
                ops.append(["min", f"min:{column}", repr(value)])
            if column in self.maxs:
                ops.append(["max", f"max:{column}", repr(value)])
            if column in self.trues and value:
                ops.append(["incr", f"t:{column}", "1"])
        if self.latest:
            ops.append(["latest", "l", json.dumps([list(order), {c: values[c] for c in self.latest}])])
        return ops


@dataclass
class TileAggregate:
    """The merged partial aggregate of some events of one entity (one tile, or a whole window)."""

    events: int = 0
    non_null: dict[str, int] = field(default_factory=dict)
    fixed: dict[str, int] = field(default_factory=dict)
    ints: dict[str, int] = field(default_factory=dict)
    mins: dict[str, float | int] = field(default_factory=dict)
    maxs: dict[str, float | int] = field(default_factory=dict)
    trues: dict[str, int] = field(default_factory=dict)
    latest_order: Order | None = None
    latest_values: dict[str, Any] = field(default_factory=dict)

    def add(self, plan: TilePlan, values: Mapping[str, Any], order: Order) -> None:
        """Fold one event in, as the consumer's script folds it into Redis."""
        self.merge(_from_ops(plan.ops(values, order)))

    def merge(self, other: TileAggregate) -> None:
        self.events += other.events
        for mine, theirs in ((self.non_null, other.non_null), (self.fixed, other.fixed), (self.ints, other.ints),
                             (self.trues, other.trues)):
            for column, value in theirs.items():
                mine[column] = mine.get(column, 0) + value
        for column, value in other.mins.items():
            if column not in self.mins or value < self.mins[column]:
                self.mins[column] = value
        for column, value in other.maxs.items():
            if column not in self.maxs or value > self.maxs[column]:
                self.maxs[column] = value
        if other.latest_order is not None and (self.latest_order is None or other.latest_order > self.latest_order):
            self.latest_order, self.latest_values = other.latest_order, dict(other.latest_values)


def _number(text: str) -> float | int:
    return float(text) if any(ch in text for ch in ".eEn") else int(text)


def _from_ops(ops: Iterable[list[str]]) -> TileAggregate:
    fields: dict[str, str] = {}
    for kind, name, argument in ops:
        if kind == "incr":
            fields[name] = str(int(fields.get(name, "0")) + int(argument))
        elif kind == "latest":
            fields["l"] = argument
        else:
            fields[name] = argument
    return from_hash(fields)


def from_hash(fields: Mapping[str | bytes, str | bytes]) -> TileAggregate:
    """The aggregate a tile's Redis hash holds (an absent tile is the empty aggregate)."""
    tile = TileAggregate()
    limbs: dict[str, dict[int, int]] = {}
    for raw_name, raw_value in fields.items():
        name = raw_name.decode() if isinstance(raw_name, bytes) else raw_name
        value = raw_value.decode() if isinstance(raw_value, bytes) else raw_value
        kind, _, rest = name.partition(":")
        match kind:
            case "n":
                tile.events = int(value)
            case "nn":
                tile.non_null[rest] = int(value)
            case "s":
                column, _, position = rest.rpartition(":")
                limbs.setdefault(column, {})[int(position)] = int(value)
            case "i":
                tile.ints[rest] = int(value)
            case "min":
                tile.mins[rest] = _number(value)
            case "max":
                tile.maxs[rest] = _number(value)
            case "t":
                tile.trues[rest] = int(value)
            case "l":
                order, values = json.loads(value)
                tile.latest_order, tile.latest_values = tuple(order), values  # type: ignore[assignment]
            case _:
                raise ValueError(f"unknown tile field {name!r}")
    tile.fixed = {column: from_limbs(parts) for column, parts in limbs.items()}
    return tile


def finish(feature: Feature, window: TileAggregate) -> Any:
    """One feature's value from its window's aggregate, as `compute.snapshots` computes it from the events."""
    if feature.aggregation is Aggregation.COUNT:
        return window.events
    column: str = feature.source_column  # type: ignore[assignment]
    if feature.aggregation is Aggregation.LATEST:
        return window.latest_values.get(column) if window.latest_order is not None else None
    non_null = window.non_null.get(column, 0)
    if non_null == 0 or (feature.null_policy is NullPolicy.PROPAGATE and non_null < window.events):
        return None
    match feature.aggregation:
        case Aggregation.SUM:
            return round_fixed(window.fixed[column]) if column in window.fixed else window.ints.get(column, 0)
        case Aggregation.MEAN:
            total = round_fixed(window.fixed[column]) if column in window.fixed else float(window.ints.get(column, 0))
            return total / float(non_null)
        case Aggregation.MIN:
            return window.mins[column]
        case Aggregation.MAX:
            return window.maxs[column]
        case Aggregation.RATE:
            return float(window.trues.get(column, 0)) / float(non_null)
    raise AssertionError(f"feature {feature.name!r}: aggregation {feature.aggregation} does not stream")


def natural_dtype(feature: Feature, schema: Mapping[str, pl.DataType]) -> pl.DataType:
    """The dtype of `finish`'s value before the feature's declared cast (as the batch engine casts it)."""
    if feature.aggregation is Aggregation.COUNT:
        return pl.Int64()
    if feature.aggregation in (Aggregation.MEAN, Aggregation.RATE):
        return pl.Float64()
    return schema[feature.source_column]  # type: ignore[index]
