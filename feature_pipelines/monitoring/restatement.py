"""Three-way skew: served, offline as of the request instant (Delta time travel), offline now.

A mismatch says that a served value differs from what the offline store gives today. Reading the
feature table at the Delta version it had at the request instant (every materialization is a
commit, stamped with its time and its Dagster run id) tells why:

- `serving_bug`: served differs from offline-then: the server gave something the lake never held
  (or held only in a snapshot it should not have used);
- `restatement`: served equals offline-then, and the same snapshot holds another value now: a
  later run rewrote it. The first version that changed it, and its run, are named;
- `late_arrival`: served equals offline-then, and offline-now takes its value from a snapshot that
  did not exist then: data arrived (was materialized) after the request. Its version is named too.

Each (table, version) reading goes through the same evaluator the skew monitor uses
(`skew_frames`), so offline-then is the training path's value at that version, bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import polars as pl

from feature_pipelines.monitoring.skew_frames import REQUEST_KEY
from feature_pipelines.monitoring.values import numbers_equal
from feature_pipelines.offline.delta_store import DeltaStore

ThreeWay = Literal["serving_bug", "restatement", "late_arrival"]
THREE_WAY_CLASSES: tuple[ThreeWay, ...] = ("serving_bug", "restatement", "late_arrival")
RUN_ID_KEY = "dagster_run_id"  # what every materialization's commit records (orchestration/io_manager.py)

# rows (REQUEST_KEY, entity keys, the instant, ...) and table -> version: long values (skew_frames)
Evaluator = Callable[[pl.DataFrame, Mapping[str, int]], pl.DataFrame]


@dataclass(frozen=True)
class TableHistory:
    """A Delta table's commits: version, commit time and the run that wrote it (when recorded)."""

    table: str
    commits: pl.DataFrame  # version Int64, commit_ms Int64, run_id String, sorted by version

    @classmethod
    def read(cls, store: DeltaStore, table: str) -> TableHistory:
        history = store.history(table)
        frame = pl.DataFrame(
            {
                "version": [int(h["version"]) for h in history],
                "commit_ms": [int(h["timestamp"]) for h in history],
                "run_id": [h.get(RUN_ID_KEY) for h in history],
            },
            schema={"version": pl.Int64, "commit_ms": pl.Int64, "run_id": pl.String},
        ).sort("version")
        return cls(table, frame)

    def versions_at(self, instants: pl.Series) -> pl.Series:
        """The version each instant read: the latest commit at or before it; null before the first."""
        # Versions are ordered, commit clocks need not be: a version is visible from the latest of
        # its own and its predecessors' commit times.
        commits = self.commits.with_columns(pl.col("commit_ms").cum_max()).sort("commit_ms")
        probe = pl.DataFrame({"__i": pl.int_range(instants.len(), eager=True), "t_ms": instants.dt.epoch("ms")}).sort("t_ms")
        joined = probe.join_asof(commits.select("commit_ms", "version"), left_on="t_ms", right_on="commit_ms", strategy="backward")
        return joined.sort("__i").get_column("version").cast(pl.Int64)

    def run_of(self, version: int) -> str | None:
        rows = self.commits.filter(pl.col("version") == version)
        return rows.item(0, "run_id") if rows.height else None


def _same(served_float: str, served_json: str, other_float: str, other_json: str) -> pl.Expr:
    numeric = numbers_equal(pl.col(served_float), pl.col(other_float), pl.col("abs_tolerance"))
    textual = pl.col(served_json) == pl.col(other_json)
    return pl.when(pl.col(other_json).is_not_null() | pl.col(served_json).is_not_null()).then(textual).otherwise(numeric).fill_null(False)


