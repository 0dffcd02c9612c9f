"""Feature references ("view:feature"), resolved against the catalog with clear errors."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import astuple, dataclass

from feature_pipelines.features.spec import FeatureView


class UnknownFeatureError(KeyError):
    """A reference to a view or feature the catalog does not declare."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class FeatureReference:
    """A parsed "view:feature" reference: the one way the platform takes such a string apart."""

    view: str
    feature: str

    def __str__(self) -> str:
        return f"{self.view}:{self.feature}"


def split_reference(reference: str) -> FeatureReference | None:
    """Split "view:feature", or None when it is not of that form (no colon, an empty side)."""
    view_name, sep, feature_name = reference.partition(":")
    if not sep or not view_name or not feature_name:
        return None
    return FeatureReference(view_name, feature_name)


def parse_reference(reference: str) -> FeatureReference:
    """Split "view:feature"; anything else is an UnknownFeatureError."""
    parsed = split_reference(reference)
    if parsed is None:
        raise UnknownFeatureError(f"feature reference {reference!r} is not of the form 'view:feature'")
    return parsed


@dataclass(frozen=True)
class ViewRequest:
    """The features asked of one view, in request order."""

    view: FeatureView
    features: tuple[str, ...]


def resolve_references(references: Sequence[str], views: Mapping[str, FeatureView]) -> list[ViewRequest]:
    """Group "view:feature" references by view, keeping the order of first appearance."""
    if not references:
        raise UnknownFeatureError("no features requested: pass references like 'route_delay_stats:route_dep_delay_mean_24h'")
    grouped: dict[str, list[str]] = {}
    for reference in references:
        view_name, feature_name = astuple(parse_reference(reference))
        view = views.get(view_name)
        if view is None:
            raise UnknownFeatureError(f"feature reference {reference!r}: unknown feature view {view_name!r}; known: {sorted(views)}")
        if feature_name not in view.feature_names:
            raise UnknownFeatureError(
                f"feature reference {reference!r}: view {view_name!r} has no feature {feature_name!r}; "
                f"its features: {list(view.feature_names)}"
            )
        chosen = grouped.setdefault(view_name, [])
        if feature_name in chosen:
            raise UnknownFeatureError(f"feature reference {reference!r} is requested twice")
        chosen.append(feature_name)
    return [ViewRequest(views[name], tuple(features)) for name, features in grouped.items()]
