"""Report plots for drift and skew runs: small PNGs for data/reports/ and Dagster metadata.

Figures are built on matplotlib's object API with an explicit Agg canvas, never through pyplot:
no display, no global figure registry, so nothing leaks between runs or threads and a figure is
freed when the function returns. PNGs are rendered at 80 dpi so they stay small enough to inline
in Markdown metadata (`markdown_image`).
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from feature_pipelines.monitoring.drift import FeatureDrift, Severity

DPI = 80
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEVERITY_COLOURS = {Severity.PASS: "#4c9a2a", Severity.WARN: "#e69f00", Severity.FAIL: "#c0392b"}
REFERENCE_COLOUR, CURRENT_COLOUR = "#4878a8", "#e07b39"


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # No Software/timestamp metadata chunk, so the same figure gives the same bytes.
    figure.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path


def _ranked(drifts: Sequence[FeatureDrift]) -> list[FeatureDrift]:
    """Worst first: by severity, then PSI (NaN last), then name for a stable order."""
    return sorted(
        drifts,
        key=lambda drift: (-drift.severity.rank, -(drift.psi if math.isfinite(drift.psi) else -1.0), drift.feature),
    )


def plot_feature_histograms(
    reference: pl.DataFrame,
    current: pl.DataFrame,
    drifts: Sequence[FeatureDrift],
    path: Path,
    *,
    max_features: int = 8,
    title: str,
) -> Path:
    """One panel per drifting feature (worst first; when none drift, the top ones by PSI):
    reference vs current shares over the feature's PSI bins, side by side, null shares and
    (numeric) the means noted, PSI/KS/JSD in the panel title. Returns `path`."""
    ranked = _ranked(drifts)
    drifting = [drift for drift in ranked if drift.severity is not Severity.PASS]
    shown = (drifting or ranked)[:max_features]
    columns = 1 if len(shown) <= 1 else 2
    rows = max(1, math.ceil(len(shown) / columns))
    figure = _new_figure(5.0 * columns, 2.8 * rows + 0.4)
    figure.suptitle(title, fontsize=10)
    if not shown:
        axes = figure.add_subplot()
        axes.axis("off")
        axes.text(0.5, 0.5, "no features to show", ha="center", va="center")
        return _save(figure, path)
    for index, drift in enumerate(shown):
        axes = figure.add_subplot(rows, columns, index + 1)
        _histogram_panel(axes, drift, reference, current)
    return _save(figure, path)


def _histogram_panel(axes: Axes, drift: FeatureDrift, reference: pl.DataFrame, current: pl.DataFrame) -> None:
    result = drift.psi_result
    positions = np.arange(len(result.labels))
    axes.bar(positions - 0.2, result.reference_share, width=0.4, color=REFERENCE_COLOUR, label="reference")
    axes.bar(positions + 0.2, result.current_share, width=0.4, color=CURRENT_COLOUR, label="current")
    axes.set_xticks(positions, result.labels, rotation=40, ha="right", fontsize=6)
    axes.tick_params(axis="y", labelsize=6)
    axes.set_ylabel("share of rows", fontsize=7)
    axes.set_title(_panel_title(drift), fontsize=8, color=SEVERITY_COLOURS[drift.severity])
    note = f"null: ref {_percent(drift.null_share_reference)} / cur {_percent(drift.null_share_current)}"
    if drift.kind == "numeric":
        note += f"\nmean: ref {_mean(reference, drift.feature)} / cur {_mean(current, drift.feature)}"
    axes.text(0.01, 0.98, note, transform=axes.transAxes, va="top", fontsize=6)
    axes.legend(fontsize=6, loc="upper right")


def _panel_title(drift: FeatureDrift) -> str:
    parts = [f"PSI {_figure(drift.psi)}"]
    if drift.kind == "numeric":
        parts.append(f"KS {_figure(drift.ks_statistic)} (p {_figure(drift.ks_pvalue)})")
    else:
        parts.append(f"JSD {_figure(drift.jsd)}")
    return f"{drift.feature} [{drift.severity.value}]\n" + " · ".join(parts)


def _figure(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3g}"


def _percent(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.1%}"


def _mean(frame: pl.DataFrame, column: str) -> str:
    if column not in frame.columns:
        return "n/a"
    mean = frame.get_column(column).cast(pl.Float64).fill_nan(None).mean()
    return "n/a" if mean is None else f"{float(mean):.4g}"  # type: ignore[arg-type]


def plot_psi_bars(drifts: Sequence[FeatureDrift], path: Path, *, title: str) -> Path:
    """Horizontal PSI bars per feature (worst on top), coloured by severity, with each feature's
    warn and fail thresholds marked. Returns `path`."""
    ranked = list(reversed(_ranked(drifts)))  # barh draws bottom-up: worst last = on top
    figure = _new_figure(6.0, 0.9 + 0.3 * max(1, len(ranked)))
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=10)
    positions = np.arange(len(ranked))
    values = [drift.psi if math.isfinite(drift.psi) else 0.0 for drift in ranked]
    axes.barh(positions, values, color=[SEVERITY_COLOURS[drift.severity] for drift in ranked])
    axes.scatter([d.psi_warn for d in ranked], positions, marker="|", s=160, color="#7a4f00", label="warn", zorder=3)
    axes.scatter([d.psi_fail for d in ranked], positions, marker="|", s=160, color="black", label="fail", zorder=3)
    for position, drift in zip(positions, ranked):
        axes.text(values[position], position, f" {_figure(drift.psi)}", va="center", fontsize=6)
    axes.set_yticks(positions, [drift.feature for drift in ranked], fontsize=7)
    axes.set_xlabel("PSI (reference vs current; linear to 0.25, log above)", fontsize=8)
    # A broken feature can reach PSI 5+; a log tail keeps the 0.1 / 0.25 thresholds readable.
    axes.set_xscale("symlog", linthresh=0.25, linscale=1.5)
    upper = max([0.5, *values]) * 1.5
    axes.set_xlim(0, upper)
    ticks = [tick for tick in (0, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 50) if tick <= upper]
    axes.set_xticks(ticks, [f"{tick:g}" for tick in ticks], fontsize=7)
    if ranked:
        axes.legend(fontsize=7, loc="lower right")
    return _save(figure, path)


def plot_skew_bars(rows: Sequence[tuple[str, float, float]], path: Path, *, title: str) -> Path:
    """Horizontal bars of each feature's mismatch rate (served vs offline), red above its
    tolerance, with the tolerance marked. `rows` are (feature, mismatch_rate, tolerance)."""
    ordered = sorted(rows, key=lambda row: (row[1] - row[2], row[0]))  # worst excess on top
    figure = _new_figure(6.0, 0.9 + 0.3 * max(1, len(ordered)))
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=10)
    positions = np.arange(len(ordered))
    rates = [rate for _, rate, _ in ordered]
    colours = [SEVERITY_COLOURS[Severity.FAIL if rate > tolerance else Severity.PASS] for _, rate, tolerance in ordered]
    axes.barh(positions, rates, color=colours)
    axes.scatter([tolerance for *_, tolerance in ordered], positions, marker="|", s=160, color="black", label="tolerance", zorder=3)
    for position, rate in zip(positions, rates):
        axes.text(rate, position, f" {rate:.2%}", va="center", fontsize=6)
    axes.set_yticks(positions, [name for name, *_ in ordered], fontsize=7)
    axes.set_xlabel("share of served values that differ from offline", fontsize=8)
    axes.set_xlim(0, max([0.01, *rates, *(tolerance for *_, tolerance in ordered)]) * 1.25)
    if ordered:
        axes.legend(fontsize=7, loc="lower right")
    return _save(figure, path)


def markdown_image(path: Path, *, alt: str, max_bytes: int = 400_000) -> str:
    """Markdown showing the PNG inline (base64 data URI, which the Dagster UI renders from
    `MetadataValue.md`) followed by its file path. A PNG over `max_bytes` is only linked by path:
    run storage keeps metadata in its event log, and megabytes per event would bloat it."""
    data = path.read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{path} is not a PNG file (no PNG signature)")
    location = f"`{path}`"
    if len(data) > max_bytes:
        return f"[{alt}]({path.as_posix()}) — {location} ({len(data):,} bytes, over the {max_bytes:,}-byte inline limit)"
    encoded = base64.b64encode(data).decode("ascii")
    return f"![{alt}](data:image/png;base64,{encoded})\n\n{location}"


__all__ = ["markdown_image", "plot_feature_histograms", "plot_psi_bars", "plot_skew_bars"]
