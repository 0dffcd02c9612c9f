"""The synthetic generator: seeded, independent of chunk size, the declared schema, shares and faults."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.sources.synthetic import (
    BLOCK_ROWS,
    ENTITY_KEY,
    FLAG,
    KNOWN_AT,
    SCHEMA,
    SYNTHETIC_TABLE,
    VALUE,
    SyntheticEvents,
    iter_event_chunks,
    write_events,
)

# More than one block per day, and a remainder, so block and day seams are both crossed.
SPEC = SyntheticEvents(events=2 * BLOCK_ROWS + 10_001, entities=2_000, days=2, seed=7)


def generate(spec: SyntheticEvents, chunk_rows: int = 1_000_000) -> pl.DataFrame:
    return pl.concat(iter_event_chunks(spec, chunk_rows=chunk_rows))


@pytest.fixture(scope="module")
def events() -> pl.DataFrame:
    return generate(SPEC)


def test_same_seed_same_rows_other_seed_other_rows(events: pl.DataFrame) -> None:
    assert_frame_equal(generate(SPEC), events, check_exact=True)
    other = generate(SyntheticEvents(events=SPEC.events, entities=SPEC.entities, days=SPEC.days, seed=8))
    assert other.height == events.height
    assert not other.equals(events)


@pytest.mark.parametrize("chunk_rows", [999, BLOCK_ROWS, BLOCK_ROWS + 1, 10_000_000])
def test_rows_do_not_depend_on_chunk_size(events: pl.DataFrame, chunk_rows: int) -> None:
    chunks = list(iter_event_chunks(SPEC, chunk_rows=chunk_rows))
    assert all(chunk.height <= chunk_rows for chunk in chunks)
    # A chunk never spans two days, so files written from chunks can be skipped by day.
    assert all(chunk[KNOWN_AT].dt.date().n_unique() == 1 for chunk in chunks)
    assert_frame_equal(pl.concat(chunks), events, check_exact=True)


def test_schema_days_and_keys(events: pl.DataFrame) -> None:
    assert events.schema == pl.Schema(SCHEMA)
    assert events.height == SPEC.events
    assert events[KNOWN_AT].min() >= SPEC.start
    assert events[KNOWN_AT].max() < SPEC.end
    per_day = events.group_by(pl.col(KNOWN_AT).dt.date().alias("day")).len().sort("day")
    assert per_day["len"].to_list() == [SPEC.events_on(0), SPEC.events_on(1)]
    assert events[ENTITY_KEY].null_count() == 0
    assert set(events[ENTITY_KEY].unique()) <= set(SPEC.entity_names)


def test_popularity_is_skewed(events: pl.DataFrame) -> None:
    counts = events[ENTITY_KEY].value_counts(sort=True)["count"]
    # Zipf 0.8 over 2,000 keys: the top key has about 3.5% of events, the median one about 0.03%.
    assert counts[0] > 50 * counts.median()
    uniform = generate(SyntheticEvents(events=100_000, entities=100, days=1, zipf_exponent=0.0))
    uniform_counts = uniform[ENTITY_KEY].value_counts()["count"]
    assert uniform_counts.max() < 1.2 * uniform_counts.min()


@pytest.mark.parametrize("null_share", [0.0, 0.3, 1.0])
def test_null_share_and_flag_rate(null_share: float) -> None:
    spec = SyntheticEvents(events=100_000, entities=500, days=1, null_share=null_share, flag_rate=0.1)
    frame = generate(spec)
    assert frame[VALUE].null_count() / frame.height == pytest.approx(null_share, abs=0.01)
    assert frame[FLAG].mean() == pytest.approx(0.1, abs=0.01)
    assert frame.select(pl.exclude(VALUE).null_count()).sum_horizontal().item() == 0


def test_shift_after_an_instant_moves_only_later_values() -> None:
    shift_at = SPEC.start + timedelta(hours=30)
    base = generate(SPEC)
    shifted = generate(replace(SPEC, shift_after=shift_at, shift_by=100.0))
    before = pl.col(KNOWN_AT) < shift_at
    assert_frame_equal(shifted.filter(before), base.filter(before), check_exact=True)
    diff = shifted.filter(~before)[VALUE] - base.filter(~before)[VALUE]
    assert diff.drop_nulls().len() > 0
    assert diff.drop_nulls().abs().max() == pytest.approx(100.0)
    assert diff.drop_nulls().abs().min() == pytest.approx(100.0)


def test_written_delta_table_holds_the_same_rows_in_day_files(tmp_path: Path, events: pl.DataFrame) -> None:
    store = DeltaStore(str(tmp_path / "lake"))
    write_events(store, SPEC, chunk_rows=50_000)
    order = [KNOWN_AT, ENTITY_KEY, VALUE]
    assert_frame_equal(store.read(SYNTHETIC_TABLE).sort(order), events.sort(order), check_exact=True)
    # delta-rs returns an Arrow table that polars reads as one struct column; unnest it.
    actions = pl.from_arrow(store.open(SYNTHETIC_TABLE).get_add_actions(flatten=True))
    files = actions.struct.unnest() if isinstance(actions, pl.Series) else actions
    days = files.select(
        pl.col(f"min.{KNOWN_AT}").dt.date().alias("first"), pl.col(f"max.{KNOWN_AT}").dt.date().alias("last")
    )
    assert days.height >= 4
    assert (days["first"] == days["last"]).all()
    with pytest.raises(ValueError, match="already exists"):
        write_events(store, SPEC)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"entities": 0}, "entities >= 1"),
        ({"null_share": 1.5}, "null_share"),
        ({"start": datetime(2013, 1, 1)}, "naive"),
        ({"start": datetime(2013, 1, 1, 6, tzinfo=timezone.utc)}, "midnight"),
        ({"zipf_exponent": -1.0}, "zipf_exponent"),
    ],
)
def test_invalid_specs_are_refused(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SyntheticEvents(**{"events": 10, "entities": 5, "days": 1, **changes})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunk_rows"):
        next(iter_event_chunks(SPEC, chunk_rows=0))
