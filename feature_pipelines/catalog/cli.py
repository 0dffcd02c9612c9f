"""The `catalog` verb: search the features in the terminal, show one in full, or write the HTML page."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from feature_pipelines.catalog.links import catalog_page_path, feature_url


def add_catalog_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register `catalog` on the CLI's subparsers."""
    parser = subparsers.add_parser(
        "catalog", help="search the features: owner, lineage, users, freshness, quality, drift, skew",
        description="Search the feature catalog. QUERY words are all matched: owner:X, tag:X, entity:X, column:X "
        "(a raw column), view:X, lifecycle:X, service:X, training_set:X, model:X, used_by:X, state:X, or free text.",
    )
    parser.add_argument("query", nargs="*", help="e.g. owner:fleet-ml, column:dep_delay, 'delay 24h'")
    parser.add_argument("--feature", help="show one feature in full (its name or view:feature)")
    parser.add_argument("--html", nargs="?", const="", default=None, metavar="PATH",
                        help="write the static page to PATH (bare: the page the feature server serves at /catalog)")
    parser.add_argument("--no-lake", action="store_true", help="declarations only: read no state from the lake")
    parser.set_defaults(handler=cmd_catalog)
    return parser


def cmd_catalog(args: argparse.Namespace) -> int:
    """Print the matching features (exit 1 when none match), one feature in full, and/or write the page."""
    from feature_pipelines.catalog.build import project_catalog
    from feature_pipelines.catalog.entries import UnknownCatalogFeatureError
    from feature_pipelines.catalog.html import write_page
    from feature_pipelines.catalog.search import field_help, search
    from feature_pipelines.catalog.text import details, header, listing
    from feature_pipelines.orchestration.clock import read_clock
    from feature_pipelines.orchestration.resources_by_env import lake_for
    from feature_pipelines.settings import load_settings

    store = None if args.no_lake else lake_for(load_settings()).store()
    catalog = project_catalog(store, read_clock())
    if args.html is not None:
        path = write_page(catalog, Path(args.html) if args.html else catalog_page_path())
        print(f"wrote the catalog page ({len(catalog.entries)} features) to {path}")
        if not args.query and not args.feature:
            return 0
    if args.feature:
        try:
            entry = catalog.entry(args.feature)
        except UnknownCatalogFeatureError as error:
            print(f"catalog: {error}", file=sys.stderr)
            return 2
        print(details(entry, models_listed=catalog.models_listed, page_url=feature_url(entry.name)))
        return 0
    query = " ".join(args.query)
    found = search(catalog, query)
    print(header(catalog, len(found)))
    if not found:
        print(f"no feature matches {query!r} (fields: {field_help()}; other words are free text)")
        return 1
    print(listing(found))
    return 0
