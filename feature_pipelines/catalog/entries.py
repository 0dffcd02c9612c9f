"""The catalog's model: one entry per feature, its lineage, its users and the states read from the lake."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from feature_pipelines.features.spec import FreshnessSLA, Lifecycle

ColumnRole = Literal["value", "time", "key", "request"]
UseKind = Literal["view", "service", "training_set", "model"]
FeatureKind = Literal["stored", "on_demand"]
REQUEST_TABLE = "request"  # the pseudo-table of on-demand request columns: given by the caller, not read from the lake


class State(str, enum.Enum):
    """A verdict as the catalog shows it; UNKNOWN when nothing recorded one (never guessed)."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    UNKNOWN = "unknown"

    @property
    def rank(self) -> int:
        return _RANK[self]


_RANK = {State.UNKNOWN: 0, State.PASS: 1, State.WARN: 2, State.FAIL: 3}


def worst_state(states: list[State]) -> State:
    """The most severe of `states` (UNKNOWN only when all are unknown or none are given)."""
    return max(states, key=lambda state: state.rank, default=State.UNKNOWN)


@dataclass(frozen=True)
class RawColumn:
    """One raw column a feature reads: `table.column`, as a value, the time that stamps it, a key, or a
    request column (given by the caller at prediction time, table `request`)."""

    table: str
    column: str
    role: ColumnRole

    @property
    def qualified(self) -> str:
        return f"{self.table}.{self.column}"

    def __str__(self) -> str:
        return self.qualified if self.role == "value" else f"{self.qualified} ({self.role})"


@dataclass(frozen=True)
class Use:
    """Something that uses a feature: a view declares it; a service, training set or model reads it,
    directly or `via` an on-demand feature computed from it; `detail` says how (transformations, version)."""

    kind: UseKind
    name: str
    via: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        text = self.name + (f" ({self.detail})" if self.detail else "")
        return text + (f" via {self.via}" if self.via else "")


@dataclass(frozen=True)
class Signal:
    """A state read from a results table: its verdict, what it is based on, and the instant it describes."""

    state: State
    detail: str
    as_of: datetime | None = None

    def __str__(self) -> str:
        return f"{self.state.value}: {self.detail}" if self.detail else self.state.value


def unknown(detail: str) -> Signal:
    return Signal(State.UNKNOWN, detail)


@dataclass(frozen=True)
class Freshness:
    """The feature's table against its SLA: the age of its last materialization at the catalog's clock."""

    sla: FreshnessSLA | None
    last_materialized: datetime | None
    age: timedelta | None
    signal: Signal

    @property
    def state(self) -> State:
        return self.signal.state


@dataclass(frozen=True)
class CatalogEntry:
    """One feature as people look it up. An on-demand feature has no declared owner, lifecycle or table:
    it shows its input views' (owners, tags, entity), its least mature input's lifecycle and its stalest
    input's freshness; one computed from the request alone has none of them (None, never invented)."""

    name: str
    view: str
    kind: FeatureKind
    dtype: str
    description: str
    definition: str
    owner: str | None
    lifecycle: Lifecycle | None
    entity: str | None
    join_keys: tuple[str, ...]
    tags: Mapping[str, str]
    freshness: Freshness
    lineage: tuple[RawColumn, ...]
    uses: tuple[Use, ...]
    quality: Signal
    drift: Signal
    skew: Signal
    pii: bool = False

    @property
    def reference(self) -> str:
        return f"{self.view}:{self.name}"

    @property
    def deprecated(self) -> bool:
        return self.lifecycle is Lifecycle.DEPRECATED

    @property
    def users(self) -> tuple[Use, ...]:
        """Who reads it (services, training sets, models); a view only declares it."""
        return tuple(use for use in self.uses if use.kind != "view")

    def uses_of(self, kind: UseKind) -> tuple[Use, ...]:
        return tuple(use for use in self.uses if use.kind == kind)


class UnknownCatalogFeatureError(KeyError):
    """A feature name the catalog does not list."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Catalog:
    """Every feature's entry, in catalog order (views in declaration order, then on-demand features), and
    what the states were read from: the lake (None: no lake was read) at the clock `generated_at`."""

    entries: tuple[CatalogEntry, ...]
    generated_at: datetime
    lake: str | None
    notes: tuple[str, ...] = field(default_factory=tuple)
    models_listed: bool = False  # False: no model registry was read, so "no model" means "not known"

    def entry(self, name: str) -> CatalogEntry:
        """The entry of feature `name` (or of a "view:feature" reference)."""
        wanted = name.partition(":")[2] if ":" in name else name
        for entry in self.entries:
            if entry.name == wanted:
                return entry
        raise UnknownCatalogFeatureError(
            f"the catalog lists no feature {name!r}; features: {', '.join(e.name for e in self.entries)}"
        )
