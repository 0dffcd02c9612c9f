"""The catalog as people use it: the `catalog` verb in a terminal, and its page served at /catalog by the
feature server (the app `serve` runs, under uvicorn on a free loopback port, in this process: a `serve`
child would spend most of the test importing what this process has already imported), searched in
Debian's chromium (headless, driven by playwright).

The page is written by the verb over a real lake of states; the server answers 404 naming the command until
it exists. In the browser, typing a query shows exactly the rows `search()` gives, a `?q=` link opens
filtered, a `#feature` anchor lands on its entry; a screenshot is saved and checked loosely (its size, and
that it is not blank).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from PIL import Image

from feature_pipelines.catalog.build import project_catalog
from feature_pipelines.catalog.entries import Catalog
from feature_pipelines.catalog.search import search
from feature_pipelines.cli import main
from feature_pipelines.offline.delta_store import DeltaStore
from feature_pipelines.serving.cli import REQUEST_LOG_ENV_VAR, app_from_env
from feature_pipelines_tests.catalog.conftest import AIRCRAFT, WRITTEN_AT
from feature_pipelines_tests.serving.serve_process import free_port
from feature_pipelines_tests.ui.test_browser_smoke import _chromium

playwright = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: run scripts/setup.sh (it is in the test extras)"
)

pytestmark = [pytest.mark.services]
VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture
def lake_env(state_lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"FEATURE_PIPELINES_LAKE_ROOT": str(state_lake), "FEATURE_PIPELINES_NOW": WRITTEN_AT.isoformat(),
           "FEATURE_PIPELINES_CATALOG_PAGE": str(tmp_path / "site" / "catalog.html")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def catalog(state_lake: Path) -> Catalog:
    return project_catalog(DeltaStore(root=str(state_lake)), WRITTEN_AT)


def test_the_verb_lists_matches_one_line_each_and_shows_one_feature_in_full(
    lake_env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["catalog", "owner:fleet-ml"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("3 of 29 features; states from lake")
    rows = {line.split()[0]: line.split() for line in lines if line.startswith("aircraft_")}
    assert set(rows) == set(AIRCRAFT.feature_names)
    # feature, view, owner, lifecycle, fresh, quality, drift, skew
    assert rows["aircraft_distance_sum_24h"][1:] == [
        "aircraft_utilisation", "fleet-ml@feature-pipelines.example", "experimental", "pass", "pass", "pass", "fail"]
    assert main(["catalog", "column:no_such_column"]) == 1
    assert "no feature matches 'column:no_such_column'" in capsys.readouterr().out
    assert main(["catalog", "--feature", "aircraft_dep_delay_mean_24h"]) == 0
    shown = capsys.readouterr().out
    assert "reads          raw_flights.dep_delay, raw_flights.dep_known_at (time), raw_flights.tailnum (key)" in shown
    assert "services       none" in shown and "quality        fail:" in shown
    assert "page           http://127.0.0.1:6566/catalog#aircraft_dep_delay_mean_24h" in shown


@pytest.fixture
def server(lake_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The server's base URL: `serve`'s app, configured from the environment as its workers are."""
    monkeypatch.setenv(REQUEST_LOG_ENV_VAR, "0")
    running = uvicorn.Server(uvicorn.Config(app_from_env(), host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the feature server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{running.config.port}"
    finally:
        running.should_exit = True
        thread.join(timeout=30)


@pytest.fixture
def page(tmp_path: Path) -> Iterator[playwright.Page]:
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            yield browser.new_page(viewport=VIEWPORT)
        finally:
            browser.close()


def _visible(page: playwright.Page) -> list[str]:
    return page.eval_on_selector_all("article.feature:not([hidden])", "nodes => nodes.map(n => n.id)")


def test_the_served_page_searches_like_the_terminal(
    server: str, page: playwright.Page, catalog: Catalog, lake_env: dict[str, str], tmp_path: Path
) -> None:
    missing = httpx.get(f"{server}/catalog", timeout=10)
    assert missing.status_code == 404 and "feature-pipelines catalog --html" in missing.json()["detail"]
    assert main(["catalog", "--html"]) == 0
    assert Path(lake_env["FEATURE_PIPELINES_CATALOG_PAGE"]).is_file()

    page.goto(f"{server}/catalog")
    playwright.expect(page.locator("#count")).to_have_text(f"{len(catalog.entries)} of {len(catalog.entries)} features")
    page.locator("#q").press_sequentially("owner:fleet-ml")
    playwright.expect(page.locator("#count")).to_have_text(f"3 of {len(catalog.entries)} features")
    assert _visible(page) == [entry.name for entry in search(catalog, "owner:fleet-ml")]
    playwright.expect(page.locator("#aircraft_distance_sum_24h .badge.fail")).to_have_text("skew fail")

    for query in ("column:dep_delay", "entity:origin tag:domain=flights", "used_by:flight_delay_v2 7d", "visibility"):
        page.locator("#q").fill(query)
        assert _visible(page) == [entry.name for entry in search(catalog, query)], query
    page.locator("#q").fill("owner:nobody")
    playwright.expect(page.get_by_text("No feature matches this search.")).to_be_visible()

    page.goto(f"{server}/catalog?q=column:visib#origin_visib_latest")
    assert _visible(page) == ["origin_visib_latest"]
    assert page.evaluate("document.querySelector(':target').id") == "origin_visib_latest"
    page.goto(f"{server}/catalog?q=view:aircraft_utilisation")
    shot = tmp_path / "catalog.png"
    page.screenshot(path=str(shot))
    with Image.open(shot) as image:
        assert image.size == (VIEWPORT["width"], VIEWPORT["height"])
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 50, "the screenshot is (nearly) blank"
