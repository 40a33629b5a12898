"""Sources: a SQL query against SQLite (a temp file) and the local PostgreSQL."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from mailconduit.errors import SourceError
from mailconduit.sources import SourceKind, open_source


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    path = tmp_path / "crm.db"
    con = sqlite3.connect(path)
    con.execute(
        "CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, name TEXT, amount REAL)"
    )
    con.executemany(
        "INSERT INTO customers VALUES (?, ?, ?, ?)",
        [(i, f"u{i}@x.org", f"Name {i}", i * 10.5) for i in range(1, 3001)],
    )
    con.commit()
    con.close()
    return f"sqlite:///{path}"


def test_sqlite_query_streams_rows_with_columns_known_up_front(sqlite_url: str) -> None:
    query = "SELECT email, name, amount FROM customers WHERE id <= 2500 ORDER BY id;"
    with open_source(query, database_url=sqlite_url, key="email") as source:
        assert source.kind is SourceKind.SQL
        assert source.columns == ("email", "name", "amount")
        assert source.count() == 2500
        rows = list(source.rows())
        assert source.validate() == 2500
    assert rows[0].key == "u1@x.org" and rows[0].line is None
    assert rows[2499].values == {"email": "u2500@x.org", "name": "Name 2500", "amount": 26250.0}
    assert [r.number for r in rows[:3]] == [1, 2, 3]


def test_colons_and_percent_signs_are_plain_sql_text(sqlite_url: str) -> None:
    query = (
        "SELECT 'at 10:30 :name' AS t, '50%' AS p, name FROM customers "
        "WHERE name LIKE 'Name 1%' LIMIT 1"
    )
    rows = list(open_source(query, database_url=sqlite_url).rows())
    assert rows[0].values == {"t": "at 10:30 :name", "p": "50%", "name": "Name 1"}


def test_sql_where_and_order_by_go_through_duckdb(sqlite_url: str) -> None:
    with open_source(
        "SELECT id, email, amount FROM customers",
        database_url=sqlite_url,
        where="amount > 31440",
        order_by="amount DESC",
    ) as source:
        assert [r.values["id"] for r in source.rows()] == [3000, 2999, 2998, 2997, 2996, 2995]


def test_the_query_cannot_change_the_database(sqlite_url: str, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"the query failed: .* returns rows: SELECT"):
        open_source("DELETE FROM customers", database_url=sqlite_url)
    con = sqlite3.connect(tmp_path / "crm.db")
    assert con.execute("SELECT count(*) FROM customers").fetchone() == (3000,)
    con.close()


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("SELEC email FROM customers", "syntax error"),
        ("SELECT email FROM nowhere", "no such table: nowhere"),
        ("SELECT email, email FROM customers", "'email' appears more than once"),
        ("   ;  ", "the SQL query is empty"),
    ],
)
def test_bad_queries(sqlite_url: str, query: str, words: str) -> None:
    with pytest.raises(SourceError, match=words) as caught:
        open_source(query, database_url=sqlite_url)
    assert caught.value.location.startswith("sqlite:///")


def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    with pytest.raises(SourceError, match="no SQLite database file"):
        open_source("SELECT 1 AS one", database_url=f"sqlite:///{missing}")
    assert not missing.exists()


def test_unusable_urls_never_show_the_password() -> None:
    with pytest.raises(SourceError, match="not a usable database URL") as caught:
        open_source("SELECT 1", database_url="nosuchdb://user:Pw-1234@host/db")
    assert "Pw-1234" not in str(caught.value) and "nosuchdb://user:***@host/db" in str(caught.value)
    with pytest.raises(SourceError, match="not a usable database URL") as caught:
        open_source("SELECT 1", database_url="user:Pw-1234 at host")
    assert "Pw-1234" not in str(caught.value) and "Pw-1234" not in repr(caught.value.args)


def test_unreachable_database_names_the_url_without_its_password() -> None:
    url = "postgresql://mailer:S3cr3t-pw@127.0.0.1:1/test"
    with pytest.raises(SourceError) as caught:
        open_source("SELECT 1 AS one", database_url=url)
    message = str(caught.value)
    assert "cannot connect to the database" in message
    assert "postgresql+psycopg://mailer:***@127.0.0.1:1/test" in message
    assert "S3cr3t-pw" not in message and "S3cr3t-pw" not in repr(caught.value.args)


def test_fingerprint_depends_on_query_and_database_not_on_the_password(sqlite_url: str) -> None:
    one = open_source("SELECT id FROM customers", database_url=sqlite_url).fingerprint()
    again = open_source("SELECT id FROM customers", database_url=sqlite_url).fingerprint()
    other = open_source("SELECT email FROM customers", database_url=sqlite_url).fingerprint()
    assert one == again != other


@pytest.mark.postgres
def test_postgresql_query_with_plain_postgresql_url(pg_url: str) -> None:
    psycopg = pytest.importorskip("psycopg")
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute(
            "CREATE TABLE mc_sources_people (id int PRIMARY KEY, email text, amount numeric)"
        )
        con.execute("CREATE SEQUENCE mc_sources_seq")
        con.execute(
            "INSERT INTO mc_sources_people "
            "SELECT g, 'p' || g || '@x.org', g * 1.25 FROM generate_series(1, 2500) AS g"
        )
    query = "SELECT id, email, amount FROM mc_sources_people ORDER BY id"
    with open_source(query, database_url=pg_url, key="email") as source:
        assert source.columns == ("id", "email", "amount")
        assert source.count() == 2500
        assert source.validate() == 2500
        rows = list(source.rows())
    assert rows[0].key == "p1@x.org"
    assert rows[-1].values == {"id": 2500, "email": "p2500@x.org", "amount": Decimal("3125.00")}
    with open_source(query, database_url=pg_url, where="amount >= 3122.5", order_by="id DESC") as f:
        assert [r.values["id"] for r in f.rows()] == [2500, 2499, 2498]
    with pytest.raises(SourceError, match="read-only transaction"):
        open_source("SELECT nextval('mc_sources_seq') AS n", database_url=pg_url)
    with pytest.raises(SourceError, match="returns rows"):
        open_source(
            "INSERT INTO mc_sources_people VALUES (0, 'x', 0) RETURNING id", database_url=pg_url
        )
    with pytest.raises(SourceError, match="syntax error at end of input") as caught:
        open_source("SELECT id FROM mc_sources_people WHERE id >", database_url=pg_url)
    assert caught.value.location.startswith("postgresql+psycopg://")
