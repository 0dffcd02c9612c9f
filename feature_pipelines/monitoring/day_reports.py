"""The day's monitoring reports: each monitor's results drawn (PNG beside the report) and laid out as a `Report`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import polars as pl

from feature_pipelines.monitoring.drift import DRIFT_FIGURES, FeatureDrift
from feature_pipelines.monitoring.multivariate import MultivariateDrift
from feature_pipelines.monitoring.plots import plot_feature_histograms, plot_psi_bars, plot_skew_bars
from feature_pipelines.monitoring.report import Image, Report, Table
from feature_pipelines.monitoring.shadow import SHADOW_FIGURES, SHADOW_REPORT_COLUMNS, ShadowReport
from feature_pipelines.monitoring.skew import SKEW_FIGURES, SKEW_REPORT_COLUMNS, SkewReport

SERVING_DRIFT_COLUMNS = (
    "feature", "severity", "psi", "ks_statistic", "ks_pvalue", "null_share_reference", "null_share_current", "reasons",
)
PARTITION_DRIFT_COLUMNS = ("feature", "severity", "psi", "ks_statistic", "counts", "reasons")
NO_SERVED_VALUES = "No served values were logged for stored features on this day."


def skew_report(report: SkewReport, directory: Path, partition: str) -> Report:
    """Mismatch rate bars (when anything was compared) over the per-feature skew table."""
    if not report.features:
        return Report(f"Serving skew {partition}", (NO_SERVED_VALUES,))
    image = plot_skew_bars(
        [(f.reference, f.mismatch_rate, f.tolerance) for f in report.features],
        directory / f"{partition}.png",
        title=f"Served vs offline mismatch rate, {partition}",
    )
    return Report(f"Serving skew {partition}", (Table.of(SKEW_FIGURES, report.features, SKEW_REPORT_COLUMNS),), image)


def serving_drift_report(
    training_name: str,
    reference: pl.DataFrame,
    current: pl.DataFrame,
    drifts: Sequence[FeatureDrift],
    joint: MultivariateDrift,
    directory: Path,
    partition: str,
) -> Report:
    """Histograms of the drifting features, PSI bars, the per-feature table and the joint verdict."""
    histograms = plot_feature_histograms(
        reference, current, drifts, directory / f"{partition}-histograms.png",
        title=f"{training_name} (reference) vs serving {partition}",
    )
    bars = plot_psi_bars(drifts, directory / f"{partition}-psi.png", title=f"PSI per feature, {partition}")
    joint_line = (
        f"Joint distribution: classifier AUC {joint.auc:.3f} ± {joint.auc_std:.3f} "
        f"({joint.severity.value}: {joint.reason})"
    )
    sections = (Image(bars, "PSI per feature"), Table.of(DRIFT_FIGURES, drifts, SERVING_DRIFT_COLUMNS), joint_line)
    return Report(f"Serving drift {partition}", sections, histograms)


def partition_drift_report(results: Mapping[str, Sequence[FeatureDrift]], directory: Path, partition: str) -> Report:
    """PSI bars and the per-feature table of every feature table's day against the day before."""
    everything = [drift for drifts in results.values() for drift in drifts]
    bars = plot_psi_bars(everything, directory / f"{partition}.png",
                         title=f"PSI of each feature table's day vs the day before, {partition}")
    return Report(f"Partition drift {partition}", (Table.of(DRIFT_FIGURES, everything, PARTITION_DRIFT_COLUMNS),), bars)


def shadow_report(reports: Mapping[str, ShadowReport], partition: str) -> Report:
    """Each candidate's summary, then one table of every shared feature's differences."""
    table = Table(
        ("view", *SHADOW_FIGURES.headings(SHADOW_REPORT_COLUMNS)),
        tuple((r.view, *SHADOW_FIGURES.cells(f, SHADOW_REPORT_COLUMNS)) for r in reports.values() for f in r.features),
    )
    return Report(f"Candidate definitions {partition}", (*(r.summary() for r in reports.values()), table))


__all__ = ["partition_drift_report", "serving_drift_report", "shadow_report", "skew_report"]
