"""The server-side charts as Chromium draws them at a 1280-px-wide window: the text of a
chart in a card of the run page, and on the Main Menu, is at least 11 CSS px as rendered
(the font size times the chart's on-screen scale), not shrunk with the drawing. Screenshots
go to test-artifacts/screenshots/interfaces/ for a person to look at."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from export_support import connect_to, use_free_sink_port, write_csv
from mailconduit import api
from mailconduit.accounts import users
from mailconduit.testing import FaultServer
from serve_support import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS
from webconsole import ADMIN, ADMIN_PASSWORD, Console, running_console

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots" / "interfaces"
#: The smallest rendered size a chart's text may have, in CSS px.
READABLE_PX = 11.0
#: Rendered size of each text of a chart: its font size times the chart's scale on screen,
#: and the height of its box; and the chart's width.
MEASURE = """svg => ({
  width: svg.getBoundingClientRect().width,
  texts: [...svg.querySelectorAll('text')].map(t => ({
    text: t.textContent,
    size: parseFloat(getComputedStyle(t).fontSize) * t.getScreenCTM().a,
    height: t.getBoundingClientRect().height,
  })),
})"""


@pytest.fixture
def console(monkeypatch: pytest.MonkeyPatch) -> Iterator[Console]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is not installed (make test installs the Debian package)")
    use_free_sink_port(monkeypatch)
    with running_console() as running:
        yield running


def assert_readable(measured: dict[str, Any], what: str) -> None:
    texts = measured["texts"]
    assert texts, f"{what}: no text"
    small = [t for t in texts if t["size"] < READABLE_PX or t["height"] < READABLE_PX]
    assert small == [], f"{what} ({measured['width']:.0f} px wide): text too small: {small}"


def test_chart_text_is_readable_in_a_card_at_1280_px(
    console: Console, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import sync_playwright

    users.create_user(ADMIN, ADMIN_PASSWORD)
    rows = [{"email": f"user{i}@example.com"} for i in range(12)]
    source = write_csv(tmp_path / "people.csv", rows)
    with FaultServer(faults={("RCPT", 3): "550 5.1.1 no such user"}) as server:
        target = connect_to(monkeypatch, server.port)
        report = api.export(str(source), connection=target, to="{{ email }}", subject="s", body="b")
    assert report.failed == 1
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.goto(console.url + "/login")
        page.get_by_label("User name").fill(ADMIN)
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(console.url + "/")

        page.goto(f"{console.url}/runs/{report.run_id}")
        page.wait_for_selector("#chart-throughput")
        for chart_id in ("chart-throughput", "chart-outcomes", "chart-retries"):
            measured = page.locator(f"#{chart_id}").evaluate(MEASURE)
            assert measured["width"] < 400, "the run page's charts sit in cards side by side"
            assert_readable(measured, chart_id)
        page.screenshot(path=str(SCREENSHOTS / "charts-run-page.png"), full_page=True)
        page.locator(".charts-grid").first.screenshot(
            path=str(SCREENSHOTS / "charts-run-page-cards.png")
        )

        page.goto(console.url + "/")
        measured = page.locator("#chart-days").evaluate(MEASURE)
        assert_readable(measured, "chart-days")
        page.locator("#chart-days").screenshot(path=str(SCREENSHOTS / "charts-main-menu.png"))

        # A narrow window (a phone): the text keeps its size, the bars get narrower.
        page.set_viewport_size({"width": 380, "height": 800})
        page.goto(f"{console.url}/runs/{report.run_id}")
        assert_readable(page.locator("#chart-outcomes").evaluate(MEASURE), "narrow chart-outcomes")
        context.close()
        browser.close()
