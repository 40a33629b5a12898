"""The console in a real browser (Debian's Chromium driven by Playwright) against
``mailconduit serve`` running as a subprocess with its own MAILCONDUIT_HOME.

Every page visited is saved as a screenshot under test-artifacts/screenshots/ and checked
for the passwords typed along the way (they must never come back in a page).
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import smtplib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailconduit.testing import free_port
from serve_support import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, create_user, serve_env, serving

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
ADMIN = "admin"
ADMIN_PASSWORD = "browser-admin-pass"
WRONG_PASSWORD = "Wr0ng-passw0rd-typed-in-the-form"


@dataclass
class Served:
    """``mailconduit serve`` in a subprocess: where it listens and the secrets of its home."""

    url: str
    home: Path
    sink_password: str
    ca_file: str
    sink_port: int
    secrets: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} is not installed (make test installs the Debian package)")
    home = tmp_path_factory.mktemp("browser-home")
    sink_port = free_port()
    env = serve_env(home, MAILCONDUIT_SINK_PORT=str(sink_port))
    create_user(env, ADMIN, ADMIN_PASSWORD)
    with serving(env) as url:
        credentials = json.loads((home / "sink" / "credentials.json").read_text())
        yield Served(
            url=url,
            home=home,
            sink_password=credentials["password"],
            ca_file=str(home / "sink" / "ca.pem"),
            sink_port=sink_port,
            secrets=[credentials["password"], WRONG_PASSWORD, ADMIN_PASSWORD],
        )


@pytest.fixture(scope="module")
def chromium(request: pytest.FixtureRequest) -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    if SCREENSHOTS.exists():
        shutil.rmtree(SCREENSHOTS)
    SCREENSHOTS.mkdir(parents=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled():
        print(f"\nscreenshots of every page visited: {SCREENSHOTS}")


class Tour:
    """One signed-in browser tab that screenshots every page and checks it for secrets."""

    def __init__(self, page: object, served: Served) -> None:
        from playwright.sync_api import Page

        assert isinstance(page, Page)
        self.page = page
        self.served = served
        self.shots = 0

    def snap(self, name: str) -> None:
        page = self.page
        page.wait_for_load_state("load")
        html = page.content()
        for secret in self.served.secrets:
            assert secret not in html, f"a password appears in the page {page.url}"
        self.shots += 1
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    def sign_in(self) -> None:
        page = self.page
        page.goto(self.served.url + "/")
        assert "/login" in page.url
        self.snap("01-login")
        page.get_by_label("User name").fill(ADMIN)
        page.get_by_label("Password").fill(ADMIN_PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(self.served.url + "/")

    def address_each_row(self, subject: str) -> None:
        """On the export form: through ``local``, to each row's ``email``, with ``subject``."""
        page = self.page
        page.locator("#f-connection").select_option("local")
        page.locator("#f-to").fill("{{ email }}")
        page.locator("#f-subject").fill(subject)


@pytest.fixture
def tour(chromium: object, served: Served) -> Iterator[Tour]:
    from playwright.sync_api import Browser

    assert isinstance(chromium, Browser)
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    guide = Tour(page, served)
    guide.sign_in()
    try:
        yield guide
    finally:
        context.close()


