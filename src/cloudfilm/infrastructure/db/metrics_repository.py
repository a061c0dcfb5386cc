"""Index-wide figures for /metrics: a handful of aggregate queries, none over ``instance``
(the study rows carry the counters, ~300 times fewer rows)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db.models import (
    AuditChainHead,
    ReconciliationItem,
    StorageJob,
    Study,
)


def archive_totals(session: Session) -> tuple[int, int, int]:
    """(studies, instances, bytes) of the index."""
    row = session.execute(select(func.count(), func.coalesce(func.sum(Study.num_instances), 0),
                                 func.coalesce(func.sum(Study.size_bytes), 0))).one()
    return int(row[0]), int(row[1]), int(row[2])


def held_totals(session: Session) -> dict[tuple[str, str], tuple[int, int]]:
    """(reason, state) -> (objects, bytes) of the reconciliation queue."""
    rows = session.execute(
        select(ReconciliationItem.reason, ReconciliationItem.state, func.count(),
               func.coalesce(func.sum(ReconciliationItem.size_bytes), 0))
        .group_by(ReconciliationItem.reason, ReconciliationItem.state))
    return {(str(r[0]), str(r[1])): (int(r[2]), int(r[3])) for r in rows}


def jobs_by_state(session: Session) -> dict[tuple[str, str], int]:
    """(kind, state) -> jobs."""
    rows = session.execute(select(StorageJob.kind, StorageJob.state, func.count())
                           .group_by(StorageJob.kind, StorageJob.state))
    return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}


def audit_chain_length(session: Session) -> int:
    value: Any = session.execute(select(AuditChainHead.seq).limit(1)).scalar()
    return int(value or 0)
