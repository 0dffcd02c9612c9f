"""Values as JSON: the one rule for every value the platform writes as JSON.

Check metadata, quality-ledger rows, rule examples and monitoring examples all go through
`json_value` (to a JSON-able Python value) or `json_text` (to JSON text). The rule:

- `None` and the missing markers (pandas `NA`, `NaT`) -> `null`;
- non-finite floats -> the strings `"NaN"`, `"Infinity"`, `"-Infinity"`. Why strings: JSON has
  no NaN, and Dagster metadata and the ledger's Delta column must stay valid JSON; why not null:
  a NaN is a value a rule or a monitor reports on (a NaN reading, a NaN served value), and must
  never read as a missing one. The spellings are the tokens Python's `json` writes for these
  floats (and the feature server's wire format), so `float(text)` reads each back;
- numpy scalars -> their Python value (then the rules above);
- datetimes, dates and times -> ISO 8601 text; timedeltas -> `str(timedelta)`;
- mappings -> objects with string keys; lists, tuples, sets, numpy arrays and polars Series ->
  arrays (recursively);
- anything else -> `str(value)`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import date, datetime, time, timedelta

import numpy as np
import polars as pl


def non_finite_token(value: float) -> str:
    """The JSON string standing for a NaN or an infinite float: "NaN", "Infinity", "-Infinity"."""
    if math.isnan(value):
        return "NaN"
    return "Infinity" if value > 0 else "-Infinity"


def _float(value: float) -> float | str:
    if not math.isfinite(value):
        return non_finite_token(value)
    return float(value)  # a float subclass (numpy's float64) as a plain float


def _is_missing(value: object) -> bool:
    """pandas' NaT and NA, the missing markers: unequal to themselves (NA even refuses to say)."""
    unequal = value != value  # noqa: PLR0124 -- comparing with itself is the test
    return not isinstance(unequal, bool) or unequal


def json_value(value: object) -> object:
    """A JSON-able copy of `value` under the module's rule (non-finite floats as strings)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, np.generic):
        return json_value(value.item())
    if isinstance(value, (datetime, date, time)):
        return None if _is_missing(value) else value.isoformat()
    if isinstance(value, timedelta):
        return str(value)
    if isinstance(value, Mapping):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_value(item) for item in value]
    if isinstance(value, np.ndarray):
        return json_value(value.tolist())
    if isinstance(value, pl.Series):
        return json_value(value.to_list())
    return None if _is_missing(value) else str(value)


def json_text(value: object) -> str:
    """`value` as JSON text under the module's rule; never the invalid tokens NaN or Infinity."""
    try:
        # Most values are JSON-able already (check details are converted when made): the C encoder
        # writes them as the rule would, and refuses exactly what needs converting.
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(json_value(value), allow_nan=False)
