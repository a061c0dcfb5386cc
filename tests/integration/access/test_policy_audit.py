"""The audit trail on both databases: hash chain, tamper detection, append-only triggers,
concurrent appenders, failure closes the door, and the ``cloudfilm audit verify`` command."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from tests.conftest import settings_to_env
from tests.integration.access.conftest import Province

from cloudfilm.services.access.actor import LOCAL_OPERATOR, Actor
from cloudfilm.services.access.audit import AuditEntry, per_resident
from cloudfilm.services.archive.query import parse_search
from cloudfilm.services.container import Services
from cloudfilm.services.errors import ResourceUnavailableError


def _exec(db_url: str, *statements: str) -> None:
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def _drop_triggers(db_url: str, request: pytest.FixtureRequest) -> None:
    """What an intruder with database access does first (restored afterwards: the
    PostgreSQL test database lives for the whole worker)."""
    if db_url.startswith("postgresql"):
        _exec(db_url, "ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only")
        request.addfinalizer(lambda: _exec(
            db_url, "ALTER TABLE audit_event ENABLE TRIGGER audit_event_append_only"))
    else:
        _exec(db_url, "DROP TRIGGER audit_event_no_update", "DROP TRIGGER audit_event_no_delete")


def _fill(services: Services, n: int) -> None:
    actor = Actor(kind="doctor", subject="account:9", hospital_id=1, display="Dr X")
    services.audit.write(AuditEntry(actor, "retrieve", "allowed", "study", f"1.2.{i}",
                                    resident_id=i, reason="grant") for i in range(n))


def test_chain_verifies_and_an_edited_row_is_found(services: Services, db_url: str,
                                                   request: pytest.FixtureRequest) -> None:
    _fill(services, 5)
    report = services.audit.verify()
    assert report.ok and report.rows == 5
    # the database refuses edits...
    with pytest.raises(DBAPIError):
        _exec(db_url, "UPDATE audit_event SET outcome = 'denied' WHERE seq = 3")
    with pytest.raises(DBAPIError):
        _exec(db_url, "DELETE FROM audit_event WHERE seq = 5")
    # ...and whoever drops the triggers meets the chain
    _drop_triggers(db_url, request)
    _exec(db_url, "UPDATE audit_event SET resource_uid = '9.9.9' WHERE seq = 3")
    report = services.audit.verify()
    assert not report.ok and report.broken_seq == 3 and report.rows == 2
    assert "edited" in report.problem


def test_removed_rows_are_found(services: Services, db_url: str,
                                request: pytest.FixtureRequest) -> None:
    _fill(services, 4)
    _drop_triggers(db_url, request)
    _exec(db_url, "DELETE FROM audit_event WHERE seq = 2")
    report = services.audit.verify()
    assert not report.ok and report.broken_seq == 3
    _exec(db_url, "DELETE FROM audit_event WHERE seq >= 3")
    report = services.audit.verify()
    assert not report.ok and "head" in report.problem


def test_concurrent_appenders_extend_one_chain(services: Services) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                _fill(services, 2)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    report = services.audit.verify()
    assert report.ok and report.rows == 80


def test_concurrent_single_record_appenders_extend_one_chain(services: Services) -> None:
    """One record per write (a search's): on PostgreSQL the head lock, the append and the
    server-side hash are one statement; four writers, several residents named at times,
    still one unbroken chain whose hashes Python recomputes."""
    errors: list[BaseException] = []
    doctor = Actor(kind="doctor", subject="account:9", hospital_id=1, display="Dr X")

    def work(k: int) -> None:
        try:
            for i in range(10):
                owners: dict[str, int | None] = {f"1.{k}.{i}.{j}": (j if j else None)
                                                 for j in range(i % 4)}
                services.audit.write(per_resident(doctor, "search", "study", "", owners,
                                                  key="studies", detail={"w": k}))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    report = services.audit.verify()
    assert report.ok and report.rows == 40


def test_a_failed_audit_write_fails_the_request(province: Province,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    p = province

    def broken(*_a: Any, **_k: Any) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(p.services.audit, "record_many", broken)
    with pytest.raises(ResourceUnavailableError):
        p.services.retrieve.locate(p.sa1, actor=LOCAL_OPERATOR)
    with pytest.raises(ResourceUnavailableError):
        p.services.query.search(parse_search("study", []), actor=p.doctor)
    with pytest.raises(ResourceUnavailableError):
        p.services.retrieve.metadata(p.sa1, actor=p.doctor)


def test_record_joins_the_callers_transaction(services: Services) -> None:
    """Part B's sign-ins and grant changes commit, or roll back, with their record."""
    db = services.health._db
    with pytest.raises(RuntimeError), db.write() as session:
        services.audit.record(session, actor=LOCAL_OPERATOR, action="grant.approve",
                              outcome="success", resident_id=1)
        raise RuntimeError("the change failed")
    assert services.audit.verify().rows == 0
    with db.write() as session:
        services.audit.record(session, actor=LOCAL_OPERATOR, action="grant.approve",
                              outcome="success", resident_id=1)
    assert services.audit.verify().rows == 1


def test_a_record_naming_residents_it_does_not_list_is_refused(services: Services) -> None:
    """The residents' index rows are checked against the hashed list: a record whose
    ``residents`` are not listed in its detail is never appended, one alone (PostgreSQL's
    one-statement path) or with others."""
    actor = Actor(kind="doctor", subject="account:9", hospital_id=1, display="Dr X")
    unlisted = AuditEntry(actor, "search", "allowed", "study", "", residents=(1, 2),
                          detail={"residents": [1]})
    listed = AuditEntry(actor, "search", "allowed", "study", "", residents=(1, 2),
                        detail={"residents": [1, 2]})
    for batch in ([unlisted], [listed, unlisted]):
        with pytest.raises(ResourceUnavailableError) as refused:  # the request fails
            services.audit.write(batch)
        assert "must list them" in str(refused.value.__cause__)
    assert services.audit.verify().rows == 0


def test_cli_audit_verify(services: Services, settings: Any, db_url: str,
                          monkeypatch: pytest.MonkeyPatch,
                          request: pytest.FixtureRequest) -> None:
    from cloudfilm.cli.main import cli

    _fill(services, 3)
    settings_to_env(monkeypatch, settings, db_url)
    runner = CliRunner()
    result = runner.invoke(cli, ["audit", "verify"])
    assert result.exit_code == 0, result.output
    assert "3 record(s) verified" in result.output
    _drop_triggers(db_url, request)
    _exec(db_url, "UPDATE audit_event SET reason = 'x' WHERE seq = 2")
    result = runner.invoke(cli, ["audit", "verify"])
    assert result.exit_code == 1
    assert "seq 2" in result.output


def test_one_record_appends_reuse_one_compiled_statement(services: Services) -> None:
    """Each read writes one audit record: after the first, its statement comes from
    SQLAlchemy's compiled cache (it was compiled afresh per record, a third of a QIDO
    request's CPU). The chain still verifies, each record with its own values."""
    from sqlalchemy import event
    from sqlalchemy.engine.default import CACHE_HIT

    engine = services.health._db.engine
    hits: list[bool] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any,
             many: bool) -> None:
        if "INSERT INTO audit_event" in statement:
            hits.append(context.cache_hit is CACHE_HIT)

    event.listen(engine, "before_cursor_execute", seen)
    per_write: list[list[bool]] = []
    try:
        for i in range(4):
            hits.clear()
            services.audit.write([AuditEntry(LOCAL_OPERATOR, "search", "allowed", "study",
                                             f"1.2.{i}", resident_id=i, detail={"n": i})])
            per_write.append(list(hits))
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    # The first write may also create the chain head (the test database starts without
    # one); every later one is one statement from the cache.
    assert per_write[1:] == [[True]] * 3, per_write
    report = services.audit.verify()
    assert report.rows == 4 and report.ok


