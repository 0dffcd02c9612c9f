"""A plan as text: per view where its baseline came from, per changed feature what changed, its
effect on values and drift, its readers, and the breaking verdict with the entry to declare it."""

from __future__ import annotations

from feature_pipelines.monitoring.drift import FeatureDrift
from feature_pipelines.plan.breaking import dtype_effect
from feature_pipelines.plan.diff import ChangeKind, FieldChange
from feature_pipelines.plan.impact import DriftEffect, ValueImpact
from feature_pipelines.plan.lock import declaration_text
from feature_pipelines.plan.planner import FeaturePlan, Plan


def _impact_line(impact: ValueImpact, span: str) -> str:
    largest = f"; largest difference {impact.max_abs_diff:.6g}" if impact.max_abs_diff is not None else ""
    apart = ""
    if impact.only_stored or impact.only_recomputed:
        apart = f" ({impact.only_stored} rows only stored, {impact.only_recomputed} only recomputed)"
    return (f"values: {impact.share_changed:.1%} change on {span}: {impact.changed} of {impact.compared} matched rows "
            f"differ, {impact.null_changes} of them to or from null{apart}{largest}")


def _figures(drift: FeatureDrift) -> str:
    ks = f", ks {drift.ks_statistic:.3f}" if drift.ks_statistic is not None else ""
    return f"psi {drift.psi:.3f}{ks} ({drift.severity.value})"


def _drift_line(effect: DriftEffect) -> str:
    return (f"drift against {effect.training_set} ({effect.reference_rows} rows): stored {_figures(effect.stored)} "
            f"-> recomputed {_figures(effect.recomputed)}")


def _view_change(change: FieldChange) -> str:
    if change.kind is ChangeKind.VIEW_ADDED:
        return "added"
    if change.kind is ChangeKind.VIEW_REMOVED:
        return "removed"
    return change.describe()


def _feature_lines(planned: FeaturePlan, span: str | None) -> list[str]:
    change = planned.change
    lines = [f"  {change.name}: " + "; ".join(c.describe() if c.kind is not ChangeKind.FEATURE_ADDED else "added"
                                               for c in change.changes)]
    if ChangeKind.DTYPE in change.kinds and change.before is not None and change.after is not None:
        lines.append(f"    {dtype_effect(change.before, change.after)}")
    if planned.impact is not None and span is not None:
        lines.append(f"    {_impact_line(planned.impact, span)}")
    if planned.drift is not None:
        lines.append(f"    {_drift_line(planned.drift)}")
    lines += [f"    {note}" for note in planned.notes]
    lines.append(f"    read by: {planned.consumers.describe()}")
    if not planned.breaking:
        lines.append("    not breaking")
        return lines
    status = "declared" if planned.declared else "NOT DECLARED"
    lines += [f"    BREAKING ({status}): {reason}" for reason in planned.breaking]
    if planned.undeclared and planned.from_fingerprint is not None:
        lines.append("    declare it in features.breaking.toml:")
        lines += [f"      {line}" for line in declaration_text(change.reference, planned.from_fingerprint).splitlines()]
    return lines


def plan_text(plan: Plan, *, against: str) -> str:
    """The whole plan; `against` names the baseline ("the lock", "the lake")."""
    if not plan.views:
        return f"plan: the working tree's feature definitions equal those of {against}; nothing to ship"
    lines = [f"plan: the working tree against {against}"]
    for view in plan.views:
        before = view.before.fingerprint if view.before else "-"
        after = view.after.fingerprint if view.after else "-"
        lines.append(f"view {view.view} ({before} -> {after}; baseline from {plan.baseline.origins.get(view.view, 'nothing')})")
        lines += [f"  view {_view_change(c)}" for c in view.changes]
        bounds = plan.compared.get(view.view)
        span = f"({bounds[0].isoformat()}, {bounds[1].isoformat()}]" if bounds else None
        for planned in plan.features:
            if planned.change.view == view.view:
                lines += _feature_lines(planned, span)
    breaking = [f for f in plan.features if f.breaking]
    lines.append(f"verdict: {len(plan.features)} changed feature(s), {len(breaking)} breaking, "
                 f"{len(plan.undeclared)} undeclared")
    return "\n".join(lines)
