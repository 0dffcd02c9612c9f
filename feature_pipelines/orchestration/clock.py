"""One clock per backfill or scheduled run: "now" is read once and carried to every run as a tag.

A backfill that reads the clock twice can cross an hour between its raw run and its feature run,
and the feature run then computes snapshots that need a raw hour no run landed. So the entry
point (the `backfill` verb, a schedule tick) reads the clock once, every run of it carries that
instant in the `feature_pipelines/clock` tag, and each asset computes its open partition up to
that instant, never past it. `FEATURE_PIPELINES_NOW` (an ISO instant with its offset) sets the
clock for tests and for replaying a past moment.
"""

from __future__ import annotations

import os
from datetime import datetime

from dagster import AssetExecutionContext

from feature_pipelines.timeutil import require_utc, utc_now

RUN_CLOCK_TAG = "feature_pipelines/clock"
CLOCK_ENV = "FEATURE_PIPELINES_NOW"


def parse_instant(text: str, what: str) -> datetime:
    """An ISO instant with an explicit offset; a naive one is refused, never assumed to be UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not an ISO instant such as 2026-12-01T10:59:40+00:00") from None
    return require_utc(moment, f"{what} {text!r}")


def read_clock() -> datetime:
    """The entry point's "now": FEATURE_PIPELINES_NOW if set, else the system clock (UTC)."""
    configured = os.environ.get(CLOCK_ENV, "").strip()
    return parse_instant(configured, CLOCK_ENV) if configured else utc_now()


def clock_tags(now: datetime) -> dict[str, str]:
    return {RUN_CLOCK_TAG: require_utc(now, "run clock").isoformat()}


def run_clock(context: AssetExecutionContext) -> datetime:
    """The run's clock: its tag when an entry point set one, else read once here."""
    tagged = context.run.tags.get(RUN_CLOCK_TAG)
    return parse_instant(tagged, f"run tag {RUN_CLOCK_TAG}") if tagged else read_clock()
