"""A connection's ``ca_file`` from the console and the REST API: only the sink's CA or a file
under MAILCONDUIT_CA_DIRS, refused the same way whether the file exists or not; the CLI
(the operator) may set any path, and an edit that keeps the stored path is accepted."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mailconduit import api
from mailconduit.web.cafile import CA_DIRS_ENV
from webconsole import SignedIn, form_values

VALID = {
    "name": "relay",
    "server_url": "127.0.0.1",
    "port": 2525,
    "security": "starttls",
    "username": "robot@example.com",
    "password": "Pa55-w0rd-never-shown",
}


@pytest.fixture
def folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """An allowed CA folder with a bundle in it, and outside it a file that exists and one
    that does not."""
    allowed = tmp_path / "cas"
    allowed.mkdir()
    bundle = allowed / "corp.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    outside = tmp_path / "private.txt"
    outside.write_text("not for the console\n")
    monkeypatch.setenv(CA_DIRS_ENV, str(allowed))
    return {
        "allowed": allowed,
        "bundle": bundle,
        "exists": outside,
        "missing": tmp_path / "no-such-file.pem",
    }


def _ca_error(response: Any) -> str:
    assert response.status_code == 422, response.text
    errors = {d["loc"][-1]: d["msg"] for d in response.json()["detail"]}
    assert set(errors) == {"ca_file"}
    return str(errors["ca_file"])


def test_rest_refuses_a_ca_file_outside_the_folders_alike_whether_it_exists(
    browser: SignedIn, folders: dict[str, Path]
) -> None:
    existing = _ca_error(
        browser.api("POST", "/api/connections", json={**VALID, "ca_file": str(folders["exists"])})
    )
    missing = _ca_error(
        browser.api("POST", "/api/connections", json={**VALID, "ca_file": str(folders["missing"])})
    )
    assert existing == missing
    assert CA_DIRS_ENV in existing and str(folders["exists"]) not in existing
    assert [c.name for c, _ in api.list_connections()] == ["local"]


@pytest.mark.parametrize("how", ["dotdot", "link", "relative"])
def test_rest_refuses_paths_that_only_look_inside_a_folder(
    browser: SignedIn, folders: dict[str, Path], how: str
) -> None:
    if how == "dotdot":
        value = f"{folders['allowed']}/../{folders['exists'].name}"
    elif how == "link":
        link = folders["allowed"] / "link.pem"
        link.symlink_to(folders["exists"])
        value = str(link)
    else:
        value = "cas/corp.pem"
    _ca_error(browser.api("POST", "/api/connections", json={**VALID, "ca_file": value}))


def test_rest_accepts_a_file_under_the_folders_and_the_sinks_ca(
    browser: SignedIn, folders: dict[str, Path]
) -> None:
    created = browser.api(
        "POST", "/api/connections", json={**VALID, "ca_file": str(folders["bundle"])}
    )
    assert created.status_code == 201, created.text
    assert api.get_connection("relay").ca_file == str(folders["bundle"])
    sink_ca = api.get_connection("local").ca_file
    changed = browser.api("PATCH", "/api/connections/relay", json={"ca_file": sink_ca})
    assert changed.status_code == 200, changed.text
    assert api.get_connection("relay").ca_file == sink_ca


def test_rest_patch_refuses_a_new_outside_path_but_keeps_the_operators(
    browser: SignedIn, folders: dict[str, Path], cli: Any
) -> None:
    # The operator sets any path with the CLI.
    made = cli(
        "connections", "create", "relay", "--server-url", "127.0.0.1", "--port", "2525",
        "--auth", "none", "--ca-file", str(folders["exists"]),
    )  # fmt: skip
    assert made.code == 0, made.output
    assert api.get_connection("relay").ca_file == str(folders["exists"])
    patch = {"ca_file": str(folders["missing"])}
    _ca_error(browser.api("PATCH", "/api/connections/relay", json=patch))
    assert api.get_connection("relay").ca_file == str(folders["exists"])
    kept = browser.api(
        "PATCH",
        "/api/connections/relay",
        json={"timeout_ms": 9000, "ca_file": str(folders["exists"])},
    )
    assert kept.status_code == 200, kept.text
    assert api.get_connection("relay").timeout_ms == 9000


def _form(browser: SignedIn, path: str, **changes: str) -> dict[str, str]:
    values = form_values(browser.http.get(path).text, "connection-form")
    values.pop("csrf_token")
    values.update(changes)
    return values


def _row_error(page: str) -> str:
    row = re.search(r'id="row-ca_file">(.*?)</div>\s*<div', page, re.S)
    assert row and "has-error" in page, page
    return re.sub(r"<[^>]+>", " ", row.group(1))


@pytest.mark.parametrize("action", ["create", "test"])
def test_form_refuses_an_outside_ca_file_next_to_the_field_without_probing(
    browser: SignedIn, folders: dict[str, Path], action: str
) -> None:
    answers = []
    for which in ("exists", "missing"):
        form = _form(
            browser,
            "/connections/new/smtp",
            **{k: str(v) for k, v in VALID.items()},
            ca_file=str(folders[which]),
            action=action,
        )
        page = browser.post_form("/connections/new/smtp", form)
        assert page.status_code == 422
        assert "Test Connection" not in re.sub(r"<button.*?</button>", "", page.text, flags=re.S)
        answers.append(_row_error(page.text).replace(str(folders[which]), "PATH"))
    assert answers[0] == answers[1] and CA_DIRS_ENV in answers[0]
    assert [c.name for c, _ in api.list_connections()] == ["local"]


def test_form_edit_keeps_the_stored_path_and_refuses_a_new_outside_one(
    browser: SignedIn, folders: dict[str, Path]
) -> None:
    api.create_connection({**VALID, "ca_file": str(folders["exists"])})
    keep = _form(browser, "/connections/relay/edit", timeout_ms="9000")
    assert keep["ca_file"] == str(folders["exists"])
    saved = browser.post_form("/connections/relay/edit", keep, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    assert api.get_connection("relay").timeout_ms == 9000
    moved = _form(browser, "/connections/relay/edit", ca_file=str(folders["missing"]))
    page = browser.post_form("/connections/relay/edit", moved)
    assert page.status_code == 422
    assert CA_DIRS_ENV in _row_error(page.text)
    assert api.get_connection("relay").ca_file == str(folders["exists"])
    allowed = _form(browser, "/connections/relay/edit", ca_file=str(folders["bundle"]))
    assert browser.post_form("/connections/relay/edit", allowed).status_code == 303
    assert api.get_connection("relay").ca_file == str(folders["bundle"])
