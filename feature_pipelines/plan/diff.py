"""What changed between two sets of view records, feature by feature (no lake, no judgement).

A feature that disappears from a view while another appears is a rename when the pairing is
unambiguous: the same definition under a new name, or else the only removed and the only added
feature of that view with the same aggregation and source column (a new window forces a new name,
since names end with their window). Anything less certain is reported as removed plus added.
View-level changes that move every value of the view (its source, grain or float-sum method) are
carried into each of its features' changes.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from feature_pipelines.plan.record import FeatureRecord, ViewRecord


class ChangeKind(str, enum.Enum):
    VIEW_ADDED = "view_added"
    VIEW_REMOVED = "view_removed"
    ENTITY_KEYS = "entity_keys"
    GRAIN = "grain"  # partitioning or snapshot cadence
    TTL = "ttl"
    SOURCE = "source"  # source table, its known-at column or lateness
    FLOAT_SUMS = "float_sums"
    FEATURE_ADDED = "feature_added"
    FEATURE_REMOVED = "feature_removed"
    RENAMED = "renamed"
    DTYPE = "dtype"
    AGGREGATION = "aggregation"
    WINDOW = "window"
    SOURCE_COLUMN = "source_column"
    NULL_POLICY = "null_policy"


# Changes after which a recomputation gives other values under the feature's name.
VALUE_KINDS = frozenset({
    ChangeKind.SOURCE, ChangeKind.FLOAT_SUMS, ChangeKind.GRAIN, ChangeKind.ENTITY_KEYS, ChangeKind.AGGREGATION,
    ChangeKind.WINDOW, ChangeKind.SOURCE_COLUMN, ChangeKind.NULL_POLICY, ChangeKind.DTYPE, ChangeKind.RENAMED,
    ChangeKind.FEATURE_ADDED,
})  # fmt: skip

_FEATURE_FIELDS = {
    "dtype": ChangeKind.DTYPE, "aggregation": ChangeKind.AGGREGATION, "window": ChangeKind.WINDOW,
    "source_column": ChangeKind.SOURCE_COLUMN, "null_policy": ChangeKind.NULL_POLICY,
}  # fmt: skip
_VIEW_FIELDS = {
    "entity_keys": ChangeKind.ENTITY_KEYS, "partitioning": ChangeKind.GRAIN, "cadence": ChangeKind.GRAIN,
    "ttl_seconds": ChangeKind.TTL, "source_asset": ChangeKind.SOURCE, "known_at_column": ChangeKind.SOURCE,
    "max_lateness_seconds": ChangeKind.SOURCE, "exact_float_sums": ChangeKind.FLOAT_SUMS,
}  # fmt: skip
_INHERITED = frozenset({ChangeKind.SOURCE, ChangeKind.GRAIN, ChangeKind.FLOAT_SUMS, ChangeKind.ENTITY_KEYS})


@dataclass(frozen=True)
class FieldChange:
    kind: ChangeKind
    field: str
    before: object
    after: object

    def describe(self) -> str:
        return f"{self.field}: {self.before!r} -> {self.after!r}"


@dataclass(frozen=True)
class FeatureChange:
    """One feature's change: `name` is its working-tree name (the old name when removed)."""

    view: str
    name: str
    before: FeatureRecord | None
    after: FeatureRecord | None
    changes: tuple[FieldChange, ...]

    @property
    def kinds(self) -> frozenset[ChangeKind]:
        return frozenset(change.kind for change in self.changes)

    @property
    def old_name(self) -> str | None:
        return self.before.name if self.before is not None else None

    @property
    def reference(self) -> str:
        return f"{self.view}:{self.name}"

    @property
    def changes_values(self) -> bool:
        return self.after is not None and bool(self.kinds & VALUE_KINDS)


@dataclass(frozen=True)
class ViewChange:
    """A view's changes: its own fields, and each changed feature."""

    view: str
    before: ViewRecord | None
    after: ViewRecord | None
    changes: tuple[FieldChange, ...]
    features: tuple[FeatureChange, ...]

    @property
    def kinds(self) -> frozenset[ChangeKind]:
        return frozenset(change.kind for change in self.changes)


