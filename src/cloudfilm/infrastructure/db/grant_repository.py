"""Queries of authorisation grants (``access_grant``).

:func:`active_scopes` is the contract the access policy (``services.access.policy``) calls
on every request that touches another hospital's studies; it reads the table each time,
so a revocation or an expiry holds from the very next request (nothing is cached).
Like every repository: no commits, the service owns the unit of work.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, select, update
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db.models import AccessGrant

ACTIVE = "active"


def active_scopes(conn: Connection, *, doctor_account_id: int,
                  resident_ids: Sequence[int] | None,
                  now: datetime) -> dict[int, frozenset[str] | None]:
    """What a doctor may see now, per resident, under their live grants.

    Parameters
    ----------
    conn
        A Core connection (or ``session.connection()``); read only.
    doctor_account_id
        The doctor's ``account.id`` (``Actor.account_id``).
    resident_ids
        Residents to consider; ``None`` means every resident.
    now
        The instant of the decision (timezone-aware).

    Returns
    -------
    dict
        For each resident with at least one grant held by that doctor that is active,
        unrevoked and unexpired at ``now`` (any mode, break-glass included): ``None`` when
        one of them covers all studies, else the frozenset of granted StudyInstanceUIDs.
        Residents without such a grant are absent.
    """
    if resident_ids is not None and not resident_ids:
        return {}
    # UTC: SQLite stores timestamps without offset, so every bound value must be UTC.
    now = now.astimezone(UTC)
    query = (
        select(AccessGrant.resident_id, AccessGrant.scope_all, AccessGrant.study_uids)
        .where(AccessGrant.doctor_account_id == doctor_account_id,
               AccessGrant.status == ACTIVE,
               AccessGrant.revoked_at.is_(None),
               AccessGrant.expires_at > now)
    )
    if resident_ids is not None:
        query = query.where(AccessGrant.resident_id.in_(list(set(resident_ids))))
    scopes: dict[int, set[str] | None] = {}
    for resident_id, scope_all, study_uids in conn.execute(query):
        if scope_all:
            scopes[resident_id] = None
            continue
        held = scopes.setdefault(resident_id, set())
        if held is not None:
            held.update(orjson.loads(study_uids or "[]"))
    return {rid: (None if uids is None else frozenset(uids)) for rid, uids in scopes.items()}


# --- grants, for the consent service ----------------------------------------------------


def add_grant(session: Session, values: dict[str, Any]) -> AccessGrant:
    row = AccessGrant(**values)
    session.add(row)
    session.flush()
    return row


def grant_by_id(session: Session, grant_id: int, *, for_update: bool = False) -> AccessGrant | None:
    query = select(AccessGrant).where(AccessGrant.id == grant_id)
    if for_update:
        # PostgreSQL: two decisions on one request serialise (SQLite's BEGIN IMMEDIATE
        # already serialises writers; FOR UPDATE is ignored there).
        query = query.with_for_update()
    return session.scalars(query).first()


def grants_of_residents(session: Session, resident_ids: Sequence[int], *,
                        statuses: Sequence[str] | None = None,
                        limit: int = 500) -> Sequence[AccessGrant]:
    query = select(AccessGrant).where(AccessGrant.resident_id.in_(list(resident_ids)))
    if statuses:
        query = query.where(AccessGrant.status.in_(list(statuses)))
    return session.scalars(query.order_by(AccessGrant.id.desc()).limit(limit)).all()


def grants_of_doctor(session: Session, doctor_account_id: int, *,
                     limit: int = 500) -> Sequence[AccessGrant]:
    return session.scalars(
        select(AccessGrant).where(AccessGrant.doctor_account_id == doctor_account_id)
        .order_by(AccessGrant.id.desc()).limit(limit)
    ).all()


def grants_to_review(session: Session, hospital_id: int | None, *,
                     include_done: bool = False, limit: int = 500) -> Sequence[AccessGrant]:
    """In-person and break-glass grants of a hospital (``None``: every hospital)."""
    query = select(AccessGrant).where(AccessGrant.review_status != "")
    if not include_done:
        query = query.where(AccessGrant.review_status == "pending")
    if hospital_id is not None:
        query = query.where(AccessGrant.hospital_id == hospital_id)
    return session.scalars(query.order_by(AccessGrant.id).limit(limit)).all()


def expire_due(session: Session, now: datetime) -> int:
    """Mark active grants past their end as expired (bookkeeping only: :func:`active_scopes`
    already ignores them by time)."""
    result = session.execute(
        update(AccessGrant)
        .where(AccessGrant.status == ACTIVE, AccessGrant.expires_at <= now.astimezone(UTC))
        .values(status="expired")
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def pending_requests(session: Session, resident_ids: Sequence[int]) -> Sequence[AccessGrant]:
    return session.scalars(
        select(AccessGrant)
        .where(AccessGrant.resident_id.in_(list(resident_ids)),
               AccessGrant.status == "requested")
        .order_by(AccessGrant.id.desc())
    ).all()
