"""The monitoring assets' checks: their names and how a monitor's result becomes a Dagster check result.

FAIL severity gives a failed ERROR check, WARN a failed WARN check; the skew check is always ERROR
(it blocks), a candidate definition that differs only warns (a change may be the point of it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dagster import AssetCheckResult, AssetCheckSeverity, MetadataValue

from feature_pipelines.monitoring.drift import FeatureDrift, Severity, worst
from feature_pipelines.monitoring.multivariate import MultivariateDrift
from feature_pipelines.monitoring.shadow import ShadowReport
from feature_pipelines.monitoring.skew import SkewReport

SKEW_CHECK = "served_values_match_offline"
FEATURE_DRIFT_CHECK = "features_within_drift_thresholds"
MULTIVARIATE_CHECK = "joint_distribution_within_threshold"


def partition_drift_check(view_name: str) -> str:
    return f"{view_name}_partition_drift"


def shadow_check(view_name: str) -> str:
    return f"{view_name}_candidate_matches_current"


def check_severity(level: Severity) -> AssetCheckSeverity:
    return AssetCheckSeverity.ERROR if level is Severity.FAIL else AssetCheckSeverity.WARN


def skew_check_result(report: SkewReport, day: str) -> AssetCheckResult:
    """Fails naming every feature whose mismatch rate passed its tolerance, with its three-way split
    (serving bug / restated later / late data) and root cause, and examples."""
    if not report.features:
        description = f"{day}: no served values of stored features could be compared yet"
    elif report.passed:
        description = (f"{day}: all {len(report.features)} served features ({report.on_demand_compared} on-demand, "
                       "recomputed offline) match the offline store within tolerance")
    else:
        description = f"{day}: training/serving skew in {len(report.failing)} feature(s): " + "; ".join(
            f.summary() for f in report.failing
        )
    description += report.awaiting_note()
    return AssetCheckResult(
        check_name=SKEW_CHECK,
        passed=report.passed,
        severity=AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "failing_features": MetadataValue.json([f.reference for f in report.failing]),
            "log_rows": report.log_rows,
            "examples": MetadataValue.json({f.reference: list(f.examples) for f in report.failing}),
            "root_causes": MetadataValue.json(report.root_causes()),
            "three_way": MetadataValue.json(report.three_way_counts()),
            "on_demand_compared": report.on_demand_compared,
            "awaiting_raw": MetadataValue.json(report.awaiting_raw),
        },
    )


def drift_check_result(check_name: str, what: str, drifts: Sequence[FeatureDrift]) -> AssetCheckResult:
    """Passes when no feature drifted past its thresholds; otherwise names the features, at the worst severity."""
    level = worst(*(d.severity for d in drifts)) if drifts else Severity.PASS
    flagged = [d for d in drifts if d.severity is not Severity.PASS]
    description = (
        f"{what}: no feature drifted past its thresholds ({len(drifts)} compared)"
        if not flagged
        else f"{what}: drift in "
        + "; ".join(f"{d.feature} [{d.severity.value}] {', '.join(d.reasons)}" for d in flagged)
    )
    return AssetCheckResult(
        check_name=check_name,
        passed=level is Severity.PASS,
        severity=check_severity(level),
        description=description,
        metadata={
            "drifting_features": MetadataValue.json([d.feature for d in flagged]),
            "figures": MetadataValue.json([d.as_metadata() for d in drifts]),
        },
    )


def multivariate_check_result(joint: MultivariateDrift) -> AssetCheckResult:
    """The domain classifier's verdict on the joint distribution."""
    return AssetCheckResult(
        check_name=MULTIVARIATE_CHECK,
        passed=joint.severity is Severity.PASS,
        severity=check_severity(joint.severity),
        description=f"classifier AUC {joint.auc:.3f} ({joint.severity.value}): {joint.reason}",
        metadata={k: v for k, v in joint.as_metadata().items() if v is not None},
    )


def shadow_check_results(reports: Mapping[str, ShadowReport]) -> list[AssetCheckResult]:
    """One WARN check per candidate: passes when the candidate gives the current values."""
    return [
        AssetCheckResult(
            check_name=shadow_check(name),
            passed=report.identical,
            severity=AssetCheckSeverity.WARN,
            description=report.summary(),
            metadata={
                "features": MetadataValue.json([f.as_metadata() for f in report.features]),
                "examples": MetadataValue.json({f.feature: list(f.examples) for f in report.features if f.examples}),
                "only_in_current": report.only_in_current,
                "only_in_candidate": report.only_in_candidate,
            },
        )
        for name, report in reports.items()
    ]


__all__ = [
    "FEATURE_DRIFT_CHECK",
    "MULTIVARIATE_CHECK",
    "SKEW_CHECK",
    "check_severity",
    "drift_check_result",
    "multivariate_check_result",
    "partition_drift_check",
    "shadow_check",
    "shadow_check_results",
    "skew_check_result",
]
