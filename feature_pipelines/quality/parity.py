"""Online/offline parity: the values a model is served must equal, bit for bit, the values it
would have been trained on for the same entities at the same instant."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl


@dataclass(frozen=True)
class ParityReport:
    entities_compared: int
    mismatches: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, object]] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.mismatches

    def message(self) -> str:
        if self.passed:
            return f"online equals offline for {self.entities_compared} entities"
        listed = ", ".join(f"{name} ({count})" for name, count in self.mismatches.items())
        return f"online differs from offline for {self.entities_compared} entities compared: {listed}"


def _bits(series: pl.Series) -> pl.Series:
    """Floats as their 64-bit patterns (so -0.0 != 0.0 and NaN == NaN); other types as they are."""
    if series.dtype in (pl.Float32, pl.Float64):
        values = series.cast(pl.Float64).to_numpy(allow_copy=True)
        bits = np.where(np.isnan(values) & series.is_null().to_numpy(), 0, values).view(np.int64)
        return pl.Series(series.name, bits).set(series.is_null(), None)
    return series


def compare(offline: pl.DataFrame, online: pl.DataFrame, *, keys: Sequence[str], features: Sequence[str]) -> ParityReport:
    """Compare two frames of the same entity rows in the same order: dtypes, nulls, bits."""
    if offline.height != online.height:
        raise ValueError(f"parity: {offline.height} offline rows vs {online.height} online rows")
    mismatches: dict[str, int] = {}
    examples: list[dict[str, object]] = []
    for name in features:
        left, right = offline.get_column(name), online.get_column(name)
        if left.dtype != right.dtype:
            mismatches[f"{name} dtype {left.dtype} offline vs {right.dtype} online"] = offline.height
            continue
        differs = _bits(left).ne_missing(_bits(right))
        count = int(differs.sum())
        if count:
            mismatches[name] = count
            rows = offline.select(keys).filter(differs).head(3).to_dicts()
            for row, a, b in zip(rows, left.filter(differs).head(3), right.filter(differs).head(3)):
                examples.append({**row, "feature": name, "offline": a, "online": b})
    return ParityReport(entities_compared=offline.height, mismatches=mismatches, examples=examples[:10])