def test_seed_flow_create_test_and_break_a_connection(tour: Tour, served: Served) -> None:
    """Main Menu → Connections → Create connection → Connector Selection → SMTP → Create → Test."""
    page = tour.page
    tour.snap("02-main-menu")
    page.get_by_role("link", name="Connections", exact=True).first.click()
    page.wait_for_url("**/connections")
    tour.snap("03-connections")
    page.get_by_role("link", name="Create connection").click()
    page.wait_for_url("**/connections/new")
    assert page.get_by_role("heading", name="EMails").is_visible()
    tour.snap("04-connector-selection")
    page.locator("#connector-smtp").click()
    page.wait_for_url("**/connections/new/smtp")
    assert page.locator("#f-query").is_disabled() and page.locator("#f-is_source").is_disabled()
    tour.snap("05-smtp-data-provider")

    # Keyboard and the port suggestion: 465 proposes implicit TLS, 587 STARTTLS.
    page.locator('.chip[data-port="465"]').click()
    assert page.locator("#f-port").input_value() == "465"
    assert page.locator("#f-security").input_value() == "tls"
    page.locator('.chip[data-port="587"]').click()
    assert page.locator("#f-security").input_value() == "starttls"

    page.locator("#f-name").fill("sink-relay")
    page.locator("#f-server_url").fill("127.0.0.1 oops")  # a mistake first
    page.locator("#f-port").fill(str(served.sink_port))
    page.locator("#f-username").fill("mailconduit")
    page.locator("#f-password").fill(served.sink_password)
    page.locator("details.advanced > summary").click()
    page.locator("#f-ca_file").fill(served.ca_file)
    page.locator("#create").click()
    error = page.locator("#row-server_url .field-error")
    assert "contains spaces" in error.inner_text()
    assert page.locator("#f-password").input_value() == ""  # never sent back
    tour.snap("06-validation-error")

    page.locator("#f-server_url").fill("127.0.0.1")
    page.locator("#f-password").fill(served.sink_password)
    assert page.locator("#f-security").input_value() == "starttls"  # kept from the chip
    page.locator("#create").click()
    page.wait_for_url("**/connections/sink-relay?notice=created")
    tour.snap("07-created")
    page.locator("#test-connection").click()
    result = page.locator("#test-result")
    assert "Test Connection succeeded" in result.inner_text()
    assert "AUTH" in page.locator("ul.caps").inner_text()
    tour.snap("08-test-succeeded")

    page.locator("#edit-connection").click()
    page.wait_for_url("**/connections/sink-relay/edit")
    assert page.locator("#f-password").input_value() == ""
    tour.snap("09-edit")
    page.locator("#f-password").fill(WRONG_PASSWORD)
    page.locator("#save-test").click()
    result = page.locator("#test-result")
    assert "Test Connection failed" in result.inner_text()
    assert page.locator("#test-stage").inner_text() == "auth"
    tour.snap("10-test-auth-failure")

    page.get_by_role("link", name="Connections", exact=True).first.click()
    row = page.locator('tr[data-connection="sink-relay"]')
    assert "failed" in row.inner_text()
    tour.snap("11-connections-after-tests")


def test_export_flow_to_the_local_inbox(tour: Tour, tmp_path: Path) -> None:
    """Exports → New export → upload a CSV → preview → send → watch it finish → read it."""
    page = tour.page
    data = tmp_path / "customers.csv"
    data.write_text(
        "email,name,plan\nada@example.com,Ada,gold\nbob@example.com,Bob,silver\ncy@example.com,Cy,gold\n",
        encoding="utf-8",
    )
    page.get_by_role("link", name="Exports", exact=True).first.click()
    page.wait_for_url("**/exports")
    tour.snap("12-exports")
    page.locator("#new-export").click()
    page.locator("#f-file").set_input_files(str(data))
    tour.address_each_row("Your {{ plan }} plan, {{ name }}")
    page.locator("#f-body").fill("Hello {{ name }},\nyour plan is {{ plan }}.\n")
    tour.snap("13-new-export")
    page.locator("#preview").click()
    page.wait_for_url("**/exports/new")
    assert page.get_by_role("heading", name="Preview").is_visible()
    assert "Your gold plan, Ada" in page.content()
    tour.snap("14-preview")
    page.locator("#start-export").click()
    page.wait_for_url("**/runs/**")
    tour.snap("15-run-progress")
    page.wait_for_selector("#run-status[data-final]", timeout=30_000)
    page.wait_for_selector("#rows", timeout=TIMEOUT_MS)  # the page reloads with per-row results
    status = page.locator("#run-status").inner_text()
    assert page.locator("#run-state").inner_text() == "finished", status
    assert page.locator("#count-sent").inner_text() == "3", status
    tour.snap("16-run-finished")

    page.get_by_role("link", name="Local inbox", exact=True).first.click()
    page.locator("#q").fill("Ada")
    page.locator("#q").press("Enter")
    page.get_by_role("link", name="Your gold plan, Ada").click()
    assert "Hello Ada" in page.locator("#text-part").inner_text()
    tour.snap("17-inbox-message")


