"""Each feature asset links to the catalog: its view's features (`?q=view:`) and each feature's anchor, on the
feature server people reach (FEATURE_PIPELINES_SERVER_URL)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from dagster import MarkdownMetadataValue, UrlMetadataValue

from feature_pipelines.catalog.build import project_catalog
from feature_pipelines.catalog.html import render_page
from feature_pipelines.catalog.links import SERVER_URL_ENV
from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines.orchestration.feature_assets import build_feature_asset
from feature_pipelines.settings import ReplayClock, Settings


def test_a_feature_asset_links_to_its_features_on_the_served_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SERVER_URL_ENV, "https://features.example/")
    view = FEATURE_VIEWS["origin_weather"]
    settings = Settings("local", str(tmp_path / "lake"), str(tmp_path / "landing"), ReplayClock(timedelta(0)))
    asset = build_feature_asset(view, settings)
    metadata = asset.specs_by_key[asset.key].metadata
    assert metadata["catalog"] == UrlMetadataValue("https://features.example/catalog?q=view:origin_weather")
    links = metadata["catalog_features"]
    assert isinstance(links, MarkdownMetadataValue)
    assert links.md_str.splitlines() == [
        f"- [{name}](https://features.example/catalog#{name})" for name in view.feature_names
    ]


def test_every_link_target_is_an_anchor_of_the_page_and_the_page_loads_nothing_else() -> None:
    page = render_page(project_catalog(None, datetime(2013, 1, 8, tzinfo=UTC)))
    for view in FEATURE_VIEWS.values():
        for name in view.feature_names:
            assert page.count(f'id="{name}"') == 1, name
    assert "http" not in page and "<link" not in page and " src=" not in page
