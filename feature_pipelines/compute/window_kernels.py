"""Compiled (numba) loops over each entity's time-sorted events: snapshot rows, window bounds, sorted sums, quantiles.

Every function reproduces, operation for operation, what polars group_by_dynamic computes for
the same window (see compute/snapshots_reference.py), so the values are bit-identical; the
formulas copied from polars are named where they are used.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Compiled kernels are cached next to this file; in an image whose package directory is read-only
# (deploy/Dockerfile runs as an unprivileged user) numba would find no cache location and refuse
# to compile, so the cache goes to the temporary directory there. Read by numba at import.
if "NUMBA_CACHE_DIR" not in os.environ and not os.access(Path(__file__).parent, os.W_OK):
    os.environ["NUMBA_CACHE_DIR"] = str(Path(tempfile.gettempdir()) / "feature_pipelines_numba")

import numpy as np
from numba import njit

# How polars interpolates the linear quantile of a window (crates polars-core
# chunked_array/ops/aggregate/quantile.rs and polars-compute rolling/{no_,}nulls/quantile.rs):
# group_by_dynamic's windows overlap when the window is longer than the cadence, and then
# polars uses its rolling kernel; otherwise it takes the quantile of each window's slice.
QUANTILE_ROLLING = 0
QUANTILE_SLICE = 1


@njit(cache=True, nogil=True)
def snapshot_rows(  # pragma: no cover - compiled
    offsets: np.ndarray, times: np.ndarray, interval: int, widest: int, k_first: int, k_last: int
) -> tuple[np.ndarray, np.ndarray]:
    """(entity, k) for each snapshot t = k * interval, k in [k_first, k_last], whose widest window
    [t - widest, t) holds an event of the entity; rows in entity order, then k ascending.

    An event at x is seen by the snapshots k in [x // interval + 1, (x + widest) // interval];
    events are time-sorted within an entity, so these ranges only move forward and merge.
    """
    entities = offsets.shape[0] - 1
    total = 0
    for pass_ in range(2):
        if pass_ == 1:
            row_entity = np.empty(total, np.int64)
            row_k = np.empty(total, np.int64)
        row = 0
        for e in range(entities):
            next_k = k_first
            for i in range(offsets[e], offsets[e + 1]):
                lo = max(times[i] // interval + 1, next_k)
                hi = min((times[i] + widest) // interval, k_last)
                if hi >= lo:
                    if pass_ == 1:
                        for k in range(lo, hi + 1):
                            row_entity[row + k - lo] = e
                            row_k[row + k - lo] = k
                    row += hi - lo + 1
                    next_k = hi + 1
        total = row
    return row_entity, row_k


@njit(cache=True, nogil=True)
def window_starts(  # pragma: no cover - compiled
    offsets: np.ndarray, times: np.ndarray, row_entity: np.ndarray, bound: np.ndarray
) -> np.ndarray:
    """For each row, the index of its entity's first event at or after `bound` (the entity's end if none)."""
    out = np.empty(row_entity.shape[0], np.int64)
    for r in range(row_entity.shape[0]):
        a = offsets[row_entity[r]]
        b = offsets[row_entity[r] + 1]
        out[r] = a + np.searchsorted(times[a:b], bound[r], side="left")
    return out


@njit(cache=True, nogil=True)
def _linear_quantile(ordered: np.ndarray, n: int, nulls: int, q: float, mode: int) -> float:  # pragma: no cover
    """polars' linear quantile of a window whose n non-null values are `ordered[:n]`, with `nulls` nulls."""
    if mode == QUANTILE_ROLLING or nulls == 0:
        # Rolling kernel, and quantile_slice on a window without nulls: the index ignores nulls.
        float_idx = (n - 1.0) * q
        offset = 0
    else:
        # generic_quantiles: the nulls sort first and the index counts them.
        float_idx = (n - 1.0) * q + nulls
        offset = nulls
    idx = min(int(float_idx), n + offset - 1)
    top = int(np.ceil(float_idx))
    lower = float(ordered[idx - offset])
    if idx == top:
        return lower
    upper = float(ordered[idx + 1 - offset])
    if mode == QUANTILE_SLICE and lower == upper:
        return lower
    return (float_idx - idx) * (upper - lower) + lower


@njit(cache=True, nogil=True)
def sorted_window_stats(  # pragma: no cover - compiled
    values: np.ndarray,
    valid: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    want_sum: bool,
    want_quantile: bool,
    q: float,
    mode: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, over the non-null values of [lo, hi): their sum in ascending order strictly left to
    right (what `drop_nulls().sort().cum_sum().last()` gives), and polars' linear quantile `q`.

    The sum starts from the smallest value itself, as cum_sum does (0.0 + x differs from x for x = -0.0).
    Returns (sums, quantiles, present): `present` is False where the window has no non-null value.
    """
    rows = lo.shape[0]
    sums = np.zeros(rows, values.dtype)
    quantiles = np.full(rows, np.nan)
    present = np.zeros(rows, np.bool_)
    longest = 0
    for r in range(rows):
        longest = max(longest, hi[r] - lo[r])
    buffer = np.empty(longest, values.dtype)
    for r in range(rows):
        n = 0
        for i in range(lo[r], hi[r]):
            if valid[i]:
                buffer[n] = values[i]
                n += 1
        if n == 0:
            continue
        present[r] = True
        if n == 1:  # every formula below gives the one value itself
            sums[r] = buffer[0]
            quantiles[r] = float(buffer[0])
            continue
        ordered = buffer[:n]
        ordered.sort()
        if want_sum:
            total = ordered[0]
            for i in range(1, n):
                total += ordered[i]
            sums[r] = total
        if want_quantile:
            quantiles[r] = _linear_quantile(ordered, n, hi[r] - lo[r] - n, q, mode)
    return sums, quantiles, present


@njit(cache=True, nogil=True)
def window_extremes(  # pragma: no cover - compiled
    values: np.ndarray, valid: np.ndarray, lo: np.ndarray, hi: np.ndarray, maximum: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the min (or max) of the non-null values of [lo, hi), and whether there was one."""
    rows = lo.shape[0]
    out = np.zeros(rows, values.dtype)
    present = np.zeros(rows, np.bool_)
    for r in range(rows):
        found = False
        best = values[0] if values.shape[0] else out[0]
        for i in range(lo[r], hi[r]):
            if valid[i] and (not found or (values[i] > best if maximum else values[i] < best)):
                best = values[i]
                found = True
        out[r] = best
        present[r] = found
    return out, present
