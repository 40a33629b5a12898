"""Server-side SVG charts: patterns and legends besides colour, numbers as a table, escaped
labels; the Main Menu, run and connection pages show them with real runs behind them."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from export_support import connect_to, use_free_sink_port, write_csv
from mailconduit import api
from mailconduit.testing import FaultServer
from mailconduit.web.charts import Series, bar_chart, breakdown_chart
from webconsole import Console, SignedIn, running_console

SVG = "{http://www.w3.org/2000/svg}"


def test_bar_chart_draws_each_series_with_its_own_pattern_and_a_legend() -> None:
    chart = bar_chart(
        "c1",
        "Per day",
        ["01-01", "01-02", "<b>"],
        [Series("sent", [3, 5, 0], "solid"), Series("failed", [1, 0, 2], "hatch")],
        limit=6,
        limit_label="cap",
    )
    root = ET.fromstring(str(chart.svg))  # noqa: S314 - our own output
    assert root.get("role") == "img" and root.findtext(f"{SVG}title") == "Per day"
    bars = [r for r in root.iter(f"{SVG}rect") if r.find(f"{SVG}title") is not None]
    titles = [r.findtext(f"{SVG}title") for r in bars]
    assert titles == ["01-01: sent 3", "01-01: failed 1", "01-02: sent 5", "01-02: failed 0",
                      "<b>: sent 0", "<b>: failed 2"]  # fmt: skip
    hatched = [r for r in bars if r.get("fill") == "url(#c1-hatch)"]
    assert len(hatched) == 3, "the failed series is hatched, not only coloured"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "sent" in texts and "failed" in texts and "cap" in texts
    assert "<b>" not in str(chart.svg)
    assert chart.headings == ["", "sent", "failed", "cap"]
    assert chart.rows[1] == ["01-02", "5", "0", "6"]
    tallest = max(float(r.get("height", "0")) for r in bars)
    five = next(r for r in bars if r.findtext(f"{SVG}title") == "01-02: sent 5")
    assert float(five.get("height", "0")) == tallest


def _ticks(chart_svg: str) -> list[str]:
    root = ET.fromstring(chart_svg)  # noqa: S314 - our own output
    # the value axis: tick texts at the left edge (the category labels are ticks too)
    return [
        t.text or ""
        for t in root.iter(f"{SVG}text")
        if t.get("class") == "tick" and t.get("x") == "0"
    ]


def test_counts_get_whole_ticks_and_rates_keep_the_half_way_one() -> None:
    counts = bar_chart("c3", "Rows", ["a", "b"], [Series("sent", [5, 1], "solid")])
    assert _ticks(str(counts.svg)) == ["0", "5"], "no '2.5 rows' tick"
    even = bar_chart("c4", "Rows", ["a", "b"], [Series("sent", [20, 1], "solid")])
    assert _ticks(str(even.svg)) == ["0", "10", "20"]
    rates = bar_chart("c5", "msg/s", ["a", "b"], [Series("rate", [4.5, 1.0], "solid")])
    assert _ticks(str(rates.svg)) == ["0", "2.5", "5"]


def test_breakdown_chart_labels_counts_and_shares() -> None:
    chart = breakdown_chart("c2", "Outcomes", [("sent", 3, "solid"), ("failed", 1, "hatch")])
    root = ET.fromstring(str(chart.svg))  # noqa: S314 - our own output
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "3 (75%)" in texts and "1 (25%)" in texts
    assert chart.rows == [["sent", "3", "75.0%"], ["failed", "1", "25.0%"]]


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[SignedIn]:
    use_free_sink_port(monkeypatch)
    with running_console() as console:
        signed = Console(console.url).signed_in()
        yield signed
        signed.http.close()


def test_pages_show_charts_of_real_runs(
    browser: SignedIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [{"email": f"user{i}@example.com"} for i in range(6)]
    source = write_csv(tmp_path / "people.csv", rows)
    with FaultServer(faults={("RCPT", 2): "550 5.1.1 no such user",
                             ("RCPT", 5): "550 5.1.1 no such user"}) as server:  # fmt: skip
        target = connect_to(monkeypatch, server.port, daily_cap="100")
        report = api.export(str(source), connection=target, to="{{ email }}", subject="s", body="b")
    assert report.failed == 2 and report.sent == 4

    menu = browser.http.get("/").text
    assert 'id="chart-days"' in menu
    today = re.search(r"<th scope=\"row\">(\d\d-\d\d)</th><td>4</td><td>2</td>", menu)
    assert today, "today's numbers are in the table under the chart"
    failures = menu.split('id="latest-failures"')[1].split("</table>")[0]
    assert report.run_id in failures
    assert "550 5.1.1 no such user" in failures, "the Why column says why rows were not sent"

    page = browser.http.get(f"/runs/{report.run_id}").text
    for chart_id in ("chart-throughput", "chart-outcomes", "chart-retries"):
        assert f'id="{chart_id}"' in page
    reasons = page.split('id="failure-reasons"')[1].split("</table>")[0]
    assert "550 5.1.1 no such user" in reasons and "<td data-label=\"Rows\">2</td>" in reasons
    for anchor in re.findall(r'href="#(row-\d+)"', reasons):
        assert f'id="{anchor}"' in page, "a failure reason links to rows on the page"

    usage = browser.http.get(f"/connections/{target}").text
    assert 'id="chart-usage"' in usage and "daily cap" in usage


def test_connection_page_lists_the_last_tests_results(browser: SignedIn) -> None:
    from mailconduit.testing import free_port

    with FaultServer() as server:
        api.create_connection(
            {"name": "relay", "server_url": "127.0.0.1", "port": server.port, "security": "none",
             "auth_mechanism": "none", "from_address": "robot@example.com"}
        )
        assert api.test_connection("relay").ok
    api.update_connection("relay", {"port": free_port()})  # nobody listens there now
    assert not api.test_connection("relay").ok
    assert [t.ok for t in api.recent_tests("relay")] == [False, True]
    table = browser.http.get("/connections/relay").text.split('id="recent-tests"')[1]
    table = table.split("</table>")[0]
    assert table.index("✗ failed") < table.index("✓ passed")
