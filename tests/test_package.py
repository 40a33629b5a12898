"""The public package: every name of ``mailconduit.__all__`` importable (loaded on first
use, so ``import mailconduit`` stays cheap), the version from the package metadata, and
the export options as typed keyword-only parameters that cover every ExportSpec field.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import mailconduit
from mailconduit import api, errors
from mailconduit.config import ExportSpec, RateLimit, RetryPolicy, validate_export_spec

SPEC_FIELDS = {f.name for f in dataclasses.fields(ExportSpec)}


def test_all_is_sorted_and_every_name_is_importable() -> None:
    assert mailconduit.__all__ == sorted(set(mailconduit.__all__))
    namespace: dict[str, Any] = {}
    exec("from mailconduit import *", namespace)  # noqa: S102 - what a user's star import gets
    for name in mailconduit.__all__:
        assert namespace[name] is getattr(mailconduit, name), name
    assert set(mailconduit.__all__) <= set(dir(mailconduit))
    with pytest.raises(AttributeError, match="no attribute 'exprot'"):
        mailconduit.exprot  # noqa: B018


def test_the_api_the_errors_and_the_types_of_its_signatures_are_all_there() -> None:
    public = set(mailconduit.__all__)
    assert set(errors.__all__) <= public
    assert {"aexport", "aresume", "export", "resume", "test_connection"} <= public
    assert {"ExportReport", "Connection", "Progress", "RateLimit", "RetryPolicy"} <= public
    assert mailconduit.export is api.export and mailconduit.aexport is api.aexport
    assert mailconduit.ConfigError is errors.ConfigError
    assert mailconduit.RateLimit is RateLimit and mailconduit.RetryPolicy is RetryPolicy
    from mailconduit.delivery.report import ExportReport

    assert mailconduit.ExportReport is ExportReport


def _fresh(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_importing_the_package_loads_nothing_until_a_name_is_used() -> None:
    out = _fresh("""
        import sys
        import mailconduit
        print(sorted(m for m in sys.modules if m.startswith("mailconduit.")))
        mailconduit.ConfigError
        print(sorted(m for m in sys.modules if m.startswith("mailconduit.")))
    """)
    assert out.splitlines() == ["[]", "['mailconduit.errors']"]


def test_version_comes_from_the_package_metadata(cli: Any) -> None:
    installed = importlib.metadata.version("mailconduit")
    assert mailconduit.__version__ == installed
    result = cli("--version")
    assert (result.code, result.out, result.err) == (0, f"mailconduit {installed}\n", "")
    # the CLI answers without loading any of its commands
    out = _fresh("""
        import sys
        from mailconduit.cli import main
        code = main(["--version"])
        print(code, sorted(m for m in sys.modules if m.startswith("mailconduit.cli.")))
    """)
    assert out.splitlines()[-1] == "0 []"


# --------------------------------------------------------------------------- export options


def test_the_export_options_are_every_spec_field_once_typed_and_keyword_only() -> None:
    signature = inspect.signature(mailconduit.aexport)
    params = dict(signature.parameters)
    source = params.pop("source")
    assert source.kind is inspect.Parameter.POSITIONAL_ONLY
    assert params.pop("progress").default is None
    queue = params.pop("queue")  # not an export setting: where a celery run may wait
    assert queue.default is False and queue.kind is inspect.Parameter.KEYWORD_ONLY
    assert queue.annotation in (bool, "bool")
    assert set(params) == SPEC_FIELDS - {"source"}
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    assert all(p.annotation is not inspect.Parameter.empty for p in signature.parameters.values())
    assert params["connection"].default is inspect.Parameter.empty  # required: no silent 'local'
    # the sync form has the very same parameters, and is not a coroutine function
    assert inspect.signature(mailconduit.export) == signature
    assert inspect.iscoroutinefunction(mailconduit.aexport)
    assert not inspect.iscoroutinefunction(mailconduit.export)
    assert mailconduit.export.__name__ == "export"
    aresume = inspect.signature(mailconduit.aresume)
    assert inspect.signature(mailconduit.resume) == aresume
    assert all(
        p.kind is inspect.Parameter.KEYWORD_ONLY
        for name, p in aresume.parameters.items()
        if name != "run_id"
    )


def test_defaults_mean_what_the_spec_defaults_mean() -> None:
    signature = inspect.signature(mailconduit.aexport)
    defaults = {
        name: p.default
        for name, p in signature.parameters.items()
        if name not in ("source", "progress", "connection", "queue")
    }
    minimal = {"connection": "office", "to": "{{ email }}", "subject": "s", "body": "b"}
    rows = [{"email": "a@example.com"}]
    given = api._spec_of(rows, {**defaults, **minimal})
    assert given == validate_export_spec({"source": rows, **minimal})


#: A value other than the default for every option (each valid alone with ``MINIMAL``).
SAMPLES: dict[str, tuple[Any, Any]] = {  # option: (given, as the spec holds it)
    "cc": ("{{ cc }}", "{{ cc }}"),
    "bcc": ("{{ bcc }}", "{{ bcc }}"),
    "reply_to": ("{{ r }}", "{{ r }}"),
    "from_": ("{{ sender }}", "{{ sender }}"),
    "attach": (["a.pdf", "{{ f }}"], ("a.pdf", "{{ f }}")),
    "attach_dir": (Path("/srv/files"), "/srv/files"),
    "headers": ({"X-Id": "{{ id }}"}, (("X-Id", "{{ id }}"),)),
    "table_formats": (("html", "csv"), ("html", "csv")),
    "table_row_cap": (20, 20),
    "oversize": ("split", "split"),
    "where": ("a > 1", "a > 1"),
    "order_by": ("a", "a"),
    "key": ("id", "id"),
    "kind": ("jsonl", "jsonl"),
    "encoding": ("latin-1", "latin-1"),
    "delimiter": (";", ";"),
    "sheet": (2, "2"),  # a sheet number is held as text, as the CLI gives it
    "database_url": ("sqlite:///x.db", "sqlite:///x.db"),
    "charset": ("iso-8859-1", "iso-8859-1"),
    "html": (False, False),
    "dry_run": (Path("/tmp/out"), Path("/tmp/out")),
    "limit": (7, 7),
    "fail_fast": (True, True),
    "run_id": ("my-run", "my-run"),
    "concurrency": (3, 3),
    "rate": ("10/s", RateLimit(per_second=10.0)),
    "retry": (RetryPolicy(max_attempts=2), RetryPolicy(max_attempts=2)),
    "max_errors": (4, 4),
    "resend_uncertain": (False, False),
    "journal": (False, False),
    "messages_per_connection": (50, 50),
    "data_timeout_ms": (5000, 5000),
    "report": (Path("/tmp/r.csv"), "/tmp/r.csv"),
    "report_format": ("json", "json"),
    "body_file": (Path("/srv/body.txt"), "/srv/body.txt"),
    "html_body": ("<p>{{ name }}</p>", "<p>{{ name }}</p>"),
    "html_body_file": (Path("/srv/body.html"), "/srv/body.html"),
    "text_body": ("Dear {{ name }}", "Dear {{ name }}"),
    "text_body_file": (Path("/srv/body.txt"), "/srv/body.txt"),
    "inline": ({"logo": "logo.png"}, (("logo", "logo.png"),)),
}
#: What an option needs beside it to be valid (a body of its own replaces ``body``).
NEEDS: dict[str, dict[str, Any]] = {
    "attach": {"attach_dir": "/srv/files"},
    "inline": {"html_body": '<img src="cid:logo">', "attach_dir": "/srv/files"},
    **{name: {"mode": "table"} for name in ("table_formats", "table_row_cap", "oversize")},
}
OWN_BODY = {"body_file", "html_body", "html_body_file", "text_body", "text_body_file", "inline"}
MINIMAL: dict[str, Any] = {"connection": "office", "to": "{{ email }}", "subject": "s", "body": "b"}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_option_reaches_the_spec(name: str) -> None:
    given, held = SAMPLES[name]
    options = {**MINIMAL, **NEEDS.get(name, {}), name: given}
    if name in OWN_BODY:
        del options["body"]
    spec = api._spec_of([{"email": "a@example.com"}], options)
    assert getattr(spec, name) == held


def test_every_option_has_a_sample() -> None:
    """A new ExportSpec field wants a sample here, so it is seen to reach the spec."""
    covered = set(SAMPLES) | set(MINIMAL) | {"mode", "by", "to_column", "body"}
    assert covered == SPEC_FIELDS - {"source"}


@pytest.mark.slow
def test_mypy_accepts_a_typed_call_and_refuses_wrong_ones(tmp_path: Path) -> None:
    """What an editor and mypy see: the parameters' names and types, the report's type."""
    mypy_api = pytest.importorskip("mypy.api")
    usage = tmp_path / "usage.py"
    usage.write_text(
        textwrap.dedent("""
        import mailconduit

        ROWS = [{"email": "a@example.com"}]

        def cell() -> int:
            report: mailconduit.ExportReport = mailconduit.export(
                ROWS, connection="local", to="{{ email }}", subject="s", body="b",
                rate="10/s", retry=mailconduit.RetryPolicy(max_attempts=2), mode="row",
                attach=["a.pdf"], headers={"X-Id": "1"}, table_formats=["html", "csv"],
            )
            return report.sent

        async def async_cell() -> int:
            report = await mailconduit.aexport(ROWS, connection="local", to="{{ email }}")
            again = await mailconduit.aresume(report.run_id, source=ROWS)
            return again.sent

        mailconduit.export(ROWS, to="{{ email }}")  # refused
        mailconduit.export(ROWS, connection="local", rate=5)  # refused
        mailconduit.export(ROWS, connection="local", mode="rows")  # refused
        mailconduit.export(ROWS, connection="local", from_address="a@example.com")  # refused
        mailconduit.export(ROWS, connection="local", concurrency="4")  # refused
        """).lstrip()
    )
    out, err, status = mypy_api.run(
        ["--strict", "--no-incremental", "--cache-dir", str(tmp_path / "cache"), str(usage)]
    )
    lines = [line for line in out.splitlines() if ": error:" in line]
    refused = [n for n, text in enumerate(usage.read_text().splitlines(), 1) if "# refused" in text]
    assert [int(line.split(":")[1]) for line in lines] == refused, out + err
    assert 'Missing named argument "connection"' in lines[0]
    assert '"rate"' in lines[1] and '"mode"' in lines[2] and '"from_address"' in lines[3]
    assert status == 1
