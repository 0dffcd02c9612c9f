"""Write-audit-publish for every gated asset, partition by partition.

The asset computes its frame for the run's range and its checks' outcomes per partition; the
gate applies each rule's action (quality.gate.judge), records every outcome in the quality
ledger, replaces the quarantine of the judged partitions, and yields Dagster's check results.
The asset then writes what the verdict keeps (`write_verdict`):

- every partition passed: one Output for the range (the IO manager writes it; downstream steps
  of the same run go on);
- some failed: the passing partitions are written in one Delta commit, one AssetMaterialization
  each, and the failed ones get none. Their blocking checks fail, so the step and the run fail:
  Dagster shows exactly those partitions red and the rest materialised, and the next runs read
  the good ones (see orchestration.upstream).

The gate's unit may be finer than the Dagster partition (`partition_of`): raw tables are days
judged hour by hour, so an hour is what is held back, quarantined and recorded in the ledger, and
its day gets no materialization (red) while the day's other hours are written.

Per-partition check evaluations (AssetCheckEvaluation with `partition`) are emitted for the
partitions that failed or dropped rows (one per check and Dagster partition, listing the units);
one range-level result per check summarises the rest. Dagster 1.13 records an evaluation per
partition only this way (AssetCheckResult has no partition), and each costs 12-30 ms on the local
SQLite instance, so green squares for every clean partition and rule would cost more than the
checks themselves.

The ledger records the verdicts after the write: a verdict in it means the unit's rows were
written or held back, which is what downstream readiness per raw hour relies on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl
from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetMaterialization,
    MetadataValue,
    Output,
)

from feature_pipelines.json_values import json_value
from feature_pipelines.offline.delta_store import DeltaStore, Slices, TimeSlice
from feature_pipelines.plan.record import commit_metadata_of
from feature_pipelines.quality.actions import RuleAction
from feature_pipelines.quality.gate import GateVerdict, judge
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.quality.outcome import CheckOutcome
from feature_pipelines.quality.quarantine import Quarantine, held_back_partitions, held_back_rows, rows_table
from feature_pipelines.quality.suites import assign_partitions
from feature_pipelines.timeutil import PartitionWindow

MAX_PARTITIONS_LISTED = 50


def gate_check_specs(asset_name: str, rules: Mapping[str, RuleAction]) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(
            name,
            asset=asset_name,
            blocking=rule.blocking,
            description=f"Action {rule.describe()}: {rule.reason}. Evaluated per partition on the computed frame "
            f"before it is written ({name.replace('_', ' ')}).",
        )
        for name, rule in rules.items()
    ]


def _severity(blocking: bool) -> AssetCheckSeverity:
    return AssetCheckSeverity.ERROR if blocking else AssetCheckSeverity.WARN


def _check_metadata(o: CheckOutcome) -> dict[str, object]:
    """An outcome's metadata for Dagster: lists and objects as JSON (quality.json_values' rule)."""
    shown = {key: json_value(value) for key, value in o.metadata.items() if value is not None}
    return {key: MetadataValue.json(value) if isinstance(value, (list, dict)) else value for key, value in shown.items()}


def _summary(name: str, rule: RuleAction, outcomes: list[CheckOutcome]) -> AssetCheckResult:
    """One range-level result of a check: how many partitions failed, the first failure, rows dropped."""
    failed = [o for o in outcomes if not o.passed]
    dropped = sum(int(o.details.get("dropped_rows", 0) or 0) for o in outcomes if o.passed)
    first = failed[0] if failed else None
    if first:
        description = first.message if len(failed) == 1 else f"{len(failed)} of {len(outcomes)} partitions failed; first: {first.message}"
    else:
        description = f"passed on {len(outcomes)} partition(s)" + (f"; {dropped} row(s) dropped to quarantine" if dropped else "")
    return AssetCheckResult(
        check_name=name,
        passed=not failed,
        severity=_severity(rule.blocking),
        description=description,
        metadata={
            "action": rule.action.value,
            "partitions_checked": len(outcomes),
            "failed_partitions": MetadataValue.json([o.partition for o in failed][:MAX_PARTITIONS_LISTED]),
            "failed_partition_count": len(failed),
            "dropped_rows": dropped,
            "first_failure": MetadataValue.json(json_value(first.metadata) if first else {}),
        },
    )


def _per_partition(asset: str, o: CheckOutcome) -> AssetCheckEvaluation:
    """One partition's evaluation of a judged outcome (blocking as its rule's action says)."""
    return AssetCheckEvaluation(
        asset_key=AssetKey(asset),
        check_name=o.check_name,
        passed=o.passed,
        partition=o.partition,
        blocking=o.blocking,
        severity=_severity(o.blocking),
        description=o.message,
        metadata=_check_metadata(o),
    )


def _per_unit(asset: str, partition: str, outcomes: Sequence[CheckOutcome]) -> AssetCheckEvaluation:
    """One Dagster partition's evaluation of the gate units (hours of a raw day) it flagged:
    failed when any of them failed, each unit's message and metadata kept."""
    failed = [o for o in outcomes if not o.passed]
    return AssetCheckEvaluation(
        asset_key=AssetKey(asset),
        check_name=outcomes[0].check_name,
        passed=not failed,
        partition=partition,
        blocking=outcomes[0].blocking,
        severity=_severity(outcomes[0].blocking),
        description="; ".join(o.message for o in outcomes[:MAX_PARTITIONS_LISTED]),
        metadata={
            "units": MetadataValue.json([o.partition for o in outcomes]),
            "failed_units": MetadataValue.json([o.partition for o in failed]),
            "per_unit": MetadataValue.json({o.partition: json_value(o.metadata) for o in outcomes[:MAX_PARTITIONS_LISTED]}),
        },
    )