def test_several_record_appends_send_one_statement_text(services: Services) -> None:
    """Answers with several residents' data write several records at once. On PostgreSQL
    they go as one array per column, so the SQL text is the same for any number of records
    (a multi-row VALUES was new text per count, parsed afresh by psycopg: a third of a
    10 M date-range QIDO's CPU). Each record keeps its own values, None included, and the
    chain verifies."""
    from sqlalchemy import event, text

    engine = services.health._db.engine
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, params: Any, context: Any,
             many: bool) -> None:
        if "INSERT INTO audit_event" in statement:
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        for count in (2, 5, 3):
            services.audit.write([
                AuditEntry(LOCAL_OPERATOR, "search", "allowed", "study", f"1.2.{count}.{i}",
                           resident_id=i if i % 2 else None, detail={"n": i})
                for i in range(count)])
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    if engine.dialect.name == "postgresql":
        assert len(statements) == 3 and len(set(statements)) == 1, statements
    report = services.audit.verify()
    assert report.ok and report.rows == 10
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT resource_uid, resident_id FROM audit_event "
                                 "ORDER BY seq")).all()
    assert [tuple(r) for r in rows[2:7]] == [
        (f"1.2.5.{i}", i if i % 2 else None) for i in range(5)]
    # Values the records share (here every resident is None) go once; still one row each.
    services.audit.write([AuditEntry(LOCAL_OPERATOR, "search", "allowed", "study", "1.2.9",
                                     detail={"n": 0}) for _ in range(3)])
    report = services.audit.verify()
    assert report.ok and report.rows == 13
    with engine.connect() as conn:
        tail = conn.execute(text("SELECT resource_uid, resident_id FROM audit_event "
                                 "WHERE seq > 10 ORDER BY seq")).all()
    assert [tuple(r) for r in tail] == [("1.2.9", None)] * 3


