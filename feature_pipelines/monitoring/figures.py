"""Figures of a monitoring result, each declared once: its table column, its metadata key, its report column.

A monitor's result (`FeatureSkew`, `FeatureDrift`, `ShadowFeatureDiff`) is shown in three places:
a row of its Delta table, the JSON metadata of a Dagster check and a column of the Markdown
report. A `Figure` says once how a figure is read from the result and how each place takes it;
`Figures` projects a result onto any of the three, so a figure cannot be renamed in one of them
and forgotten in another.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import polars as pl

R = TypeVar("R")


class UnknownFigureError(KeyError):
    """A projection names a figure its `Figures` does not declare."""

    def __str__(self) -> str:
        return str(self.args[0])


def finite_or_none(value: float | None) -> float | None:
    """None for a missing or non-finite number: JSON (and so Dagster metadata) has no NaN."""
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class Figure(Generic[R]):
    """One figure of a result `R`.

    `read` gives the value as the report shows it. `dtype` makes it a column of the monitoring
    table (None: not stored); `key` names it in metadata when that differs from `name`; `digits`
    rounds it in metadata; `finite` stores NaN and infinities as null, in the table and in
    metadata, since neither JSON nor the readers of the table expect them.
    """

    name: str
    read: Callable[[R], Any]
    dtype: pl.DataType | None = None
    heading: str | None = None
    key: str | None = None
    digits: int | None = None
    finite: bool = False

    def stored(self, item: R) -> Any:
        """The value as the table and the metadata hold it."""
        value = self.read(item)
        return finite_or_none(value) if self.finite else value

    def metadata(self, item: R) -> Any:
        value = self.stored(item)
        return round(value, self.digits) if self.digits is not None and value is not None else value


@dataclass(frozen=True)
class Figures(Generic[R]):
    """The figures of one kind of result; `figures` in table column order, `metadata_order` the
    names (in order) its metadata holds. Report columns are chosen per report, by name."""

    figures: tuple[Figure[R], ...]
    metadata_order: tuple[str, ...]

    def __post_init__(self) -> None:
        self._pick(self.metadata_order)

    def _pick(self, names: Sequence[str]) -> list[Figure[R]]:
        by_name = {figure.name: figure for figure in self.figures}
        unknown = [name for name in names if name not in by_name]
        if unknown:
            raise UnknownFigureError(f"figure(s) {unknown} are not declared; declared: {list(by_name)}")
        return [by_name[name] for name in names]

    def schema(self) -> dict[str, pl.DataType]:
        """The table columns: every figure with a dtype, in declaration order."""
        return {figure.name: figure.dtype for figure in self.figures if figure.dtype is not None}

    def row(self, item: R) -> dict[str, Any]:
        """One row of the table."""
        return {figure.name: figure.stored(item) for figure in self.figures if figure.dtype is not None}

    def metadata(self, item: R) -> dict[str, Any]:
        """Flat JSON-able figures for Dagster metadata."""
        return {figure.key or figure.name: figure.metadata(item) for figure in self._pick(self.metadata_order)}

    def headings(self, columns: Sequence[str]) -> list[str]:
        """The report's column headings of the named figures (a figure without one shows its name)."""
        return [figure.heading or figure.name for figure in self._pick(columns)]

    def cells(self, item: R, columns: Sequence[str]) -> tuple[Any, ...]:
        """The report's cells of one result, as read (the report formats them)."""
        return tuple(figure.read(item) for figure in self._pick(columns))


__all__ = ["Figure", "Figures", "UnknownFigureError", "finite_or_none"]
