"""The monitoring report value and the figures behind it: one declaration per figure, rendered alike everywhere."""

from __future__ import annotations

import argparse
import math
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from feature_pipelines.features.spec import FeatureMonitoring
from feature_pipelines.monitoring import scenarios
from feature_pipelines.monitoring.cli import add_monitoring_parsers
from feature_pipelines.monitoring.drift import DRIFT_FIGURES, feature_drift
from feature_pipelines.monitoring.figures import Figure, Figures, UnknownFigureError
from feature_pipelines.monitoring.plots import plot_skew_bars
from feature_pipelines.monitoring.report import Image, Report, Table
from feature_pipelines.monitoring.skew import SKEW_FIGURES, SKEW_REPORT_COLUMNS, FeatureSkew
from feature_pipelines.monitoring.tables import PARTITION_DRIFT, SERVING_DRIFT, SKEW

DAY = datetime(2024, 3, 1, tzinfo=UTC)


def skew(feature: str = "a", mismatches: int = 3) -> FeatureSkew:
    return FeatureSkew("route_delay_stats", feature, compared=100, mismatches=mismatches, null_mismatches=1, stale_mismatches=0,
                       lagged=2, max_abs_diff=1.234567, mean_abs_diff=0.5, tolerance=0.01)


def test_a_skew_figure_is_one_declaration_seen_in_table_metadata_and_report() -> None:
    figure = skew()
    assert list(SKEW.schema()) == ["day", "view", "feature", "compared", "mismatches", "null_mismatches", "stale_mismatches",
                                   "lagged", "mismatch_rate", "max_abs_diff", "mean_abs_diff", "tolerance", "passed",
                                   "serving_bugs", "restatements", "late_arrivals", "changed_by", "root_cause"]
    row = SKEW.rows(DAY, [figure])[0]
    assert row["feature"] == "a" and row["mismatch_rate"] == 0.03 and row["passed"] is False
    assert figure.as_metadata()["feature"] == "route_delay_stats:a"
    assert list(figure.as_metadata()) == ["feature", "compared", "mismatch_rate", "null_mismatch_rate", "stale_mismatches",
                                          "lag_rate", "max_abs_diff", "mean_abs_diff", "tolerance", "passed",
                                          "serving_bugs", "restatements", "late_arrivals", "changed_by", "root_cause"]
    assert Table.of(SKEW_FIGURES, [figure], SKEW_REPORT_COLUMNS).markdown() == (
        "| feature | compared | mismatch rate | null mismatches | stale | lagged (within SLA) | max abs diff | serving bug "
        "| restated later | late data | root cause | passed |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        "| route_delay_stats:a | 100 | 0.03 | 1 | 0 | 2 | 1.235 | 0 | 0 | 0 |  | False |"
    )


def test_drift_rows_store_nan_as_null_while_the_report_shows_it() -> None:
    drift = feature_drift("x", pl.Series("x", [], dtype=pl.Float64), pl.Series("x", [1.0, 2.0]), FeatureMonitoring())
    assert math.isnan(drift.psi)
    row = SERVING_DRIFT.rows(DAY, [drift], comparison="training_vs_serving")[0]
    assert row["psi"] is None and row["comparison"] == "training_vs_serving" and drift.as_metadata()["psi"] is None
    assert "| nan |" in Table.of(DRIFT_FIGURES, [drift], ["feature", "psi"]).markdown()
    assert list(PARTITION_DRIFT.schema())[:3] == ["day", "comparison", "feature"]
    with pytest.raises(ValueError, match="comparison"):
        PARTITION_DRIFT.rows(DAY, [drift])


def test_a_projection_naming_an_undeclared_figure_is_an_error() -> None:
    with pytest.raises(UnknownFigureError, match="'missing'"):
        Figures((Figure("a", lambda x: x),), metadata_order=("a", "missing"))
    with pytest.raises(UnknownFigureError, match="'nope'"):
        SKEW_FIGURES.headings(["nope"])


def test_a_report_inlines_its_image_in_the_ui_and_links_it_in_the_file(tmp_path: Path) -> None:
    png = plot_skew_bars([("v:a", 0.03, 0.01)], tmp_path / "2024-03-01.png", title="t")
    report = Report("Serving skew 2024-03-01", ("intro", Table(("a", "b"), ((1.23456, None),)), Image(png, "bars")), png)
    body = "intro\n\n| a | b |\n|---|---|\n| 1.235 |  |\n\n" + Image(png, "bars").markdown()
    assert report.markdown().startswith("## Serving skew 2024-03-01\n\n![Serving skew 2024-03-01](data:image/png;base64,")
    assert report.markdown().endswith(f"\n\n{body}\n")
    path = report.write(tmp_path / "reports", "2024-03-01")
    assert path == tmp_path / "reports" / "2024-03-01.md"
    assert path.read_text() == f"## Serving skew 2024-03-01\n\n![Serving skew 2024-03-01](2024-03-01.png)\n\n{body}\n"


def test_a_report_without_image_is_the_same_in_the_ui_and_the_file(tmp_path: Path) -> None:
    report = Report("Candidate definitions d", ("summary",))
    assert report.markdown() == "## Candidate definitions d\n\n\n\nsummary\n"
    assert report.write(tmp_path, "d").read_text() == report.markdown()


def test_inject_skew_offers_exactly_the_registered_scenarios() -> None:
    parser = argparse.ArgumentParser()
    add_monitoring_parsers(parser.add_subparsers())
    for name in scenarios.SCENARIOS:
        assert parser.parse_args(["inject-skew", name]).scenario == name
    assert list(scenarios.SCENARIOS) == ["midnight-window", "zero-imputation", "local-day-boundary", "delays-in-seconds",
                                       "rounded-values", "stale-store"]
    with pytest.raises(SystemExit):
        parser.parse_args(["inject-skew", "not-a-scenario"])