def test_csrf_refusal_from_another_site(tour: Tour, served: Served, tmp_path: Path) -> None:
    """A page on another port of the same host (same site: cookies go along) posts a form."""
    page = tour.page
    page.goto(served.url + "/connections/new/smtp")
    page.locator("#f-name").fill("victim")
    page.locator("#f-server_url").fill("127.0.0.1")
    page.locator("#f-port").fill("2525")
    page.locator("#f-use_ssl").uncheck()
    page.locator("details.advanced > summary").click()
    page.locator("#f-security").select_option("none")
    page.locator("#f-auth_mechanism").select_option("none")
    page.locator("#create").click()
    page.wait_for_url("**/connections/victim?notice=created")

    (tmp_path / "index.html").write_text(
        f'<form method="post" action="{served.url}/connections/victim/delete">'
        '<input type="hidden" name="csrf_token" value="forged"></form>'
        "<script>document.forms[0].submit()</script>",
        encoding="utf-8",
    )

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            pass

    attacker = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=attacker.serve_forever, daemon=True)
    thread.start()
    try:
        page.goto(f"http://127.0.0.1:{attacker.server_address[1]}/index.html")
        page.wait_for_url(served.url + "/connections/victim/delete")
        assert "refused" in page.content()
        tour.snap("18-csrf-refused")
    finally:
        attacker.shutdown()
        attacker.server_close()
        thread.join(5)
    page.goto(served.url + "/connections")
    assert page.locator('tr[data-connection="victim"]').count() == 1
    tour.snap("19-connections-victim-kept")


def test_pages_fit_a_phone_screen(tour: Tour, served: Served) -> None:
    """At 390 px wide nothing overflows sideways; tables turn into cards."""
    page = tour.page
    page.set_viewport_size({"width": 390, "height": 844})
    for path, name in (
        ("/connections", "20-phone-connections"),
        ("/connections/new/smtp", "21-phone-smtp-form"),
        ("/exports", "22-phone-exports"),
    ):
        page.goto(served.url + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than the screen"
        tour.snap(name)


def test_captured_html_runs_no_script(tour: Tour, served: Served) -> None:
    """An HTML message with scripts is shown rendered, in a sandbox where nothing runs."""
    message = EmailMessage()
    message["From"] = "news@example.com"
    message["To"] = "reader@example.com"
    message["Subject"] = "Newsletter with a script"
    message.set_content("Plain version.\n")
    message.add_alternative(
        "<html><body><h1 id='headline'>Big news</h1>"
        "<script>document.body.setAttribute('data-ran', '1'); top.document.title = 'pwned';</script>"
        "<img src=x onerror=\"document.body.setAttribute('data-ran', '2')\"></body></html>",
        subtype="html",
    )
    context = ssl.create_default_context(cafile=served.ca_file)
    with smtplib.SMTP("127.0.0.1", served.sink_port, timeout=10) as smtp:
        smtp.starttls(context=context)
        smtp.login("mailconduit", served.sink_password)
        smtp.send_message(message)

    page = tour.page
    page.goto(served.url + "/inbox?q=newsletter")
    page.get_by_role("link", name="Newsletter with a script").click()
    frame = page.frame_locator("iframe.mailframe")
    assert frame.locator("#headline").inner_text() == "Big news"
    page.wait_for_timeout(300)  # give a script every chance to run
    assert frame.locator("body[data-ran]").count() == 0
    assert page.title() != "pwned"
    assert page.locator("iframe.mailframe").get_attribute("sandbox") == ""
    tour.snap("23-inbox-html-sandboxed")


def test_export_flow_with_an_html_body_and_an_inline_logo(tour: Tour, tmp_path: Path) -> None:
    """New export → data file plus a logo and a PDF → HTML body with a hand-written text part,
    the logo inline (cid:logo), the PDF attached where the row names one → preview → inbox."""
    page = tour.page
    data = tmp_path / "invoices.csv"
    data.write_text(
        "email,name,invoice\nhana@example.com,Hana,hana.pdf\nivo@example.com,Ivo,\n",
        encoding="utf-8",
    )
    logo = tmp_path / "logo.png"
    logo.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))
    invoice = tmp_path / "hana.pdf"
    invoice.write_bytes(b"%PDF-1.4 Hana's invoice")
    page.goto(tour.served.url + "/exports/new")
    page.locator("#f-file").set_input_files(str(data))
    page.locator("#f-files").set_input_files([str(logo), str(invoice)])
    tour.address_each_row("Invoice for {{ name }}")
    page.locator("#html-bodies > summary").click()
    page.locator("#f-html_body").fill(
        '<h1>Invoice</h1><p>Dear {{ name }},</p><p><img src="cid:logo" alt="Logo"></p>'
    )
    page.locator("#f-text_body").fill("Dear {{ name }},\nyour invoice, in plain text.\n")
    page.locator("#f-attach").fill("{{ invoice }}")
    page.locator("#f-inline").fill("logo=logo.png")
    tour.snap("24-new-html-export")
    page.locator("#preview").click()
    page.wait_for_url("**/exports/new")
    first = page.get_by_role("article", name="Preview 1")
    assert "cid:logo (logo.png)" in first.locator(".inline-images").inner_text()
    assert "hana.pdf" in first.locator(".attachments").inner_text()
    assert page.get_by_role("article", name="Preview 2").locator(".attachments").count() == 0
    tour.snap("25-html-preview-inline-logo")
    page.locator("#start-export").click()
    page.wait_for_url("**/runs/**")
    page.wait_for_selector("#run-status[data-final]", timeout=30_000)
    page.wait_for_selector("#rows", timeout=TIMEOUT_MS)
    assert page.locator("#run-state").inner_text() == "finished"
    assert page.locator("#count-sent").inner_text() == "2"

    page.get_by_role("link", name="Local inbox", exact=True).first.click()
    page.locator("#q").fill("Hana")
    page.locator("#q").press("Enter")
    page.get_by_role("link", name="Invoice for Hana").click()
    assert page.locator("#text-part").inner_text().startswith("Dear Hana,\nyour invoice")
    frame = page.frame_locator("iframe.mailframe")
    assert frame.locator("h1").inner_text() == "Invoice"
    assert frame.locator("img").get_attribute("src") == "cid:logo"
    tour.snap("26-inbox-html-message")


