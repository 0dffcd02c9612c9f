"""Catalog search: words, each a `field:value` or free text, all of which an entry must match.

Each entry is reduced once to its search terms per field (`search_terms`), lower-cased; `FIELDS` says how
a value matches a field's terms (equal to one, or contained in one). The HTML page ships the same terms and
the same table, so the browser's search box and `feature-pipelines catalog QUERY` give the same rows.

    owner:fleet-ml          an owner containing "fleet-ml"
    column:dep_delay        reads raw column dep_delay (or raw_flights.dep_delay)
    entity:tailnum          the entity, or one of its join keys
    tag:domain=flights      a tag (key=value, key or value)
    lifecycle:deprecated    used_by:flight_delay_v1     state:fail (freshness)
    delay 24h               free text: name, view, description, owner, entity, tags
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from feature_pipelines.catalog.entries import Catalog, CatalogEntry

Mode = Literal["exact", "contains"]
TEXT = "text"
FIELDS: dict[str, Mode] = {
    "name": "contains",
    "owner": "contains",
    "tag": "exact",
    "entity": "exact",
    "column": "exact",
    "view": "exact",
    "lifecycle": "exact",
    "service": "exact",
    "training_set": "exact",
    "model": "contains",
    "used_by": "exact",
    "state": "exact",
    TEXT: "contains",
}


def search_terms(entry: CatalogEntry) -> dict[str, list[str]]:
    """What each field of the entry matches against, lower-cased."""
    tags = [term for key, value in entry.tags.items() for term in (f"{key}={value}", key, value)]
    users = [use.name for use in entry.users]
    terms = {
        "name": [entry.name, entry.reference],
        "owner": [owner.strip() for owner in (entry.owner or "").split(",") if owner.strip()],
        "tag": tags,
        "entity": [*(entry.entity or "").split(", "), *entry.join_keys],
        "column": [term for column in entry.lineage for term in (column.column, column.qualified)],
        "view": [entry.view],
        "lifecycle": [entry.lifecycle.value if entry.lifecycle is not None else "undeclared"],
        "service": [use.name for use in entry.uses_of("service")],
        "training_set": [use.name for use in entry.uses_of("training_set")],
        "model": [use.name for use in entry.uses_of("model")],
        "used_by": users,
        "state": [entry.freshness.state.value],
    }
    terms[TEXT] = [entry.name, entry.reference, entry.description, entry.definition, *terms["owner"],
                   *terms["entity"], *tags, *terms["lifecycle"]]
    return {field: sorted({term.lower() for term in values if term}) for field, values in terms.items()}


@dataclass(frozen=True)
class Word:
    """One word of a query: a field and the value it must match (free text: field `text`)."""

    field: str
    value: str

    def matches(self, terms: dict[str, list[str]]) -> bool:
        if FIELDS[self.field] == "exact":
            return self.value in terms[self.field]
        return any(self.value in term for term in terms[self.field])

    def __str__(self) -> str:
        return self.value if self.field == TEXT else f"{self.field}:{self.value}"


def parse_query(query: str) -> list[Word]:
    """The query's words; `x:y` whose `x` is not a field (a "view:feature" reference) is free text."""
    words = []
    for token in query.lower().split():
        field, sep, value = token.partition(":")
        words.append(Word(field, value) if sep and field in FIELDS and value else Word(TEXT, token))
    return words


def search(catalog: Catalog, query: str) -> list[CatalogEntry]:
    """The entries matching every word of `query`, in catalog order (all of them for an empty query)."""
    words = parse_query(query)
    return [entry for entry in catalog.entries if all(word.matches(search_terms(entry)) for word in words)]


def field_help(fields: Sequence[str] = tuple(FIELDS)) -> str:
    return ", ".join(f"{field}:" for field in fields if field != TEXT)
