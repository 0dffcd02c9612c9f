"""What a user sees in the Dagster UI, in a real browser (the system chromium, driven by playwright).

Over the `dagster dev` of conftest, after the week's backfill: the features group's asset graph
shows every feature view, and the route view's node says one partition failed; the view's
partitions tab counts the week materialized and the held-back day failed, and lists the week's
days with green dots and the day that read the emptied raw hour with a red one. Screenshots of
both pages go to the test's tmp dir.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from feature_pipelines.features.catalog import FEATURE_VIEWS
from feature_pipelines_tests.ui.conftest import HELD_BACK_DAY, VIEW, WEEK, DagsterDev, WeekBackfill

playwright = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed: run scripts/setup.sh (it is in the test extras)"
)

# Debian's chromium: the binary itself, or its launcher script.
CHROMIUM_PATHS = ("/usr/lib/chromium/chromium", shutil.which("chromium"), shutil.which("chromium-browser"))
LOAD_TIMEOUT_MS = 60_000
# Tall enough that the features group's graph shows all four views at its opening zoom (the graph
# renders only the nodes in view).
VIEWPORT_HEIGHT = 1800
TOOLBAR_BOTTOM = 140  # px: the page header and the graph's search bar cover what is above  # the first page compiles nothing, but the server answers slowly on 2 busy cores


def _chromium() -> str:
    for path in CHROMIUM_PATHS:
        if path and Path(path).exists():
            return path
    pytest.skip(
        "no chromium on this machine: scripts/setup.sh installs Debian's `chromium` with apt "
        "(playwright cannot download a browser of its own here)"
    )


@pytest.fixture
def page(tmp_path: Path) -> Iterator[playwright.Page]:
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": VIEWPORT_HEIGHT})
            page.set_default_timeout(LOAD_TIMEOUT_MS)
            # The graph computes each view's partition status after the page loads ("Loading..."):
            # on a busy 2-core machine that can take longer than expect's default 5 s.
            playwright.expect.set_options(timeout=LOAD_TIMEOUT_MS)
            # A first visit may open Dagster's newsletter dialog over the page: a user skips it.
            page.add_locator_handler(
                page.get_by_text("Join the Dagster community"), lambda: page.get_by_role("button", name="Skip").click()
            )
            yield page
        finally:
            browser.close()


def _rgb(css_color: str) -> tuple[int, int, int]:
    red, green, blue = (int(part) for part in re.findall(r"\d+", css_color)[:3])
    return red, green, blue


def _looks_green(color: tuple[int, int, int]) -> bool:
    red, green, blue = color
    return green > red + 40 and green > blue


def _looks_red(color: tuple[int, int, int]) -> bool:
    red, green, blue = color
    return red > green + 60 and red > blue + 60


def test_the_ui_shows_the_views_green_and_the_held_back_day_red(
    dagster_dev: DagsterDev, week_backfill: WeekBackfill, page: playwright.Page, tmp_path: Path
) -> None:
    assert week_backfill.status == "COMPLETED_SUCCESS", week_backfill

    # The asset graph of the features group: every view is a node; the route view's says 1 failed.
    page.goto(f"{dagster_dev.url}/locations/feature_pipelines/asset-groups/features")
    for name in [*FEATURE_VIEWS, "raw_flights", "raw_weather"]:
        label = page.get_by_text(name, exact=True).first
        playwright.expect(label).to_be_visible()
        box = label.bounding_box()
        assert box is not None and TOOLBAR_BOTTOM < box["y"] < VIEWPORT_HEIGHT - box["height"], (name, box)
    node = page.locator("div", has=page.get_by_text(VIEW, exact=True)).filter(has_text="Partitions").last
    playwright.expect(node).to_contain_text("(1 failed)")
    page.screenshot(path=tmp_path / "asset_graph.png")

    # The view's partitions tab: the counts, then the days that are not missing, with their dots.
    page.goto(f"{dagster_dev.url}/assets/{VIEW}?view=partitions")
    playwright.expect(page.get_by_text("Failed (1)", exact=True)).to_be_visible()
    playwright.expect(page.get_by_text(f"Materialized ({len(WEEK)})", exact=True)).to_be_visible()
    page.get_by_text(re.compile(r"^Missing \(\d+\)$")).click()  # uncheck: only what ran is listed
    playwright.expect(page.get_by_text(f"{len(WEEK) + 1} Partitions Selected", exact=True)).to_be_visible()
    rows = page.locator("[class*=assetListRow]")
    playwright.expect(rows).to_have_count(len(WEEK) + 1)
    dots = rows.evaluate_all(
        """rows => rows.map(row => [row.innerText.trim().split('\\n')[0],
                                    getComputedStyle(row.querySelector('div[style*="border-radius: 100%"]')).backgroundColor])"""
    )
    colors = {key: _rgb(color) for key, color in dots}
    page.screenshot(path=tmp_path / "partitions.png")
    assert set(colors) == {*WEEK, HELD_BACK_DAY}, colors
    assert all(_looks_green(colors[day]) for day in WEEK), colors
    assert _looks_red(colors[HELD_BACK_DAY]), colors