def test_a_preset_fills_the_form_and_every_field_stays_editable(tour: Tour, served: Served) -> None:
    """The provider choice fills server, port, security, login method and limits; the user
    changes one of them and adds the OAuth2 app before saving."""
    page = tour.page
    page.goto(served.url + "/connections/new/smtp")
    page.locator("#f-preset").select_option("microsoft365")
    assert page.locator("#f-server_url").input_value() == "smtp.office365.com"
    assert page.locator("#f-port").input_value() == "587"
    assert page.locator("#f-security").input_value() == "starttls"
    assert page.locator("#f-auth_mechanism").input_value() == "xoauth2"
    assert page.locator("#f-rate_per_minute").input_value() == "30"
    assert page.locator("#f-daily_cap").input_value() == "10000"
    assert page.locator("#oauth-settings").get_attribute("open") is not None
    assert page.locator("#f-oauth_provider").input_value() == "microsoft"
    tour.snap("20-preset-filled")

    page.locator("#f-name").fill("m365")
    page.locator("#f-username").fill("reports@example.com")
    page.locator("details.advanced > summary").click()
    page.locator("#f-rate_per_minute").fill("20")  # a filled field stays the user's
    page.locator("#f-oauth_tenant").fill("contoso.onmicrosoft.com")
    page.locator("#f-oauth_client_id").fill("00000000-1111-2222-3333-444444444444")
    page.locator("#create").click()
    page.wait_for_url("**/connections/m365?notice=created")
    assert "00000000-1111-2222-3333-444444444444" in page.locator("#oauth").inner_text()
    assert page.locator("#refresh-token-state").inner_text().startswith("none")
    assert page.locator("#sign-in").is_visible()
    tour.snap("21-oauth-connection")
