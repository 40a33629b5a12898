"""The local inbox in the console: listing, search, reading, the sandboxed HTML part, downloads."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from mailconduit.sink import ensure_running, list_messages
from webconsole import SignedIn, send_to_sink

HOSTILE_HTML = (
    "<html><body><h1>Quarterly figures</h1>"
    "<script>document.title='pwned'</script>"
    "<img src='http://203.0.113.9/track.png' onerror='alert(1)'>"
    "<form action='http://203.0.113.9/steal'><input name=x></form>"
    "</body></html>"
)


@pytest.fixture
def captured() -> Iterator[int]:
    """A running sink holding two messages; yields the id of the one with HTML and attachments."""
    with ensure_running(port=0):
        plain = EmailMessage()
        plain["From"] = "ops@example.com"
        plain["To"] = "team@example.com"
        plain["Subject"] = "Weekly status"
        plain.set_content("all green\n")
        send_to_sink(plain)

        rich = EmailMessage()
        rich["From"] = "Finance <finance@example.com>"
        rich["To"] = "board@example.com"
        rich["Subject"] = "Figures <b>Q3</b> & more"
        rich.set_content("Figures attached.\n")
        rich.add_alternative(HOSTILE_HTML, subtype="html")
        script = b"<script>alert(1)</script>"
        rich.add_attachment(script, maintype="text", subtype="html", filename="../../evil.html")
        rich.add_attachment(b"col\n1\n", maintype="text", subtype="csv", filename="données.csv")
        send_to_sink(rich)
        yield next(m.id for m in list_messages() if m.subject.startswith("Figures"))


def test_inbox_lists_and_searches(browser: SignedIn, captured: int) -> None:
    page = browser.http.get("/inbox")
    assert page.status_code == 200
    assert "Weekly status" in page.text
    assert "Figures &lt;b&gt;Q3&lt;/b&gt; &amp; more" in page.text  # escaped, not markup
    found = browser.http.get("/inbox", params={"q": "weekly"})
    assert "Weekly status" in found.text and "Figures" not in found.text
    assert "1 message matching" in found.text


def test_message_page_frames_html_in_a_sandbox(browser: SignedIn, captured: int) -> None:
    page = browser.http.get(f"/inbox/{captured}")
    assert page.status_code == 200
    frame = re.search(r"<iframe[^>]*>", page.text)
    assert frame is not None
    assert 'sandbox=""' in frame.group(0)
    assert f'src="/inbox/{captured}/html"' in frame.group(0)
    assert "Figures attached." in page.text
    assert "<script>" not in page.text  # neither the HTML part nor the attachment is inlined
    assert f'href="/inbox/{captured}/attachments/0"' in page.text
    assert "données.csv" in page.text


def test_html_part_is_served_under_a_csp_sandbox(browser: SignedIn, captured: int) -> None:
    response = browser.http.get(f"/inbox/{captured}/html")
    assert response.status_code == 200
    assert response.text.rstrip() == HOSTILE_HTML
    csp = [d.strip() for d in response.headers["content-security-policy"].split(";")]
    assert csp[0] == "sandbox"  # no allow-scripts, no allow-same-origin
    assert "default-src 'none'" in csp
    assert not any(d.startswith("script-src") for d in csp)
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    assert response.headers["x-content-type-options"] == "nosniff"


def test_attachments_are_downloads_with_safe_names(browser: SignedIn, captured: int) -> None:
    evil = browser.http.get(f"/inbox/{captured}/attachments/0")
    assert evil.status_code == 200
    assert evil.content == b"<script>alert(1)</script>"
    assert evil.headers["content-type"] == "application/octet-stream"
    disposition = evil.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert 'filename="evil.html"' in disposition
    assert "/" not in disposition.split("filename=")[1].split(";")[0]
    accented = browser.http.get(f"/inbox/{captured}/attachments/1")
    assert "filename*=UTF-8''donn%C3%A9es.csv" in accented.headers["content-disposition"]
    assert browser.http.get(f"/inbox/{captured}/attachments/7").status_code == 404
    raw = browser.http.get(f"/inbox/{captured}/raw")
    assert raw.headers["content-disposition"].startswith("attachment;")
    assert b"Subject: Figures" in raw.content


def test_inbox_api(browser: SignedIn, captured: int) -> None:
    listing = browser.http.get("/api/inbox", params={"q": "figures"}).json()
    assert listing["total"] == 1
    summary = listing["messages"][0]
    assert summary["id"] == captured and summary["from"] == "Finance <finance@example.com>"
    assert "path" not in summary  # no server paths in the API
    message = browser.http.get(f"/api/inbox/{captured}").json()
    assert message["text"].rstrip() == "Figures attached."
    assert message["html"].rstrip() == HOSTILE_HTML
    assert [a["filename"] for a in message["attachments"]] == ["../../evil.html", "données.csv"]
    html = browser.http.get(f"/api/inbox/{captured}/html")
    assert html.headers["content-security-policy"].startswith("sandbox")
    assert browser.http.get("/api/inbox/424242").status_code == 404


def test_unknown_message_is_a_404_page(browser: SignedIn, captured: int) -> None:
    assert browser.http.get("/inbox/424242").status_code == 404
    assert browser.http.get("/inbox/0").status_code == 422