def _same(key: str) -> str:
    return key


def run_gate(
    context: AssetExecutionContext,
    *,
    table: str,
    frame: pl.DataFrame,
    row_partition: np.ndarray,
    partition_keys: Sequence[str],
    outcomes_by_partition: Mapping[str, list[CheckOutcome]],
    rules: Mapping[str, RuleAction],
    store: DeltaStore,
    now: datetime,
    partition_of: Callable[[str], str] = _same,
) -> Iterator[AssetCheckResult | AssetCheckEvaluation | GateVerdict]:
    """Yield the check results, then the verdict (last) for `write_verdict`; `partition_of` maps
    a gate unit's key to its Dagster partition (an hour to its raw day)."""
    verdict = judge(table, row_partition, partition_keys, outcomes_by_partition, rules)
    run_id = context.run.run_id
    held_back = held_back_rows(frame, row_partition, verdict, run_id=run_id, at=now)
    Quarantine(store).replace(table, held_back, held_back_partitions(verdict, run_id=run_id, at=now),
                              first_partition=partition_keys[0], last_partition=partition_keys[-1])
    for name, rule in rules.items():
        outcomes = [o for o in verdict.outcomes if o.check_name == name]
        if outcomes:
            yield _summary(name, rule, outcomes)
    # Blocking failures and drops get their own square; warnings are in the summary.
    flagged: dict[tuple[str, str], list[CheckOutcome]] = {}
    for partition in verdict.partitions:
        for o in partition.outcomes:
            if (not o.passed and o.blocking) or o.details.get("dropped_rows"):
                flagged.setdefault((o.check_name, partition_of(o.partition)), []).append(o)
    for (_, dagster_partition), outcomes in flagged.items():
        yield _per_partition(table, outcomes[0]) if outcomes[0].partition == dagster_partition else _per_unit(
            table, dagster_partition, outcomes)
    if verdict.failed:
        first = verdict.failed[0].first_failure()
        context.log.error(
            f"table {table!r}: {len(verdict.failed)} of {len(verdict.partitions)} partition(s) held back "
            f"({', '.join(p.partition for p in verdict.failed[:5])}{', ...' if len(verdict.failed) > 5 else ''}); "
            f"their rows are in {rows_table(table)!r}. First: {first.message if first else ''}"
        )
    yield verdict


@dataclass(frozen=True)
class WriteTarget:
    """How a gated asset's partitions map to its Delta table: time column and window closure."""

    table: str
    time_column: str
    closed: str  # "left": events in [start, end); "right": snapshots in (start, end]

    def slice_of(self, windows: Sequence[PartitionWindow]) -> TimeSlice:
        return TimeSlice(self.time_column, windows[0].start, windows[-1].end, self.closed)


def _runs(windows: Sequence[PartitionWindow], passed: set[str]) -> list[list[PartitionWindow]]:
    """The contiguous runs of passed partitions, in order."""
    runs: list[list[PartitionWindow]] = []
    for window in windows:
        if window.key not in passed:
            runs.append([])
        elif not runs or not runs[-1]:
            runs.append([window])
        else:
            runs[-1].append(window)
    return [run for run in runs if run]


