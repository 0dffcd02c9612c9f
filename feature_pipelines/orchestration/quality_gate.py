"""Write-audit-publish for every gated asset: check the computed frame before it is written.

The asset computes its frame, runs the quality checks on it per partition, records every outcome
in the quality ledger, and then either hands the frame to the IO manager (all blocking checks
passed) or writes it to `_quarantine/<table>` for inspection and produces no output, so the
table keeps its last good version and nothing downstream runs. Later runs that read a partition
whose latest blocking check failed are refused by the IO manager (see QualityLedger).
"""

from collections.abc import Iterator, Mapping, Sequence
import json

import polars as pl
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext, MetadataValue

from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.quality.ledger import QualityLedger
from feature_pipelines.quality.outcome import CheckOutcome
from feature_pipelines.timeutil import utc_now

QUARANTINE_PREFIX = "_quarantine"


def gate_check_specs(asset_name: str, check_names: Sequence[str], warn_only: frozenset[str] = frozenset()) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(
            name,
            asset=asset_name,
            blocking=name not in warn_only,
            description=("Warns only (real data breaks it); " if name in warn_only else "Blocking; ")
            + f"evaluated on the computed frame before it is written ({name.replace('_', ' ')}).",
        )
        for name in check_names
    ]


def _result(name: str, outcomes: list[CheckOutcome]) -> AssetCheckResult:
    failed = [o for o in outcomes if not o.passed]
    blocking = all(o.blocking for o in outcomes) if outcomes else True
    first = failed[0] if failed else None
    return AssetCheckResult(
        check_name=name,
        passed=not failed,
        severity=AssetCheckSeverity.ERROR if blocking else AssetCheckSeverity.WARN,
        description=first.message if first else f"passed on {len(outcomes)} partition(s)",
        metadata={
            "partitions_checked": len(outcomes),
            "failed_partitions": MetadataValue.json([o.partition for o in failed][:50]),
            "first_failure": MetadataValue.json(json.loads(json.dumps(first.metadata, default=str)) if first else {}),
        },
    )


def run_gate(
    context: AssetExecutionContext,
    *,
    table: str,
    frame: pl.DataFrame,
    outcomes_by_partition: Mapping[str, list[CheckOutcome]],
    check_names: Sequence[str],
    row_counts: Mapping[str, int],
    store: DeltaStore,
) -> Iterator[AssetCheckResult | bool]:
    """Yield one AssetCheckResult per check, then True when the frame may be published."""
    ledger = QualityLedger(store)
    outcomes = [o for partition in outcomes_by_partition.values() for o in partition]
    ledger.record(outcomes, run_id=context.run_id, row_counts=dict(row_counts))
    for name in check_names:
        yield _result(name, [o for o in outcomes if o.check_name == name])
    blocked = [o for o in outcomes if not o.passed and o.blocking]
    if blocked:
        # One quarantine table per run: a bad frame may have any schema (a dropped column, string
        # delays), and it must be kept as it came, not coerced into an earlier one.
        quarantine = f"{QUARANTINE_PREFIX}/{table}/{context.run_id}"
        store.append(
            quarantine,
            frame.with_columns(pl.lit(utc_now()).dt.cast_time_unit("us").alias("quarantined_at")),
            commit_metadata={"failed_checks": ",".join(sorted({o.check_name for o in blocked}))},
        )
        context.log.error(
            f"table {table!r}: {len(blocked)} blocking check failure(s); nothing written, the frame is kept in "
            f"{quarantine!r} for inspection. First: {blocked[0].message}"
        )
    yield not blocked
