"""The breaking rule: which definition changes must be declared before they ship.

A change is BREAKING when a reader that worked before fails or silently misreads after it:

1. a view or feature removed, or a feature renamed: every reference by the old name (feature
   services, training sets, on-demand inputs, clients) fails, and the online hashes hold the old field;
2. a dtype changed: the Delta column's type changes under existing rows, the online store encodes a
   value by its declared dtype without storing it (int64 as ASCII decimal, float64 as 8 IEEE bytes),
   so hashes published before read wrongly, and every service vector's schema changes;
3. the entity keys changed: every reader joins on other columns;
4. the partitioning or snapshot cadence changed: the partitions are cut anew, the stored rows sit on
   the old grid and nothing short of a full backfill makes the table whole;
5. a feature's values change (aggregation, window, source column, null policy, source table, float
   sums) while a feature service that pins fitted statistics reads it (directly or through an
   on-demand input): the statistics were fitted on the old values, and the service's version moves.

Everything else (an added view or feature, a TTL change, values changing for features no pinned
service reads) is not breaking; the plan still shows its effect. The rule reads only the code and
the lock, never the lake, so CI can enforce it.
"""

from __future__ import annotations

from feature_pipelines.plan.consumers import Consumers
from feature_pipelines.plan.diff import ChangeKind, FeatureChange
from feature_pipelines.plan.record import FeatureRecord

ONLINE_ENCODING = {
    "int64": "ASCII decimal",
    "float64": "8 IEEE-754 bytes",
    "string": "UTF-8 text",
    "bool": "b'1'/b'0'",
}
_STATISTICS_KINDS = frozenset({
    ChangeKind.AGGREGATION, ChangeKind.WINDOW, ChangeKind.SOURCE_COLUMN, ChangeKind.NULL_POLICY, ChangeKind.SOURCE,
    ChangeKind.FLOAT_SUMS,
})  # fmt: skip


def dtype_effect(before: FeatureRecord, after: FeatureRecord) -> str:
    """What the online store and consumers see of a dtype change."""
    return (
        f"dtype {before.dtype} -> {after.dtype}: online values stored as {ONLINE_ENCODING[before.dtype]} are read as "
        f"{ONLINE_ENCODING[after.dtype]} until every entity is republished; the Delta column and every service "
        f"vector column change type"
    )


def breaking_reasons(change: FeatureChange, consumers: Consumers) -> tuple[str, ...]:
    """Why `change` breaks its readers (the module's rule), or () when it does not."""
    kinds = change.kinds
    reasons: list[str] = []
    if ChangeKind.FEATURE_REMOVED in kinds:
        reasons.append(f"removed: {consumers.describe()} and online readers name it")
    if ChangeKind.RENAMED in kinds:
        reasons.append(f"renamed from {change.old_name!r}: a reference by the old name fails ({consumers.describe()}); "
                       "online hashes hold the old field")
    if ChangeKind.DTYPE in kinds and change.before is not None and change.after is not None:
        reasons.append(dtype_effect(change.before, change.after))
    if ChangeKind.ENTITY_KEYS in kinds:
        reasons.append("entity keys changed: every reader joins on other columns")
    if ChangeKind.GRAIN in kinds:
        reasons.append("partitioning or snapshot cadence changed: the table needs a full backfill on the new grid")
    value_kinds = sorted(kind.value for kind in kinds & _STATISTICS_KINDS)
    if value_kinds and consumers.pinned_statistics:
        reasons.append(f"values change ({', '.join(value_kinds)}) while feature service(s) "
                       f"{list(consumers.pinned_statistics)} pin statistics fitted on the old values: refit and pin anew")
    return tuple(reasons)
