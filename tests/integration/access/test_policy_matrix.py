"""The access policy's attack matrix on both databases: every refusal is refused *and*
audited, searches are filtered in SQL (not only single reads), and allowed paths work."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import create_engine, text
from tests.integration.access.conftest import Province

from cloudfilm.services.access.actor import LOCAL_OPERATOR, Actor
from cloudfilm.services.archive.query import parse_search
from cloudfilm.services.errors import NotAuthorizedError, NotFoundError


def audit_rows(db_url: str, n: int = 1) -> list[Any]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(
                "SELECT actor_kind, actor_subject, action, outcome, reason, resource_uid, "
                "resident_id, detail FROM audit_event ORDER BY seq DESC LIMIT :n"), {"n": n}))
    finally:
        engine.dispose()


def studies_seen(p: Province, actor: Actor, **params: str) -> set[str]:
    request = parse_search("study", list(params.items()))
    result = p.services.query.search(request, actor=actor)
    return {m["0020000D"]["Value"][0] for m in result.matches}


def assert_refused(p: Province, actor: Actor, study: str, reason: str) -> None:
    series, sop = p.uids[study]
    for call in (lambda: p.services.retrieve.locate(study, actor=actor),
                 lambda: p.services.retrieve.metadata(study, series, actor=actor),
                 lambda: p.services.retrieve.rendered(study, series, sop, actor=actor),
                 lambda: p.services.retrieve.frames(study, series, sop, [1], None, actor=actor)):
        with pytest.raises(NotAuthorizedError):
            call()
        row = audit_rows(p.db_url)[0]
        assert (row.actor_subject, row.outcome, row.reason) == (actor.subject, "denied", reason)


def test_doctor_sees_own_hospital_and_nothing_else_without_a_grant(province: Province) -> None:
    p = province
    assert studies_seen(p, p.doctor) == {p.sa1}
    assert p.services.retrieve.locate(p.sa1, actor=p.doctor)[0].study_instance_uid == p.sa1
    row = audit_rows(p.db_url)[0]
    assert (row.action, row.outcome, row.reason, row.resident_id) == (
        "retrieve", "allowed", "own-hospital", p.r1)
    assert_refused(p, p.doctor, p.sb1, "no-grant")
    assert_refused(p, p.doctor, p.sb2, "no-grant")


def test_doctor_with_a_grant_sees_that_patient_only(province: Province) -> None:
    p = province
    p.grant(p.doctor, p.r1)
    assert studies_seen(p, p.doctor) == {p.sa1, p.sb1}
    assert len(p.services.retrieve.locate(p.sb1, actor=p.doctor)) == 1
    row = audit_rows(p.db_url)[0]
    assert (row.outcome, row.reason, row.resident_id) == ("allowed", "grant", p.r1)
    # a grant for R1 opens nothing of R2, and nothing for another doctor
    assert_refused(p, p.doctor, p.sb2, "no-grant")
    assert studies_seen(p, p.other_doctor) == {p.sa1}
    assert_refused(p, p.other_doctor, p.sb1, "no-grant")


def test_expired_revoked_and_requested_grants_open_nothing(province: Province) -> None:
    p = province
    p.grant(p.doctor, p.r1, expired=True)
    p.grant(p.doctor, p.r1, revoked=True, status="revoked")
    p.grant(p.doctor, p.r1, status="requested")
    assert studies_seen(p, p.doctor) == {p.sa1}
    assert_refused(p, p.doctor, p.sb1, "no-grant")


def test_grant_for_named_studies_only(province: Province) -> None:
    p = province
    # a grant naming R2's study under R1's name opens neither
    p.grant(p.doctor, p.r1, uids=[p.sb2])
    assert studies_seen(p, p.doctor) == {p.sa1}
    assert_refused(p, p.doctor, p.sb1, "not-in-grant")
    assert_refused(p, p.doctor, p.sb2, "no-grant")
    p.grant(p.doctor, p.r1, uids=[p.sb1])
    assert studies_seen(p, p.doctor) == {p.sa1, p.sb1}


def test_hospital_sees_only_what_it_produced(province: Province) -> None:
    p = province
    hb = p.hospital("HB")
    assert studies_seen(p, hb) == {p.sb1, p.sb2}
    assert studies_seen(p, p.hospital("HA")) == {p.sa1}
    assert_refused(p, hb, p.sa1, "other-hospital")
    # a DIMSE peer known by its code only
    by_code = Actor(kind="hospital", subject="HA", hospital_code="HA")
    assert studies_seen(p, by_code) == {p.sa1}
    assert len(p.services.retrieve.locate(p.sa1, actor=by_code)) == 1


def test_resident_sees_own_records_across_hospitals(province: Province) -> None:
    p = province
    r1, r2 = p.resident(p.r1), p.resident(p.r2)
    assert studies_seen(p, r1) == {p.sa1, p.sb1}
    assert studies_seen(p, r2) == {p.sb2}
    assert_refused(p, r2, p.sa1, "not-own-record")
    family = Actor(kind="resident", subject="account:fam", resident_ids=frozenset({p.r1, p.r2}))
    assert studies_seen(p, family) == {p.sa1, p.sb1, p.sb2}


def test_search_filter_keeps_limit_and_offset_right(province: Province) -> None:
    p = province
    hb = p.hospital("HB")
    pages = [p.services.query.search(parse_search("study", [("limit", "1"), ("offset", str(i))]),
                                     actor=hb) for i in range(3)]
    assert [len(page.matches) for page in pages] == [1, 1, 0]
    assert pages[0].truncated and not pages[1].truncated
    series = p.services.query.search(parse_search("series", []), actor=hb)
    assert {m["0020000D"]["Value"][0] for m in series.matches} == {p.sb1, p.sb2}
    instances = p.services.query.search(parse_search("instance", []), actor=p.doctor)
    assert {m["0020000D"]["Value"][0] for m in instances.matches} == {p.sa1}
    row = audit_rows(p.db_url)[0]
    assert (row.action, row.outcome) == ("search", "allowed")


def test_guessed_uid_is_refused_like_a_forbidden_one(province: Province) -> None:
    p = province
    with pytest.raises(NotAuthorizedError) as absent:
        p.services.retrieve.locate("1.2.3.4.5.6", actor=p.doctor)
    with pytest.raises(NotAuthorizedError) as forbidden:
        p.services.retrieve.locate(p.sb2, actor=p.doctor)
    assert absent.value.message.replace("1.2.3.4.5.6", "X") == \
        forbidden.value.message.replace(p.sb2, "X")
    assert audit_rows(p.db_url, 2)[1].reason == "absent"
    # the operator and administrators see everything, and "absent" is simply not found
    with pytest.raises(NotFoundError):
        p.services.retrieve.locate("1.2.3.4.5.6", actor=LOCAL_OPERATOR)
    admin = Actor(kind="admin", subject="admin")
    assert studies_seen(p, admin) == {p.sa1, p.sb1, p.sb2}
    assert audit_rows(p.db_url)[0].actor_kind == "admin"


def test_unknown_actor_kind_sees_nothing(province: Province) -> None:
    p = province
    stranger = Actor(kind="researcher", subject="x")  # type: ignore[arg-type]
    assert studies_seen(p, stranger) == set()
    assert_refused(p, stranger, p.sa1, "unknown-actor")
