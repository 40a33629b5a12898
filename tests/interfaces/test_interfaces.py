"""Interfaces: the document's rules, the store, runs through the embedded server, the run
history, one run at a time per interface, YAML round trips and the CLI."""

from __future__ import annotations

import io
import threading
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from export_support import sink_messages, write_csv
from interfaces_support import interface_document
from mailconduit import api
from mailconduit.errors import ConfigError, NotFoundError
from mailconduit.interfaces import files, runner, service, store
from mailconduit.interfaces.model import DATA_DIRS_ENV, interface_from_document
from mailconduit.journal import Journal

ROWS = [
    {"email": "ann@example.com", "name": "Ann"},
    {"email": "bob@example.com", "name": "Bob"},
]


def document(source: Path, **extra: Any) -> dict[str, Any]:
    return interface_document(
        source, name="weekly", subject="Hello {{ name }}", body="Dear {{ name }}", **extra
    )


def test_a_document_names_every_wrong_field_at_once(data_dir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        interface_from_document(
            {
                "name": "bad name!",
                "export": {"source": "/etc/passwd", "database_url": "sqlite://", "dry_run": "x"},
                "schedule": {"cron": "61 * * * *", "timezone": "Mars/Olympus"},
                "notify": {"emails": ["not an address"], "when": "sometimes", "webhook": "ftp://x"},
                "colour": "blue",
            }
        )
    fields = {e.field for e in caught.value.errors}
    assert fields >= {
        "name",
        "export.source",
        "export.database_url",
        "export.dry_run",
        "schedule.cron",
        "schedule.timezone",
        "notify.emails",
        "notify.when",
        "notify.webhook",
        "colour",
    }
    outside = next(e for e in caught.value.errors if e.field == "export.source")
    assert DATA_DIRS_ENV in outside.message


def test_a_file_outside_the_data_folders_is_refused_even_through_a_link(
    data_dir: Path, tmp_path: Path
) -> None:
    secret = write_csv(tmp_path / "secret.csv", ROWS)
    (data_dir / "link.csv").symlink_to(secret)
    with pytest.raises(ConfigError) as caught:
        interface_from_document(document(data_dir / "link.csv"))
    assert caught.value.field == "export.source"


def test_save_run_and_history(data_dir: Path) -> None:
    source = write_csv(data_dir / "people.csv", ROWS)
    saved = service.save_interface(document(source))
    assert [i.name for i in store.list_interfaces()] == ["weekly"]
    assert runner.problem(saved) == ""
    report = runner.run_interface("weekly")
    assert report.ok and report.sent == 2
    assert sorted(m.recipients[0] for m in sink_messages()) == [
        "ann@example.com",
        "bob@example.com",
    ]
    (entry,) = service.history("weekly")
    assert entry.run_id == report.run_id and entry.trigger == "manual"
    assert entry.run is not None and entry.run.status == "finished"
    assert store.interface_of_run(report.run_id) == "weekly"


def test_an_interface_whose_column_is_gone_says_so_before_it_runs(data_dir: Path) -> None:
    source = write_csv(data_dir / "people.csv", ROWS)
    saved = service.save_interface(document(source))
    write_csv(source, [{"mail": "ann@example.com", "name": "Ann"}])
    problem = runner.problem(saved)
    assert "email" in problem


def test_saving_checks_the_export_as_a_one_off_export_is(data_dir: Path) -> None:
    source = write_csv(data_dir / "people.csv", ROWS)
    doc = document(source)
    doc["export"]["connection"] = "nowhere"
    with pytest.raises(ConfigError) as caught:
        service.save_interface(doc)
    assert caught.value.field == "connection"
    assert store.list_interfaces() == []


def test_one_interface_never_runs_twice_at_once(data_dir: Path) -> None:
    source = write_csv(data_dir / "people.csv", ROWS)
    service.save_interface(document(source))
    journal = Journal()
    try:
        assert journal.take_lease("interface:weekly", owner="other", home="other", ttl=60) is None
        with pytest.raises(runner.InterfaceBusyError):
            runner.run_interface("weekly")
        journal.release_lease("interface:weekly", owner="other")
    finally:
        journal.close()
    assert sink_messages() == []
    assert runner.run_interface("weekly").ok


def test_yaml_round_trip_runs_from_the_command_line(data_dir: Path, cli: Any) -> None:
    source = write_csv(data_dir / "people.csv", ROWS)
    service.save_interface(document(source, schedule={"every_minutes": 5}))
    exported = cli("interfaces", "export", "weekly")
    assert exported.code == 0, exported.err
    doc = yaml.safe_load(exported.out)
    assert doc["schedule"] == {"every_minutes": 5, "catch_up": True}
    path = data_dir / "weekly.yaml"
    path.write_text(exported.out, encoding="utf-8")
    ran = cli("run", str(path))
    assert ran.code == 0, ran.err
    assert len(sink_messages()) == 2
    service.delete_interface("weekly")
    imported = cli("interfaces", "import", str(path))
    assert imported.code == 0, imported.err
    assert store.get_interface("weekly").schedule.every_minutes == 5


def test_cli_lists_shows_and_runs(data_dir: Path, cli: Any) -> None:
    source = write_csv(data_dir / "people.csv", ROWS)
    service.save_interface(document(source))
    listed = cli("interfaces", "list")
    assert listed.code == 0 and "weekly" in listed.out
    ran = cli("interfaces", "run", "weekly")
    assert ran.code == 0, ran.err
    assert len(sink_messages()) == 2
    missing = cli("interfaces", "show", "nope")
    assert missing.code == 2 and "nope" in missing.err and "Traceback" not in missing.err
    bad = data_dir / "bad.yaml"
    bad.write_text("name: x\nexport: [1, 2\n", encoding="utf-8")
    refused = cli("interfaces", "import", str(bad))
    assert refused.code == 2 and refused.err.count("\n") == 1


@pytest.mark.parametrize(
    ("command", "content", "words"),
    [
        (("interfaces", "import"), b"name: x\ndescription: \xe9t\xe9\n", ("0xe9", "not UTF-8")),
        (("interfaces", "import"), b"name: x\nexport: " + b"[" * 3000 + b"]" * 3000,
         ("nested too deeply",)),
        (("connections", "import"), b"- name: x\n  port: " + b"9" * 5000 + b"\n",
         ("number too long",)),
        (("connections", "import"), b"- name: x\n  from_name: Zo\xeb\n", ("0xeb", "not UTF-8")),
    ],
)  # fmt: skip
def test_an_import_file_that_cannot_be_read_is_one_line(
    cli: Any, data_dir: Path, command: tuple[str, ...], content: bytes, words: tuple[str, ...]
) -> None:
    """Each of these was a traceback: the bytes were decoded and parsed outside the errors
    the commands catch."""
    path = data_dir / "import.yaml"
    path.write_bytes(content)
    refused = cli(*command, str(path))
    assert refused.code == 2 and refused.err.count("\n") == 1, refused.err
    assert all(word in refused.err for word in words), refused.err
    assert "Traceback" not in refused.err


def test_duplicate_drops_the_schedule_and_delete_keeps_the_runs(data_dir: Path) -> None:
    source = write_csv(data_dir / "people.csv", ROWS)
    service.save_interface(document(source, schedule={"cron": "0 7 * * *", "timezone": "Europe/Paris"}))
    copy = service.duplicate_interface("weekly", "weekly-copy")
    assert not copy.schedule.active and copy.export == store.get_interface("weekly").export
    run_id = runner.run_interface("weekly-copy").run_id
    service.delete_interface("weekly-copy")
    with pytest.raises(NotFoundError):
        store.get_interface("weekly-copy")
    assert api.get_run(run_id).status == "finished"


def test_database_urls_are_encrypted_at_rest(data_dir: Path, home: Path) -> None:
    url = "postgresql://reader:S3cret-pw@127.0.0.1:5432/test"
    info = store.save_database("warehouse", url)
    assert "S3cret-pw" not in info.url
    assert store.database_url("warehouse") == url
    assert b"S3cret-pw" not in (home / "mailconduit.db").read_bytes()


def test_a_zip_of_attachments_is_unpacked_flat_and_refuses_paths(data_dir: Path) -> None:
    good = io.BytesIO()
    with zipfile.ZipFile(good, "w") as archive:
        archive.writestr("docs/terms.pdf", b"%PDF-1.4")
        archive.writestr("logo.png", b"\x89PNG")
    folder = files.files_folder(files.unpack_archive(io.BytesIO(good.getvalue()), max_bytes=10_000))
    assert sorted(p.name for p in folder.iterdir()) == ["logo.png", "terms.pdf"]
    bad = io.BytesIO()
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("../.hidden", b"x")
    with pytest.raises(ConfigError):
        files.unpack_archive(io.BytesIO(bad.getvalue()), max_bytes=10_000)
    with pytest.raises(ConfigError):
        files.unpack_archive(io.BytesIO(good.getvalue()), max_bytes=4)


def test_start_interface_returns_a_run_the_journal_knows(data_dir: Path) -> None:
    source = write_csv(data_dir / "people.csv", ROWS)
    service.save_interface(document(source))
    run_id = runner.start_interface("weekly")
    assert run_id.startswith("weekly-")
    done = threading.Event()
    journal = Journal()
    try:
        while not done.wait(0.05):
            if journal.get_run(run_id).status != "running":
                done.set()
    finally:
        journal.close()
    assert api.get_run(run_id).counts.get("sent") == 2


def test_two_runs_in_the_same_second_are_two_runs(data_dir: Path) -> None:
    from datetime import UTC, datetime

    source = write_csv(data_dir / "people.csv", ROWS)
    service.save_interface(document(source))
    moment = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)
    first = runner.run_interface("weekly", at=moment)
    second = runner.run_interface("weekly", at=moment)
    assert first.run_id != second.run_id and first.sent == second.sent == 2
    assert len(sink_messages()) == 4
    assert len(runner.run_id_for("x" * 64)) <= 80
