"""Interfaces in a real browser (Debian's Chromium driven by Playwright) against
``mailconduit serve`` in a subprocess: one built on a PostgreSQL query and scheduled every
minute runs twice without sending anything twice, one on an uploaded file fails and its
notification arrives in the local inbox, and the charts are on the Main Menu and run page.

A schedule's minute lasts 2 seconds here (MAILCONDUIT_SCHEDULE_MINUTE_SECONDS), so the test
does not wait for minutes. Screenshots go to test-artifacts/screenshots/interfaces/.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailconduit.testing import free_port
from serve_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    TIMEOUT_MS,
    create_user,
    poll,
    serve_env,
    serving,
)

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots" / "interfaces"
ADMIN = "admin"
ADMIN_PASSWORD = "interfaces-admin-pass"
DB_PASSWORD = "Crm-db-pa55word"


@dataclass
class Served:
    url: str
    home: Path
    data: Path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is not installed (make test installs the Debian package)")
    home, data = tmp_path / "serve-home", tmp_path / "data"
    home.mkdir()
    data.mkdir()
    env = serve_env(
        home,
        MAILCONDUIT_SINK_PORT=str(free_port()),
        MAILCONDUIT_DATA_DIRS=str(data),
        MAILCONDUIT_SCHEDULE_MINUTE_SECONDS="2",
    )
    create_user(env, ADMIN, ADMIN_PASSWORD)
    with serving(env) as url:
        yield Served(url, home, data)


def test_interfaces_scheduled_twice_failure_notified_and_charts(
    served: Served, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg
    from playwright.sync_api import sync_playwright

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (email text, name text, active boolean)")
        conn.execute("INSERT INTO customers VALUES ('ann@example.com', 'Ann', true), "
                     "('bob@example.com', 'Bob', true), ('cy@example.com', 'Cy', false)")  # fmt: skip
    db_url = pg_url.replace("postgresql://postgres@", f"postgresql://postgres:{DB_PASSWORD}@")
    people = served.data / "people.csv"
    people.write_text("email,name\nada@example.com,Ada\nnot-an-address,Nobody\n", encoding="utf-8")
    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
    SCREENSHOTS.mkdir(parents=True)
    print(f"\nscreenshots of the interfaces tour: {SCREENSHOTS}")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()

        def snap(name: str) -> None:
            page.wait_for_load_state("load")
            assert DB_PASSWORD not in page.content(), f"the database password is in {page.url}"
            page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

        def fill_message(subject: str) -> None:
            page.locator("#f-connection").select_option("local")
            page.locator("#f-to").fill("{{ email }}")
            page.locator("#f-subject").fill(subject)
            page.locator("#f-body").fill("Hello {{ name }}")

        page.goto(served.url + "/login")
        page.get_by_label("User name").fill(ADMIN)
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(served.url + "/")

        # A database connection, then an interface on a query, every minute.
        page.get_by_role("link", name="Interfaces", exact=True).first.click()
        page.wait_for_url("**/interfaces")
        page.locator("#f-db_name").fill("crm")
        page.locator("#f-db_url").fill(db_url)
        page.locator("#save-database").click()
        page.wait_for_url("**/interfaces?notice=database")
        assert "crm" in page.locator("#databases").inner_text()
        snap("01-interfaces-with-database")
        page.locator("#new-interface").click()
        page.locator("#f-name").fill("crm-weekly")
        page.locator("#f-source-query").check()
        page.locator("#f-database").select_option("crm")
        page.locator("#f-query").fill("SELECT email, name FROM customers WHERE active")
        fill_message("News for {{ name }}")
        page.locator("#f-schedule-every").check()
        page.locator("#f-every_minutes").fill("1")
        snap("02-new-query-interface")
        page.locator("#save-interface").click()
        page.wait_for_url("**/interfaces/crm-weekly?notice=created")
        assert page.locator("#problem-free").is_visible()
        assert "every 1 minute" in page.locator("#schedule").inner_text()
        snap("03-query-interface")

        def finished_runs() -> int:
            page.reload()
            rows = page.locator("#history tbody tr").all_inner_texts()
            return sum("finished" in r and "schedule" in r for r in rows)

        poll(lambda: finished_runs() >= 2, 0.5)
        snap("04-two-scheduled-runs")
        # Stop the schedule so the inbox holds whole runs only, then count what arrived.
        page.locator("#edit").click()
        page.locator("#f-schedule-none").check()
        page.locator("#save-interface").click()
        page.wait_for_url("**/interfaces/crm-weekly?notice=saved")

        # An interface on an uploaded file with a bad row, notifying on failure.
        page.goto(served.url + "/interfaces/new")
        page.locator("#f-name").fill("people")
        page.locator("#f-source-upload").check()
        page.locator("#f-file").set_input_files(str(people))
        fill_message("Hi {{ name }}")
        page.locator("#f-notify_emails").fill("ops@example.com")
        page.locator("#f-notify_when").select_option("failure")
        page.locator("#save-interface").click()
        page.wait_for_url("**/interfaces/people?notice=created")
        page.locator("#run-now").click()
        page.wait_for_url("**/runs/people-*")
        page.wait_for_selector("#rows", timeout=60_000)
        assert page.locator("#chart-throughput").is_visible()
        assert page.locator("#chart-outcomes").is_visible()
        assert page.locator("#failure-reasons").is_visible()
        snap("05-run-page-charts")

        page.get_by_role("link", name="Local inbox", exact=True).first.click()
        page.locator("#q").fill("people")
        page.locator("#q").press("Enter")
        page.get_by_role("link", name="interface people failed", exact=False).first.click()
        assert "FAILED" in page.locator("#text-part").inner_text()
        snap("06-failure-notification")

        page.goto(served.url + "/")
        assert page.locator("#chart-days").is_visible()
        assert "people" in page.locator("#latest-failures").inner_text()
        snap("07-main-menu-charts")
        page.goto(served.url + "/interfaces/crm-weekly")
        runs = [r for r in page.locator("#history tbody tr").all_inner_texts() if "schedule" in r]
        assert all("finished" in r for r in runs), runs
        context.close()
        browser.close()

    # No message went out twice: each scheduled run sent each active customer once.
    monkeypatch.setenv("MAILCONDUIT_HOME", str(served.home))
    from export_support import sink_messages

    news = [m for m in sink_messages() if m.header("Subject").startswith("News for")]
    ids = [m.header("Message-ID") for m in news]
    assert len(ids) == len(set(ids)), "a message was sent twice"
    assert len(news) == 2 * len(runs) and len(runs) >= 2
    assert sorted({m.recipients[0] for m in news}) == ["ann@example.com", "bob@example.com"]