def test_one_record_names_several_residents_each_finds_it(services: Services, db_url: str
                                                          ) -> None:
    """An answer with three residents' data (and one unlinked study) is one chained record;
    each resident's access log finds it through ``audit_event_resident``, which the
    database keeps append-only and ``audit verify`` checks against the hashed list."""
    doctor = Actor(kind="doctor", subject="account:9", hospital_id=1, display="Dr X")
    _fill(services, 2)  # records of residents 0 and 1 of their own (resident_id)
    owners: dict[str, int | None] = {"1.2.1": 11, "1.2.2": 12, "1.2.3": 11, "1.2.4": 13,
                                     "1.2.5": None}
    services.audit.write(per_resident(doctor, "search", "study", "", owners, key="studies",
                                      reason="doctor", detail={"matches": 5}))
    _fill(services, 1)
    with create_engine(db_url).connect() as conn:
        rows = conn.execute(text("SELECT seq, resident_id, detail FROM audit_event "
                                 "WHERE action = 'search'")).all()
        named = conn.execute(text("SELECT resident_id, seq FROM audit_event_resident "
                                  "ORDER BY resident_id")).all()
    [(seq, resident, detail)] = rows
    assert seq == 3 and resident is None
    listed = orjson.loads(detail)
    assert listed["residents"] == [11, 12, 13] and listed["studies"] == sorted(owners)
    assert listed["by_resident"] == {"11": ["1.2.1", "1.2.3"], "12": ["1.2.2"],
                                     "13": ["1.2.4"]}
    assert [tuple(r) for r in named] == [(11, 3), (12, 3), (13, 3)]
    for rid in (11, 12, 13):
        log = services.audit.access_log(Actor(kind="resident", subject=f"account:r{rid}",
                                              resident_ids=frozenset({rid})))
        assert [(e.action, e.who) for e in log] == [("search", "Dr X")], rid
    # An own-resident record and a named one, paged newest first through both indexes.
    both = services.audit.access_log(Actor(kind="resident", subject="account:r1",
                                           resident_ids=frozenset({1, 12})), limit=1)
    assert [e.action for e in both] == ["search"]
    # The FHIR export names each of them as a Patient entity of the one AuditEvent.
    bundle = services.audit.fhir_bundle(LOCAL_OPERATOR, action="search")
    [event] = [e["resource"] for e in bundle["entry"]]
    assert [x["what"]["reference"] for x in event["entity"] if "reference" in x["what"]] == [
        "Patient/11", "Patient/12", "Patient/13"]
    assert services.audit.verify().ok
    with pytest.raises(DBAPIError):
        _exec(db_url, "DELETE FROM audit_event_resident WHERE resident_id = 12")
    _exec(db_url, "INSERT INTO audit_event_resident (resident_id, seq) VALUES (14, 3)")
    report = services.audit.verify()
    assert not report.ok and report.broken_seq == 3
    assert "audit_event_resident" in report.problem


def test_a_dead_pooled_connection_is_replaced(services: Services, db_url: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """No pre-ping per checkout: a pooled connection the server dropped is pinged when it
    was idle for a while, and a busy one that fails is retried once by the search."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has no server connection to lose")
    from cloudfilm.infrastructure.db import session as session_module

    def kill_others() -> None:
        _exec(db_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")

    search = parse_search("study", [])
    services.query.search(search, actor=LOCAL_OPERATOR)  # a pooled connection now
    kill_others()
    # Not idle long enough for a ping: the statement fails, the search runs once more.
    services.query.search(search, actor=LOCAL_OPERATOR)
    # Idle past the threshold (0 s here): pinged at checkout, replaced, nothing fails.
    monkeypatch.setattr(session_module, "PING_AFTER_IDLE_S", 0.0)
    db = session_module.Database(db_url)
    try:
        calls: list[str] = []
        with db.reading() as conn:
            conn.execute(text("SELECT 1"))
        kill_others()
        from sqlalchemy import event

        event.listen(db.engine, "handle_error", lambda ctx: calls.append("error"))
        with db.reading() as conn:
            assert conn.execute(text("SELECT 2")).scalar() == 2
        assert calls == []
    finally:
        db.dispose()