def write_verdict(
    context: AssetExecutionContext,
    *,
    target: WriteTarget,
    frame: pl.DataFrame,
    verdict: GateVerdict,
    windows: Sequence[PartitionWindow],
    store: DeltaStore,
    metadata: Mapping[str, object],
    partition_of: Callable[[str], str] = _same,
) -> Iterator[Output | AssetMaterialization]:
    """Write what the verdict keeps: one Output when every partition passed, else the passing
    units directly (one commit) and one materialization for each Dagster partition whose every
    unit passed (a raw day with a held-back hour gets none: it shows red, its other hours are written)."""
    kept = frame.filter(pl.Series(verdict.keep))
    dropped = verdict.dropped_by_check()
    common = {**metadata, "dropped_rows": sum(dropped.values()), "dropped_rows_by_rule": MetadataValue.json(dropped)}
    if not verdict.failed:
        yield Output(kept, metadata=common)
        return
    by_key = {p.partition: p for p in verdict.partitions}
    runs = _runs(windows, set(verdict.passed_keys))
    if not runs:
        return
    slices = Slices(tuple(target.slice_of(run) for run in runs))
    rows = kept.filter(slices.polars_filter())
    version = store.write(target.table, rows, time_slice=slices,
                          commit_metadata={"dagster_run_id": context.run.run_id, "partition_window": slices.describe(),
                                           **commit_metadata_of(metadata)})
    # Rows per partition in one pass (a year's run has 8,760 partitions).
    counts = np.bincount(assign_partitions(rows, target.time_column, windows, closed=target.closed), minlength=len(windows))
    units: dict[str, list[PartitionWindow]] = {}
    for window in windows:
        units.setdefault(partition_of(window.key), []).append(window)
    count_of = {window.key: int(count) for window, count in zip(windows, counts)}
    for partition, its_units in units.items():
        if not all(by_key[w.key].passed for w in its_units):
            continue
        yield AssetMaterialization(
            asset_key=target.table,
            partition=partition,
            metadata={
                **common,
                "delta_version": version,
                "delta_table_uri": MetadataValue.path(store.table_uri(target.table)),
                "dagster/row_count": sum(count_of[w.key] for w in its_units),
                "partition_window": TimeSlice(target.time_column, its_units[0].start, its_units[-1].end, target.closed).describe(),
                "dropped_rows_here": sum(by_key[w.key].dropped_rows for w in its_units),
                "held_back_in_this_run": MetadataValue.json([p.partition for p in verdict.failed][:MAX_PARTITIONS_LISTED]),
            },
        )


def gate_and_write(
    context: AssetExecutionContext,
    *,
    target: WriteTarget,
    frame: pl.DataFrame,
    windows: Sequence[PartitionWindow],
    outcomes_by_partition: Mapping[str, list[CheckOutcome]],
    rules: Mapping[str, RuleAction],
    store: DeltaStore,
    now: datetime,
    metadata: Callable[[pl.DataFrame], Mapping[str, object]],
    stored_columns: Sequence[str] | None = None,
    partition_of: Callable[[str], str] = _same,
) -> Iterator[AssetCheckResult | AssetCheckEvaluation | Output | AssetMaterialization]:
    """The gate, then the write of what it keeps: every gated asset's last step.

    Rows belong to the partition of their `target.time_column`; `metadata(written)` describes
    the rows written; `stored_columns` leaves out columns the quarantine keeps but the table does
    not (a raw row's source file and row); `partition_of` maps a gate unit (`windows`) to its
    Dagster partition (identity: they are the same). The ledger records the verdicts after the
    write, so a passed verdict in it means the rows are in the table (orchestration.upstream).
    """
    row_partition = assign_partitions(frame, target.time_column, windows, closed=target.closed)
    counts = np.bincount(row_partition, minlength=len(windows))
    verdict = None
    for item in run_gate(context, table=target.table, frame=frame, row_partition=row_partition,
                         partition_keys=[w.key for w in windows], outcomes_by_partition=outcomes_by_partition, rules=rules,
                         store=store, now=now,
                         partition_of=partition_of):
        if isinstance(item, GateVerdict):
            verdict = item
        else:
            yield item
    if verdict is None:
        raise RuntimeError(f"table {target.table!r}: the gate gave no verdict")
    stored = frame.select(stored_columns) if stored_columns is not None else frame
    written = stored.filter(pl.Series(verdict.keep))
    yield from write_verdict(context, target=target, frame=stored, verdict=verdict, windows=windows, store=store,
                             metadata=metadata(written), partition_of=partition_of)
    QualityLedger(store).record(verdict.outcomes, run_id=context.run.run_id,
                                row_counts={w.key: int(c) for w, c in zip(windows, counts)})
