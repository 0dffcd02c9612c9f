"""Settings read once from the environment: where the lake lives, which environment, replay mode."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl

from feature_pipelines.sources.nycflights import DATA_END, DATA_START

REPO_ROOT = Path(__file__).resolve().parent.parent
ENVIRONMENTS = ("local", "staging", "prod")


@dataclass(frozen=True)
class ReplayClock:
    """Maps 2013 onto the present by a whole number of weeks, so weekdays line up.

    With replay start R, the 2013 data from its first week is shifted so that it begins in the
    week of R; an hourly tick at present hour H then materialises the 2013 hour H - offset.
    """

    offset: timedelta

    @classmethod
    def starting(cls, replay_start: date) -> ReplayClock:
        start = datetime(replay_start.year, replay_start.month, replay_start.day, tzinfo=timezone.utc)
        weeks = (start - DATA_START) // timedelta(weeks=1)
        return cls(offset=timedelta(weeks=weeks))

    def to_present(self, moment: datetime) -> datetime:
        return moment + self.offset

    def to_source(self, moment: datetime) -> datetime:
        return moment - self.offset

    def frame_to_present(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The frame with every instant (Datetime column) moved to the present."""
        if not self.offset:
            return frame
        instants = [name for name, dtype in frame.schema.items() if isinstance(dtype, pl.Datetime)]
        return frame.with_columns(pl.col(instants) + self.offset)


@dataclass(frozen=True)
class Settings:
    environment: str
    lake_root: str
    landing_root: str
    replay: ReplayClock
    reports_root: str | None = None

    @property
    def reports_dir(self) -> Path:
        """Where monitoring writes its plots and reports: `reports_root`, or `reports/` beside a
        local lake (data/reports for the demo), or data/reports for an object-store lake."""
        if self.reports_root:
            return Path(self.reports_root)
        if "://" in self.lake_root:
            return REPO_ROOT / "data" / "reports"
        return Path(self.lake_root).parent / "reports"

    @property
    def data_start(self) -> datetime:
        return self.replay.to_present(DATA_START)

    @property
    def data_end(self) -> datetime:
        return self.replay.to_present(DATA_END)


def load_settings() -> Settings:
    """FEATURE_PIPELINES_ENV picks the environment; FEATURE_PIPELINES_LAKE_ROOT the lake (default
    data/lake in the repo); FEATURE_PIPELINES_LANDING_ROOT the landing zone (default data/landing);
    FEATURE_PIPELINES_REPLAY_START (YYYY-MM-DD) turns on replay mode; FEATURE_PIPELINES_REPORTS_ROOT
    moves the monitoring reports (default: beside the lake)."""
    environment = os.environ.get("FEATURE_PIPELINES_ENV", "local")
    if environment not in ENVIRONMENTS:
        raise ValueError(f"FEATURE_PIPELINES_ENV must be one of {ENVIRONMENTS}, got {environment!r}")
    lake_root = os.environ.get("FEATURE_PIPELINES_LAKE_ROOT", str(REPO_ROOT / "data" / "lake"))
    landing_root = os.environ.get("FEATURE_PIPELINES_LANDING_ROOT", str(REPO_ROOT / "data" / "landing"))
    replay_start = os.environ.get("FEATURE_PIPELINES_REPLAY_START", "").strip()
    replay = ReplayClock.starting(date.fromisoformat(replay_start)) if replay_start else ReplayClock(timedelta(0))
    return Settings(
        environment=environment,
        lake_root=lake_root,
        landing_root=landing_root,
        replay=replay,
        reports_root=os.environ.get("FEATURE_PIPELINES_REPORTS_ROOT") or None,
    )
