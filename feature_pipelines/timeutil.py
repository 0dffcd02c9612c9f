"""UTC helpers: every instant in the project is timezone-aware UTC."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


def require_utc(moment: datetime, what: str) -> datetime:
    """Return `moment` in UTC; a naive datetime is an error because its zone would be a guess."""
    if moment.tzinfo is None or moment.tzinfo.utcoffset(moment) is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {moment.isoformat()}")
    return moment.astimezone(UTC)


def utc_now() -> datetime:
    return datetime.now(UTC)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def epoch_us(moment: datetime) -> int:
    """A UTC instant as integer microseconds since the epoch (how Redis and the stream hold instants)."""
    return (require_utc(moment, "moment") - EPOCH) // _MICROSECOND


def from_epoch_us(micros: int) -> datetime:
    """Integer microseconds since the epoch as a UTC datetime."""
    return EPOCH + timedelta(microseconds=micros)


def floor_to(moment: datetime, step: timedelta) -> datetime:
    """The latest multiple of `step` since the epoch at or before `moment` (UTC)."""
    return EPOCH + ((require_utc(moment, "moment") - EPOCH) // step) * step


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