def _field_changes(before: object, after: object, fields: Mapping[str, ChangeKind]) -> list[FieldChange]:
    return [
        FieldChange(kind, name, getattr(before, name), getattr(after, name))
        for name, kind in fields.items()
        if getattr(before, name) != getattr(after, name)
    ]


def _renames(before: ViewRecord, after: ViewRecord) -> dict[str, str]:
    """Removed name -> added name, for the unambiguous pairs (module docstring)."""
    removed = [f for f in before.features if f.name not in set(after.feature_names)]
    added = [f for f in after.features if f.name not in set(before.feature_names)]
    pairs: dict[str, str] = {}
    for same in (
        lambda old, new: old.definition() == new.definition(),
        lambda old, new: (old.aggregation, old.source_column) == (new.aggregation, new.source_column),
    ):
        for old in removed:
            if old.name in pairs:
                continue
            matches = [new for new in added if new.name not in pairs.values() and same(old, new)]
            rivals = [o for o in removed if o.name not in pairs and any(same(o, new) for new in matches)]
            if len(matches) == 1 and len(rivals) == 1:
                pairs[old.name] = matches[0].name
    return pairs


def _feature_changes(before: ViewRecord, after: ViewRecord, inherited: list[FieldChange]) -> list[FeatureChange]:
    renames = _renames(before, after)
    renamed_to = set(renames.values())
    out: list[FeatureChange] = []
    for old in before.features:
        new_name = renames.get(old.name, old.name)
        new = after.feature(new_name)
        if new is None:
            out.append(FeatureChange(before.name, old.name, old, None,
                                     (FieldChange(ChangeKind.FEATURE_REMOVED, "name", old.name, None),)))
            continue
        changes = _field_changes(old, new, _FEATURE_FIELDS)
        if new_name != old.name:
            changes.insert(0, FieldChange(ChangeKind.RENAMED, "name", old.name, new_name))
        changes += inherited
        if changes:
            out.append(FeatureChange(before.name, new_name, old, new, tuple(changes)))
    for new in after.features:
        if before.feature(new.name) is None and new.name not in renamed_to:
            out.append(FeatureChange(after.name, new.name, None, new,
                                     (FieldChange(ChangeKind.FEATURE_ADDED, "name", None, new.name),)))
    return out


def _whole_view(before: ViewRecord | None, after: ViewRecord | None) -> ViewChange:
    """A view added (before None) or removed (after None): every feature with it."""
    if before is None:
        assert after is not None
        return ViewChange(after.name, None, after, (FieldChange(ChangeKind.VIEW_ADDED, "view", None, after.name),), tuple(
            FeatureChange(after.name, f.name, None, f, (FieldChange(ChangeKind.FEATURE_ADDED, "name", None, f.name),))
            for f in after.features
        ))
    return ViewChange(before.name, before, None, (FieldChange(ChangeKind.VIEW_REMOVED, "view", before.name, None),), tuple(
        FeatureChange(before.name, f.name, f, None, (FieldChange(ChangeKind.FEATURE_REMOVED, "name", f.name, None),))
        for f in before.features
    ))


def view_change(before: ViewRecord | None, after: ViewRecord | None) -> ViewChange | None:
    """The change from `before` to `after` (either may be None: added or removed), None if none."""
    if before is None or after is None:
        if before is None and after is None:
            raise ValueError("view_change needs a record on at least one side")
        return _whole_view(before, after)
    if before.fingerprint == after.fingerprint:
        return None
    changes = _field_changes(before, after, _VIEW_FIELDS)
    inherited = [change for change in changes if change.kind in _INHERITED]
    return ViewChange(before.name, before, after, tuple(changes), tuple(_feature_changes(before, after, inherited)))


def diff_records(before: Mapping[str, ViewRecord], after: Mapping[str, ViewRecord]) -> list[ViewChange]:
    """Every view that changed, in the order: the working tree's views, then removed ones."""
    names = [*after, *(name for name in before if name not in after)]
    changes = (view_change(before.get(name), after.get(name)) for name in names)
    return [change for change in changes if change is not None]
