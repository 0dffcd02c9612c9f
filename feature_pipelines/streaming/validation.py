"""A batch of stream events judged by the batch path's own raw rules and actions.

The events of a batch are checked as the raw asset checks an hourly partition: the same
expectation suites and polars rules (`quality/raw_rules.py`), with the batch's hours as the
partitions; the suites' expectations are evaluated by polars (`streaming/raw_rules_polars.py`,
the table's `validate`), with the verdicts GX gives them. Per event, the first blocking rule it
fails rejects it:

- a `drop` rule rejects the rows it names, as the gate drops them from a partition;
- a `fail` rule rejects every event of the hour it judged (it judges the hour as a whole);
- a `warn` rule keeps every event, as it does in the batch.

There is no drop budget: a stream has no partition to hold back, and each rejected event is
dead-lettered and counted, so a feed going bad shows up in the dead-letter counts. The volume
rule is not applied: an hour of a stream is never complete when a batch of it is judged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import polars as pl

from feature_pipelines.quality.raw_rules import RAW_VOLUME, LandingFacts
from feature_pipelines.quality.suites import assign_partitions
from feature_pipelines.streaming.events import StreamTable, hour_windows


@dataclass(frozen=True)
class Rejection:
    """Why one event of a batch is rejected: the rule, its action and the rule's message."""

    row: int
    rule: str
    action: str
    reason: str


def judge_events(
    table: StreamTable, frame: pl.DataFrame, *, known_keys: Mapping[str, frozenset[str]] | None = None
) -> list[Rejection]:
    """The rejections of a batch of contract-conforming events (row indices into `frame`)."""
    if frame.height == 0:
        return []
    # Events without an instant go to the nearest hour, where the rules that require it report them.
    instants = frame[table.time_column].drop_nulls().dt.epoch("us").to_list()
    partitions = hour_windows(instants or [0])
    # No hourly counts: the volume rule is not applied here, and counting the batch's own hours
    # would also count an event without an instant under a null hour, which the rule cannot order.
    facts = LandingFacts(known_keys=known_keys, hourly_counts={})
    outcomes = table.validate(frame, partitions=partitions, landing=facts)
    row_partition = assign_partitions(frame, table.time_column, partitions, closed="left")
    rejected: dict[int, Rejection] = {}
    for index, window in enumerate(partitions):
        for outcome in outcomes[window.key]:
            if outcome.passed or outcome.check_name == RAW_VOLUME:
                continue
            rule = table.rules[outcome.check_name]
            if not rule.blocking:
                continue
            rows = outcome.failing_rows if rule.action.value == "drop" and outcome.failing_rows is not None else None
            if rows is None:
                rows = np.flatnonzero(row_partition == index)
            for row in rows.tolist():
                rejected.setdefault(row, Rejection(row, outcome.check_name, rule.action.value, outcome.message))
    return sorted(rejected.values(), key=lambda r: r.row)