def _values_at(rows: pl.DataFrame, evaluate: Evaluator, version_columns: Mapping[str, str], prefix: str) -> pl.DataFrame:
    """Each row's offline value at the versions in its `version_columns` (null where a table did
    not exist yet), as `<prefix>_float`, `<prefix>_json`, `<prefix>_stamp`."""
    key = [*REQUEST_KEY, "feature"]
    outs = []
    complete = pl.all_horizontal(pl.col(c).is_not_null() for c in version_columns.values())
    for group in rows.filter(complete).partition_by(list(version_columns.values()), maintain_order=True):
        pins = {table: int(group.item(0, column)) for table, column in version_columns.items()}
        outs.append(evaluate(group, pins).join(group.select(key), on=key, how="semi"))
    renamed = {"value_float": f"{prefix}_float", "value_json": f"{prefix}_json", "stamp": f"{prefix}_stamp"}
    values = pl.concat(outs) if outs else pl.DataFrame(
        schema={"request_id": pl.String, "entity_index": pl.Int64, "feature": pl.String, "value_float": pl.Float64,
                "value_json": pl.String, "stamp": pl.Datetime("us", "UTC")})
    return rows.join(values.rename(renamed), on=key, how="left")


def split_three_way(
    store: DeltaStore,
    mismatches: pl.DataFrame,
    *,
    tables: Sequence[str],
    evaluate: Evaluator,
    now: Mapping[str, int],
) -> pl.DataFrame:
    """`mismatches` (the skew monitor's classified rows: served_*, expected_*, request_time,
    abs_tolerance) with `three_way`, `changed_version` and `changed_run` (module docstring).

    `tables` are what the rows' values are read from (one feature table, or an on-demand
    feature's input tables); `now` the versions the expected values were read at."""
    if mismatches.height == 0:
        return mismatches.with_columns(
            pl.lit(None, dtype=pl.String).alias("three_way"), pl.lit(None, dtype=pl.Int64).alias("changed_version"),
            pl.lit(None, dtype=pl.String).alias("changed_run"),
        )
    histories = {table: TableHistory.read(store, table) for table in tables}
    columns = {table: f"__then_{table}" for table in tables}
    rows = mismatches.with_columns(
        histories[t].versions_at(mismatches.get_column("request_time")).alias(c) for t, c in columns.items()
    )
    rows = _values_at(rows, evaluate, columns, "then")
    served_is_then = _same("served_float", "served_json", "then_float", "then_json")
    then_is_now = _same("then_float", "then_json", "expected_float", "expected_json")
    same_snapshot = pl.col("then_stamp").is_not_null() & (pl.col("then_stamp") == pl.col("expected_event_timestamp")).fill_null(False)
    rows = rows.with_columns(
        pl.when(~served_is_then | then_is_now).then(pl.lit("serving_bug"))
        .when(same_snapshot).then(pl.lit("restatement"))
        .otherwise(pl.lit("late_arrival"))
        .alias("three_way")
    )
    changed = _first_change(rows.filter(pl.col("three_way") != "serving_bug"), evaluate, histories, columns, now)
    return rows.join(changed, on=[*REQUEST_KEY, "feature"], how="left").drop(list(columns.values()))


def _first_change(
    rows: pl.DataFrame, evaluate: Evaluator, histories: Mapping[str, TableHistory], columns: Mapping[str, str],
    now: Mapping[str, int],
) -> pl.DataFrame:
    """For restated and late rows: the first version after the request's that gives another value
    than offline-then, walked one commit at a time (one table moved at a time, the others held),
    and the run that committed it."""
    key = [*REQUEST_KEY, "feature"]
    found: list[dict[str, object]] = []
    pending = rows
    for table, column in columns.items():
        if pending.height == 0:
            break
        history = histories[table]
        for version in history.commits.get_column("version").to_list():
            if pending.height == 0 or version > now.get(table, version):
                break
            ahead = pending.filter(pl.col(column) < version)
            if ahead.height == 0:
                continue
            moved = ahead.with_columns(pl.lit(version, dtype=pl.Int64).alias(column))
            probe = _values_at(moved, evaluate, columns, "probe")
            differs = probe.filter(~_same("then_float", "then_json", "probe_float", "probe_json"))
            for row in differs.select(key).iter_rows(named=True):
                found.append({**row, "changed_version": version, "changed_run": history.run_of(version),
                              "changed_table": table})
            pending = pending.join(differs.select(key), on=key, how="anti")
    schema = {"request_id": pl.String, "entity_index": pl.Int64, "feature": pl.String, "changed_version": pl.Int64,
              "changed_run": pl.String, "changed_table": pl.String}
    return pl.DataFrame(found, schema=schema, orient="row") if found else pl.DataFrame(schema=schema)
