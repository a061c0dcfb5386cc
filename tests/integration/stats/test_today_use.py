"""Today's use counters kept between refreshes (only new audit records read) equal a
from-scratch count after every refresh and across midnight, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tests.integration.stats import support

from cloudfilm.infrastructure.db import access_repository as audit_repo
from cloudfilm.services.access.audit import AuditEntry, _values, row_hash
from cloudfilm.services.container import Services
from cloudfilm.services.kernel.actor import Actor
from cloudfilm.services.stats.figures import USE_CACHE_S, StatsService

START = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)  # 22:00 in Shanghai: midnight comes
ADMIN = Actor(kind="admin", subject="admin:today")


def _append(services: Services, at: datetime, entries: list[AuditEntry]) -> None:
    """Audit records stamped ``at`` (the service stamps the real time)."""
    with services.health._db.writing() as conn:
        seq, prev = audit_repo.lock_chain_head(conn)
        rows = []
        for entry in entries:
            seq += 1
            values = _values(entry, seq=seq, at=at, prev_hash=prev)
            values["hash"] = prev = row_hash(values)
            rows.append(values)
        audit_repo.append_audit(conn, rows, seq=seq, last_hash=prev)


def _figures(stats: StatsService) -> dict[str, Any]:
    return {n: t.rows for n, t in stats.tables(ADMIN, ("use", "pairs"), days=7).items()}


def test_incremental_counters_equal_a_fresh_count(services: Services) -> None:
    assert services.stats is not None
    db = services.health._db
    support.clear(db)
    h1 = support.hospital(db, "T1")
    h2 = support.hospital(db, "T2", city="宁波")
    doctor = Actor(kind="doctor", subject="account:7", hospital_id=h1, hospital_code="T1")
    resident = Actor(kind="resident", subject="resident:3", resident_ids=frozenset({3}))
    now = [START]
    kept = StatsService(db, services.stats.rollup, services.stats._audit, clock=lambda: now[0])
    uids: list[str] = []
    for step in range(8):
        if step == 5:
            now[0] = START + timedelta(hours=2, minutes=1)  # 00:01 the next local day
        if step % 2 == 0:  # a new study, each hospital in turn
            uids.append(support.study(db, (h1, h2)[step % 4 // 2], exam_at=now[0],
                                      received_at=now[0]))
        entries = [AuditEntry(doctor, "sign_in", "success"),
                   AuditEntry(resident, "sign_in", "success")]
        for uid in uids[-3:]:  # repeated reads of earlier studies count once a day
            entries += [AuditEntry(doctor, "retrieve", "allowed", "study", uid, 3, "grant"),
                        AuditEntry(doctor, "retrieve", "allowed", "series", f"{uid}.1", 3,
                                   "grant"),
                        AuditEntry(resident, "retrieve", "allowed", "study", uid, 3, "self"),
                        AuditEntry(doctor, "download", "allowed", "study", uid, 3, "grant")]
        _append(services, now[0], entries)
        incremental = _figures(kept)
        fresh = StatsService(db, services.stats.rollup, services.stats._audit,
                             clock=lambda: now[0])
        assert incremental == _figures(fresh), step
        assert dict(incremental["use"])["staff_sign_in"] == (step + 1 if step < 5 else step - 4)
        now[0] += timedelta(seconds=USE_CACHE_S + 1)
