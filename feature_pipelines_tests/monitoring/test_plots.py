"""Report plots: valid PNGs of the expected size, one panel per drifting feature, and Markdown that
inlines small images and only links large ones."""

from __future__ import annotations

import base64
import re
import struct
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from feature_pipelines.features.spec import FeatureMonitoring
from feature_pipelines.monitoring.drift import FeatureDrift, Severity, drift_report
from feature_pipelines.monitoring.plots import (
    DPI,
    PNG_SIGNATURE,
    markdown_image,
    plot_feature_histograms,
    plot_psi_bars,
    plot_skew_bars,
)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk (right after the 8-byte signature)."""
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE), f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(0)
    rows = 2_000
    reference = pl.DataFrame(
        {
            "shifted": rng.normal(size=rows),
            "nulls": rng.exponential(size=rows),
            "carrier": rng.choice(["AA", "DL", "UA"], size=rows),
            "stable": rng.poisson(2, size=rows),
        }
    )
    current = pl.DataFrame(
        {
            "shifted": rng.normal(0.8, 1.0, size=rows),
            "nulls": np.where(rng.random(rows) < 0.3, np.nan, rng.exponential(size=rows)),
            "carrier": rng.choice(["AA", "DL", "WN"], size=rows),
            "stable": rng.poisson(2, size=rows),
        }
    )
    return reference, current


@pytest.fixture(scope="module")
def drifts(frames: tuple[pl.DataFrame, pl.DataFrame]) -> list[FeatureDrift]:
    reference, current = frames
    report = drift_report(reference, current, {name: FeatureMonitoring() for name in reference.columns})
    assert [drift.severity for drift in report] == [Severity.FAIL, Severity.FAIL, Severity.FAIL, Severity.PASS]
    return report


def test_histograms_show_one_panel_per_drifting_feature(
    tmp_path: Path, frames: tuple[pl.DataFrame, pl.DataFrame], drifts: list[FeatureDrift]
) -> None:
    path = plot_feature_histograms(*frames, drifts, tmp_path / "reports" / "nested" / "hist.png", title="training vs serving")
    assert path.exists()
    # Three drifting features: a 2 x 2 grid of 5 x 2.8 inch panels (+0.4 inch for the title).
    assert png_size(path) == (2 * 5 * DPI, round((2 * 2.8 + 0.4) * DPI))
    single = plot_feature_histograms(*frames, drifts, tmp_path / "one.png", max_features=1, title="worst only")
    assert png_size(single) == (5 * DPI, round((2.8 + 0.4) * DPI))


def test_histograms_fall_back_to_the_top_features_when_none_drift(
    tmp_path: Path, frames: tuple[pl.DataFrame, pl.DataFrame]
) -> None:
    reference, _ = frames
    calm = drift_report(reference, reference, {name: FeatureMonitoring() for name in reference.columns})
    assert all(drift.severity is Severity.PASS for drift in calm)
    path = plot_feature_histograms(reference, reference, calm, tmp_path / "calm.png", max_features=3, title="no drift")
    assert png_size(path) == (2 * 5 * DPI, round((2 * 2.8 + 0.4) * DPI))
    empty = plot_feature_histograms(reference, reference, [], tmp_path / "empty.png", title="nothing")
    assert png_size(empty) == (5 * DPI, round((2.8 + 0.4) * DPI))


def test_psi_bars_have_one_row_per_feature(tmp_path: Path, drifts: list[FeatureDrift]) -> None:
    path = plot_psi_bars(drifts, tmp_path / "psi" / "bars.png", title="PSI per feature")
    assert png_size(path) == (6 * DPI, round((0.9 + 0.3 * len(drifts)) * DPI))


def test_skew_bars(tmp_path: Path) -> None:
    rows = [("origin_temp_latest", 0.0, 0.0), ("route_dep_delay_mean_24h", 0.04, 0.01), ("carrier_flights_count_24h", 0.002, 0.01)]
    path = plot_skew_bars(rows, tmp_path / "skew" / "bars.png", title="serving vs offline")
    assert png_size(path) == (6 * DPI, round((0.9 + 0.3 * len(rows)) * DPI))


def test_markdown_inlines_the_png_and_names_its_path(tmp_path: Path, drifts: list[FeatureDrift]) -> None:
    path = plot_psi_bars(drifts, tmp_path / "psi.png", title="PSI")
    markdown = markdown_image(path, alt="PSI per feature")
    match = re.match(r"!\[PSI per feature\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown)
    assert match is not None
    assert base64.b64decode(match.group(1)) == path.read_bytes()
    assert f"`{path}`" in markdown


def test_markdown_only_links_a_png_over_the_limit(tmp_path: Path, drifts: list[FeatureDrift]) -> None:
    path = plot_psi_bars(drifts, tmp_path / "psi.png", title="PSI")
    size = path.stat().st_size
    markdown = markdown_image(path, alt="PSI per feature", max_bytes=size - 1)
    assert "data:" not in markdown
    assert markdown.startswith(f"[PSI per feature]({path.as_posix()})")
    assert "data:image/png" in markdown_image(path, alt="PSI per feature", max_bytes=size)


def test_markdown_refuses_a_file_that_is_not_a_png(tmp_path: Path) -> None:
    text = tmp_path / "report.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="not a PNG"):
        markdown_image(text, alt="broken")
