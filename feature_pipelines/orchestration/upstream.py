"""Which of a run's partitions may be computed: those whose every upstream partition is written
and passed its blocking checks. The others are refused by name, and only they.

Dagster's partition mapping says which upstream partitions a partition reads; for a raw upstream,
whose days are judged hour by hour, the unit is the hour. Of those units, the ones that start at or after the instant a partition is computed up to (its end, or the run's
clock for an open partition) are not needed yet. A needed raw hour is missing when the quality
ledger has no verdict on it (the gate records verdicts after writing, so a verdict means the
hour's rows were written or held back), any other partition when Dagster has no materialisation
of it; either is failed when the ledger's latest blocking verdict on it failed. A raw day with
one held-back hour thus refuses only what reads that hour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from dagster import AssetExecutionContext, AssetKey, PartitionMapping, TimeWindowPartitionsDefinition

from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.orchestration.partitions import hours_of, partition_window
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.quality.outcome import CheckOutcome, Finding, outcome
from feature_pipelines.quality.suites import UPSTREAM
from feature_pipelines.timeutil import PartitionWindow

_SHOWN = 5


@dataclass(frozen=True)
class UpstreamGap:
    """Why one partition cannot be computed: upstream partitions never written, or failed."""

    partition: str
    table: str
    missing: tuple[str, ...]
    failed: tuple[str, ...]
    first_failure: str = ""

    def message(self) -> str:
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} never materialised ({_listed(self.missing)}); backfill {self.table!r} there first")
        if self.failed:
            parts.append(f"{len(self.failed)} held back by a failed blocking check ({_listed(self.failed)}): {self.first_failure}")
        return f"partition {self.partition} reads table {self.table!r} partitions of which " + "; ".join(parts)


def _listed(keys: Sequence[str]) -> str:
    return ", ".join(keys[:_SHOWN]) + (f", ... {keys[-1]}" if len(keys) > _SHOWN else "")


def upstream_gaps(
    context: AssetExecutionContext,
    *,
    upstream: str,
    mapping: PartitionMapping,
    partitions_def: TimeWindowPartitionsDefinition,
    upstream_partitions_def: TimeWindowPartitionsDefinition,
    needed: Mapping[str, tuple[datetime, datetime]],
    store: DeltaStore,
    by_hour: bool = False,
) -> dict[str, UpstreamGap]:
    """Per partition of this run that cannot be computed, its gap; `needed[key]` is the span
    [from, until) of upstream data the partition reads (until: the instant it is computed up to).

    `by_hour`: the upstream is a raw table, whose days are judged hour by hour; its needed hours
    (`until` an hour boundary) are ready when the ledger passed them, and gaps name hours.
    Otherwise the unit is the upstream partition, ready when Dagster has a materialisation of it
    and the ledger did not fail it."""
    reads: dict[str, list[str]] = {}
    for key in context.partition_keys:
        subset = partitions_def.empty_subset().with_partition_keys([key])
        mapped = mapping.get_upstream_mapped_partitions_result_for_partitions(subset, partitions_def, upstream_partitions_def)
        low, high = needed[key]
        mapped_keys = list(mapped.partitions_subset.get_partition_keys())
        units = (hours_of(upstream_partitions_def, mapped_keys, high) if by_hour
                 else [partition_window(upstream_partitions_def, k) for k in mapped_keys])
        reads[key] = [unit.key for unit in units if _overlaps(unit, low, high)]
    every = sorted({k for keys in reads.values() for k in keys})
    ledger = QualityLedger(store)
    materialized = (ledger.judged_partitions(upstream, every) if by_hour
                    else context.instance.get_materialized_partitions(AssetKey(upstream)))
    failures = ledger.failed_partitions(upstream, every)
    failed_messages = dict(zip(failures["partition"].to_list(), failures["message"].to_list()))
    gaps = {}
    for key, keys in reads.items():
        missing = tuple(k for k in keys if k not in materialized)
        failed = tuple(k for k in keys if k in failed_messages)
        if missing or failed:
            gaps[key] = UpstreamGap(key, upstream, missing, failed, failed_messages[failed[0]] if failed else "")
    return gaps


def _overlaps(window: PartitionWindow, low: datetime, high: datetime) -> bool:
    return window.start < high and window.end > low


def upstream_outcome(table: str, partition: str, gaps: Sequence[UpstreamGap | None]) -> CheckOutcome:
    """`upstream_partitions_ready`: every upstream of the partition is complete and passed, or why not."""
    rule = "every_upstream_partition_written_and_passed"
    findings = [
        Finding(rule, (), False, gap.message(), {"table": gap.table, "missing": list(gap.missing[:50]), "failed": list(gap.failed[:50])})
        for gap in gaps if gap is not None
    ]
    return outcome(UPSTREAM, table, partition, findings or [Finding(rule, (), True)])
