"""Where the catalog page lives and how to link to a feature on it: the file the feature server serves at
GET /catalog, and the URL an asset's metadata points at (`<server>/catalog#<feature>`).

    FEATURE_PIPELINES_CATALOG_PAGE   the page file (default: catalog.html in the reports folder, see settings)
    FEATURE_PIPELINES_SERVER_URL     the feature server as people reach it (default http://127.0.0.1:6566)
"""

from __future__ import annotations

import os
from pathlib import Path

CATALOG_PAGE_ENV = "FEATURE_PIPELINES_CATALOG_PAGE"
SERVER_URL_ENV = "FEATURE_PIPELINES_SERVER_URL"
DEFAULT_SERVER_URL = "http://127.0.0.1:6566"
CATALOG_ROUTE = "/catalog"
PAGE_NAME = "catalog.html"


def catalog_page_path() -> Path:
    """The page `feature-pipelines catalog --html` writes by default and the server serves."""
    configured = os.environ.get(CATALOG_PAGE_ENV, "").strip()
    if configured:
        return Path(configured)
    from feature_pipelines.settings import load_settings  # the environment, checked; ~1 s of imports

    return load_settings().reports_dir / PAGE_NAME


def server_url() -> str:
    return (os.environ.get(SERVER_URL_ENV, "").strip() or DEFAULT_SERVER_URL).rstrip("/")


def anchor(feature: str) -> str:
    """A feature's stable anchor on the page: its name (snake_case, unique across views)."""
    return feature


def feature_url(feature: str, base: str | None = None) -> str:
    return f"{base or server_url()}{CATALOG_ROUTE}#{anchor(feature)}"


def view_url(view: str, base: str | None = None) -> str:
    """The page filtered to one view's features (the page reads its query from `?q=`)."""
    return f"{base or server_url()}{CATALOG_ROUTE}?q=view:{view}"
