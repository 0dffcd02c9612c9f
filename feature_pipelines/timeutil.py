"""UTC helpers: every instant in the project is timezone-aware UTC."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone


def require_utc(moment: datetime, what: str) -> datetime:
    """Return `moment` in UTC; a naive datetime is an error because its zone would be a guess."""
    if moment.tzinfo is None or moment.tzinfo.utcoffset(moment) is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {moment.isoformat()}")
    return moment.astimezone(timezone.utc)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def floor_to(moment: datetime, step: timedelta) -> datetime:
    """The latest multiple of `step` since the epoch at or before `moment` (UTC)."""
    epoch = datetime(1970, 1, 1, tzinfo=timezone.utc)
    return epoch + ((require_utc(moment, "moment") - epoch) // step) * step


@dataclass(frozen=True)
class PartitionWindow:
    """A partition key and its half-open time window [start, end), UTC."""

    key: str
    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        require_utc(self.start, f"partition {self.key} start")
        require_utc(self.end, f"partition {self.key} end")
        if self.end <= self.start:
            raise ValueError(f"partition {self.key}: end {self.end.isoformat()} is not after its start")
