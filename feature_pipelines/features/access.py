"""Who may read which features: per-consumer policies checked against feature references.

A consumer (a model, a team, a dashboard) is refused PII-tagged features when its policy says
`exclude_pii`, and features of views outside its `allowed_views` when it has such a list. The
same check guards both paths -- the feature server and `get_historical_features` -- so a model
that may not see a feature in production cannot be trained on it either.

An on-demand feature is refused when any of its stored inputs is: computing a ratio over a PII
value and serving the ratio would leak what the policy keeps back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import astuple, dataclass

from feature_pipelines.features.references import split_reference
from feature_pipelines.features.spec import FeatureView
from feature_pipelines.names import ON_DEMAND_VIEW


class FeatureAccessError(PermissionError):
    """A consumer asked for features its policy refuses; names the consumer and each feature."""

    def __init__(self, consumer: str, refused: Mapping[str, str]) -> None:
        self.consumer = consumer
        self.refused = dict(refused)
        reasons = "; ".join(f"{reference!r} ({why})" for reference, why in self.refused.items())
        super().__init__(f"consumer {consumer!r} may not read feature(s): {reasons}")


@dataclass(frozen=True)
class ConsumerPolicy:
    """What one consumer may read.

    `exclude_pii` defaults to True: a consumer sees personal data only when its configuration
    says so explicitly. `allowed_views` of None means every view; a tuple limits it to those.
    """

    name: str
    exclude_pii: bool = True
    allowed_views: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ValueError("a consumer policy needs a non-empty name")
        if self.allowed_views is not None and isinstance(self.allowed_views, str):
            raise ValueError(
                f"consumer {self.name!r}: allowed_views must be a tuple of view names, not the string "
                f"{self.allowed_views!r}"
            )


def _refusal(reference: str, views: Mapping[str, FeatureView], policy: ConsumerPolicy) -> str | None:
    """Why `policy` refuses this stored "view:feature" reference, or None.

    References the catalog does not know are not this check's business: resolving them raises
    the catalog's own error, which is clearer than a refusal.
    """
    parsed = split_reference(reference)
    view = views.get(parsed.view) if parsed is not None else None
    if parsed is None or view is None or parsed.feature not in view.feature_names:
        return None
    view_name, feature_name = astuple(parsed)
    if policy.allowed_views is not None and view_name not in policy.allowed_views:
        return f"view {view_name!r} is not among its allowed views {list(policy.allowed_views)}"
    if policy.exclude_pii and view.feature(feature_name).pii:
        return "PII, excluded for this consumer"
    return None


def _on_demand_inputs(reference: str, on_demand_inputs: Mapping[str, Sequence[str]] | None) -> Sequence[str] | None:
    """The stored inputs of an "on_demand:<name>" reference, or None for any other reference."""
    parsed = split_reference(reference)
    if parsed is None or parsed.view != ON_DEMAND_VIEW or on_demand_inputs is None:
        return None
    return on_demand_inputs.get(parsed.feature)


def refused_features(
    references: Iterable[str],
    views: Mapping[str, FeatureView],
    policy: ConsumerPolicy,
    *,
    on_demand_inputs: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, str]:
    """Each reference the policy refuses, with the reason, in request order.

    `on_demand_inputs` maps an on-demand feature's name to its stored input references; an
    "on_demand:<name>" reference is refused when any input is.
    """
    refused: dict[str, str] = {}
    for reference in references:
        inputs = _on_demand_inputs(reference, on_demand_inputs)
        if inputs is not None:
            blocked = [i for i in inputs if _refusal(i, views, policy) is not None]
            if blocked:
                refused[reference] = f"computed from refused input(s) {blocked}"
            continue
        why = _refusal(reference, views, policy)
        if why is not None:
            refused[reference] = why
    return refused


def check_feature_access(
    references: Iterable[str],
    views: Mapping[str, FeatureView],
    policy: ConsumerPolicy | None,
    *,
    on_demand_inputs: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """Raise FeatureAccessError naming the consumer and every refused feature, if any.

    A policy of None is an unrestricted caller (no consumer configured), so callers with an
    optional consumer need no branch of their own.
    """
    if policy is None:
        return
    refused = refused_features(references, views, policy, on_demand_inputs=on_demand_inputs)
    if refused:
        raise FeatureAccessError(policy.name, refused)
