"""Today's use counters kept between refreshes (only new audit records read) equal a
from-scratch count after every refresh and across midnight, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert
from tests.integration.stats import support

from cloudfilm.infrastructure.db.models import AccessGrant, Account, Resident
from cloudfilm.services.access.audit import AuditEntry
from cloudfilm.services.container import Services
from cloudfilm.services.kernel.actor import Actor
from cloudfilm.services.stats.figures import USE_CACHE_S, StatsService

START = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)  # 22:00 in Shanghai: midnight comes
ADMIN = Actor(kind="admin", subject="admin:today")


def _append(services: Services, at: datetime, entries: list[AuditEntry]) -> None:
    """Audit records stamped ``at`` (the service stamps the real time)."""
    with services.health._db.writing() as conn:
        services.audit.record_many(conn, entries, at=at)


def _grant(services: Services, doctor: Actor, resident: int, mode: str, at: datetime) -> None:
    with services.health._db.writing() as conn:
        conn.execute(insert(AccessGrant).values(
            doctor_account_id=doctor.account_id, hospital_id=doctor.hospital_id,
            resident_id=resident, mode=mode, status="active", hours=24, requested_at=at,
            decided_at=at, expires_at=at + timedelta(hours=24)))


def _figures(stats: StatsService) -> dict[str, Any]:
    return {n: t.rows for n, t in stats.tables(ADMIN, ("use", "pairs"), days=7).items()}


def test_incremental_counters_equal_a_fresh_count(services: Services) -> None:
    assert services.stats is not None
    db = services.health._db
    support.clear(db)
    h1 = support.hospital(db, "T1")
    h2 = support.hospital(db, "T2", city="宁波")
    with db.writing() as conn:
        rid = conn.execute(insert(Resident).values(created_at=START, updated_at=START)
                           ).inserted_primary_key[0]  # type: ignore[index]
        aid = conn.execute(insert(Account).values(
            kind="doctor", username="today-doc", display_name="Dr", hospital_id=h1,
            department="r", created_at=START)).inserted_primary_key[0]  # type: ignore[index]
    doctor = Actor(kind="doctor", subject=f"account:{aid}", account_id=aid, hospital_id=h1,
                   hospital_code="T1")
    resident = Actor(kind="resident", subject=f"resident:{rid}", resident_ids=frozenset({rid}))
    now = [START]
    kept = StatsService(db, services.stats.rollup, services.stats._audit, clock=lambda: now[0])
    now[0] = START - timedelta(seconds=USE_CACHE_S + 1)
    kept.warm()  # what `cloudfilm serve` does at start: the day's tally read once
    now[0] = START
    uids: list[str] = []
    for step in range(8):
        if step == 5:
            now[0] = START + timedelta(hours=2, minutes=1)  # 00:01 the next local day
        if step in (3, 6):  # a grant requested later in the day changes earlier views' mode
            _grant(services, doctor, rid, ("sms", "portal")[step // 6], now[0])
        if step % 2 == 0:  # a new study, each hospital in turn
            uids.append(support.study(db, (h1, h2)[step % 4 // 2], exam_at=now[0],
                                      received_at=now[0]))
        entries = [AuditEntry(doctor, "sign_in", "success"),
                   AuditEntry(resident, "sign_in", "success")]
        for uid in uids[-3:]:  # repeated reads of earlier studies count once a day
            entries += [AuditEntry(doctor, "retrieve", "allowed", "study", uid, rid, "grant"),
                        AuditEntry(doctor, "retrieve", "allowed", "series", f"{uid}.1", rid,
                                   "grant"),
                        AuditEntry(resident, "retrieve", "allowed", "study", uid, rid, "self"),
                        AuditEntry(doctor, "download", "allowed", "study", uid, rid, "grant")]
        _append(services, now[0], entries)
        incremental = _figures(kept)
        fresh = StatsService(db, services.stats.rollup, services.stats._audit,
                             clock=lambda: now[0])
        assert incremental == _figures(fresh), step
        use = dict(incremental["use"])
        assert use["staff_sign_in"] == (step + 1 if step < 5 else step - 4)
        if step in (3, 4):
            assert "cross_view:sms" in use and "cross_view:unknown" not in use
        now[0] += timedelta(seconds=USE_CACHE_S + 1)
