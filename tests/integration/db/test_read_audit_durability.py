"""Read-audit commits (issue 12): a transaction that only writes the record of a read
(``Database.auditing_read()``) commits without waiting for the disk flush; the setting does
not outlive it, nothing else can be written on it, and ingest keeps full durability. On
both databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, event, text
from tests.factories import make_ct, to_bytes

from cloudfilm.infrastructure.db.session import AuditReadViolationError, Database
from cloudfilm.services.access.actor import LOCAL_OPERATOR
from cloudfilm.services.access.audit import AuditEntry
from cloudfilm.services.archive.ingest import Sender
from cloudfilm.services.archive.query import parse_search
from cloudfilm.services.container import Services

SENDER = Sender(hospital_code="H1", hospital_name="Hospital One", door="test")
# What each database reports: relaxed / full.
RELAXED = {"postgresql": "off", "sqlite": "1"}
FULL = {"postgresql": "on", "sqlite": "2"}


def _setting(raw: Any, dialect: str) -> str:
    """``synchronous_commit`` (PostgreSQL) or ``synchronous`` (SQLite) of a DBAPI
    connection, read on it directly (inside whatever transaction it is in)."""
    cur = raw.cursor()
    try:
        cur.execute("SHOW synchronous_commit" if dialect == "postgresql"
                    else "PRAGMA synchronous")
        return str(cur.fetchone()[0])
    finally:
        cur.close()


def _entry(action: str = "search") -> AuditEntry:
    return AuditEntry(LOCAL_OPERATOR, action, "allowed", "study", "1.2.3")


def test_relaxed_in_the_read_audit_transaction_only(services: Services) -> None:
    db: Database = services.ingest._db
    with db.auditing_read() as conn:
        raw = conn.connection.dbapi_connection
        conn.execute(text("SELECT count(*) FROM study"))
        services.audit.record_many(conn, [_entry()])
        assert _setting(raw, db.dialect) == RELAXED[db.dialect]
        conn.commit()
    # The DBAPI connection went back to the pool with the full setting.
    assert _setting(raw, db.dialect) == FULL[db.dialect]
    if db.dialect == "postgresql":
        raw.rollback()
    with db.writing() as conn:
        assert _setting(conn.connection.dbapi_connection, db.dialect) == FULL[db.dialect]
    # The record is there.
    with db.reading() as conn:
        assert conn.execute(text(
            "SELECT count(*) FROM audit_event WHERE resource_uid = '1.2.3'")).scalar() == 1


def test_a_failed_read_audit_block_does_not_leak_either(services: Services) -> None:
    db: Database = services.ingest._db
    with pytest.raises(RuntimeError, match="boom"), db.auditing_read() as conn:
        raw = conn.connection.dbapi_connection
        services.audit.record_many(conn, [_entry()])
        raise RuntimeError("boom")
    assert _setting(raw, db.dialect) == FULL[db.dialect]
    with db.reading() as conn:
        assert conn.execute(text(
            "SELECT count(*) FROM audit_event WHERE resource_uid = '1.2.3'")).scalar() == 0


@pytest.mark.parametrize("statement", [
    "UPDATE study SET size_bytes = size_bytes",
    "DELETE FROM access_grant",
    "INSERT INTO hospital (code) VALUES ('X')",
    "CREATE TABLE readsync_x (id integer)",
])
def test_nothing_but_audit_records_can_be_written_on_it(services: Services,
                                                        statement: str) -> None:
    db: Database = services.ingest._db
    with pytest.raises(AuditReadViolationError), db.auditing_read() as conn:
        conn.execute(text(statement))
    with db.auditing_read() as conn:  # reads and the lock of the chain head are fine
        conn.execute(text("SELECT seq FROM audit_chain_head FOR UPDATE"
                          if db.dialect == "postgresql" else "SELECT seq FROM audit_chain_head"))


def _commit_settings(db: Database, table: str) -> tuple[list[str], Any]:
    """The flush setting at each commit of a transaction that inserted into ``table``."""
    seen: list[str] = []

    def before(conn: Connection, _cursor: Any, statement: str, *_: Any) -> None:
        if f"INSERT INTO {table.upper()} " in statement.upper():
            conn.info[f"readsync_wrote_{table}"] = True

    def commit(conn: Connection) -> None:
        if conn.info.pop(f"readsync_wrote_{table}", False):
            seen.append(_setting(conn.connection.dbapi_connection, db.dialect))

    event.listen(db.engine, "before_cursor_execute", before)
    event.listen(db.engine, "commit", commit)

    def remove() -> None:
        event.remove(db.engine, "before_cursor_execute", before)
        event.remove(db.engine, "commit", commit)
    return seen, remove


def test_searches_commit_relaxed_and_ingest_fully_durable(services: Services,
                                                          tmp_path: Path) -> None:
    db: Database = services.ingest._db
    searched, stop_search = _commit_settings(db, "audit_event")
    stored, stop_store = _commit_settings(db, "instance")
    try:
        for i in range(2):
            services.query.search(parse_search("study", []), actor=LOCAL_OPERATOR)
            path = tmp_path / f"{i}.dcm"
            path.write_bytes(to_bytes(make_ct()))
            assert services.ingest.ingest_file(path, sender=SENDER).outcome == "stored"
    finally:
        stop_search()
        stop_store()
    assert stored == [FULL[db.dialect]] * 2
    # The searches' records (relaxed) and the ingests' "store" records, if any (full).
    assert searched.count(RELAXED[db.dialect]) == 2
