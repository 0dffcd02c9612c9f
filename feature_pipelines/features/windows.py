"""Window strings ('3h', '24h', '7d') parsed into timedeltas, and back, with one canonical spelling."""

from __future__ import annotations

import re
from datetime import timedelta

_WINDOW_PATTERN = re.compile(r"^(?P<count>[1-9][0-9]*)(?P<unit>m|h|d)$")
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}


class WindowParseError(ValueError):
    """A window string that is not '<positive integer><m|h|d>'."""


def parse_window(text: str) -> timedelta:
    """Parse '24h' / '7d' / '30m' into a timedelta; anything else is an error, never a guess."""
    match = _WINDOW_PATTERN.match(text)
    if match is None:
        raise WindowParseError(
            f"window {text!r} does not parse: expected a positive integer followed by "
            "'m' (minutes), 'h' (hours) or 'd' (days), e.g. '24h' or '7d'"
        )
    return timedelta(seconds=int(match["count"]) * _UNIT_SECONDS[match["unit"]])


def window_token(window: timedelta) -> str:
    """The canonical token for a window as it appears at the end of a feature name ('24h', '7d')."""
    seconds = int(window.total_seconds())
    if seconds <= 0 or seconds != window.total_seconds():
        raise WindowParseError(f"window {window!r} must be a positive whole number of seconds")
    if seconds % 86400 == 0 and seconds // 86400 >= 2:
        return f"{seconds // 86400}d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    raise WindowParseError(f"window {window!r} is not a whole number of minutes")
