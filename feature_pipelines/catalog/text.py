"""The catalog in a terminal: one line per feature, or one feature in full."""

from __future__ import annotations

from collections.abc import Sequence

from feature_pipelines.catalog.entries import Catalog, CatalogEntry, Use, UseKind

_COLUMNS = ("feature", "view", "owner", "lifecycle", "fresh", "quality", "drift", "skew")
USE_HEADINGS: dict[UseKind, str] = {"view": "view", "service": "services", "training_set": "training sets",
                                    "model": "models"}


def lifecycle_text(entry: CatalogEntry) -> str:
    return entry.lifecycle.value if entry.lifecycle is not None else "undeclared"


def uses_text(uses: Sequence[Use], *, known: bool = True) -> str:
    """The uses, or "none"; `known` False when nothing was read that could list them (no model registry)."""
    if uses:
        return "; ".join(str(use) for use in uses)
    return "none" if known else "unknown (no model registry read)"


def uses_rows(entry: CatalogEntry, *, models_listed: bool) -> list[tuple[str, str]]:
    """One (heading, uses) row per kind of user: the view, services, training sets, models."""
    return [(USE_HEADINGS[kind], uses_text(entry.uses_of(kind), known=models_listed or kind != "model"))
            for kind in USE_HEADINGS]


def deprecation_text(entry: CatalogEntry) -> str:
    """For a deprecated feature, who still uses it (the names to ask before removing it)."""
    if not entry.deprecated:
        return ""
    users = sorted({f"{use.kind.replace('_', ' ')} {use.name}" for use in entry.users})
    return "deprecated, still used by " + ", ".join(users) if users else "deprecated, used by nobody: safe to remove"


def listing(entries: Sequence[CatalogEntry]) -> str:
    """One aligned line per entry; a deprecated one says who still uses it."""
    rows = [list(_COLUMNS)] + [
        [e.name, e.view, e.owner or "-", lifecycle_text(e), e.freshness.state.value, e.quality.state.value,
         e.drift.state.value, e.skew.state.value]
        for e in entries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    for line_number, entry in enumerate(entries, start=1):
        if entry.deprecated:
            lines[line_number] += f"  <- {deprecation_text(entry)}"
    return "\n".join(lines)


def details(entry: CatalogEntry, *, models_listed: bool, page_url: str | None = None) -> str:
    """Everything the catalog knows of one feature."""
    keys = f" ({', '.join(entry.join_keys)})" if entry.join_keys else ""
    fields = [
        ("definition", entry.definition),
        ("owner", entry.owner or "none declared"),
        ("lifecycle", lifecycle_text(entry) + (f": {deprecation_text(entry)}" if entry.deprecated else "")),
        ("entity", (entry.entity or "none") + keys),
        ("tags", ", ".join(f"{k}={v}" for k, v in entry.tags.items()) or "none"),
        ("pii", "yes" if entry.pii else "no"),
        ("freshness", str(entry.freshness.signal)),
        ("reads", ", ".join(str(column) for column in entry.lineage)),
        *uses_rows(entry, models_listed=models_listed),
        ("quality", str(entry.quality)),
        ("drift", str(entry.drift)),
        ("skew", str(entry.skew)),
    ]
    if page_url:
        fields.append(("page", page_url))
    width = max(len(name) for name, _ in fields)
    head = f"{entry.name}  ({entry.reference}, {entry.dtype})"
    body = [f"  {name.ljust(width)}  {value}" for name, value in fields]
    return "\n".join([head, f"  {entry.description}" if entry.description else "", *body]).replace("\n\n", "\n")


def header(catalog: Catalog, shown: int) -> str:
    lake = f"lake {catalog.lake}" if catalog.lake else "no lake"
    lines = [f"{shown} of {len(catalog.entries)} features; states from {lake} at {catalog.generated_at.isoformat()}"]
    return "\n".join(lines + [f"note: {note}" for note in catalog.notes])
