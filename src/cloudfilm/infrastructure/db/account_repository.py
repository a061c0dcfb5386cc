"""Queries of accounts, sessions, one-time codes, the local SMS outbox and rate limits.

No commits here: the service owns the unit of work.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db.models import (
    Account,
    AuthSession,
    FamilyLink,
    Hospital,
    OtpCode,
    RateLimitEvent,
    SmsOutbox,
)

# --- accounts ----------------------------------------------------------------------------


def add_account(session: Session, values: dict[str, Any]) -> Account:
    row = Account(**values)
    session.add(row)
    session.flush()
    return row


def account_by_id(session: Session, account_id: int, *,
                  for_update: bool = False) -> Account | None:
    query = select(Account).where(Account.id == account_id)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


def account_by_username(session: Session, username: str, *,
                        for_update: bool = False) -> Account | None:
    query = select(Account).where(Account.username == username)
    if for_update:
        query = query.with_for_update()
    return session.scalars(query).first()


def account_by_phone(session: Session, phone_hash: str) -> Account | None:
    return session.scalars(select(Account).where(Account.phone_hash == phone_hash)).first()


def account_of_resident(session: Session, resident_id: int) -> Account | None:
    return session.scalars(
        select(Account).where(Account.resident_id == resident_id, Account.active.is_(True))
    ).first()


def accounts(session: Session, *, hospital_id: int | None = None,
             kind: str | None = None, limit: int = 500) -> Sequence[Account]:
    query = select(Account)
    if hospital_id is not None:
        query = query.where(Account.hospital_id == hospital_id)
    if kind is not None:
        query = query.where(Account.kind == kind)
    return session.scalars(query.order_by(Account.id).limit(limit)).all()


def dependents_of(session: Session, resident_id: int) -> list[int]:
    """Residents whose parent or guardian ``resident_id`` is (a child, an elderly parent)."""
    return list(session.scalars(
        select(FamilyLink.resident_id).where(FamilyLink.related_resident_id == resident_id)
    ))


def guardians_of(session: Session, resident_id: int) -> list[int]:
    return list(session.scalars(
        select(FamilyLink.related_resident_id).where(FamilyLink.resident_id == resident_id)
    ))


# --- sessions ----------------------------------------------------------------------------


def add_session(session: Session, values: dict[str, Any]) -> AuthSession:
    row = AuthSession(**values)
    session.add(row)
    session.flush()
    return row


def live_session(session: Session, token_hash: str, now: datetime) -> Any:
    """The account of a live session token, with its hospital's code and state, or None."""
    return session.execute(
        select(Account, Hospital.code, Hospital.active)
        .join(AuthSession, AuthSession.account_id == Account.id)
        .outerjoin(Hospital, Hospital.id == Account.hospital_id)
        .where(AuthSession.token_hash == token_hash, AuthSession.revoked_at.is_(None),
               AuthSession.expires_at > now.astimezone(UTC))
    ).one_or_none()


def revoke_session(session: Session, token_hash: str, now: datetime) -> bool:
    result = session.execute(
        update(AuthSession)
        .where(AuthSession.token_hash == token_hash, AuthSession.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0))


def revoke_sessions_of(session: Session, account_id: int, now: datetime) -> None:
    session.execute(
        update(AuthSession)
        .where(AuthSession.account_id == account_id, AuthSession.revoked_at.is_(None))
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )


# --- one-time codes ----------------------------------------------------------------------


def add_code(session: Session, values: dict[str, Any]) -> OtpCode:
    row = OtpCode(**values)
    session.add(row)
    session.flush()
    return row


def retire_codes(session: Session, purpose: str, subject: str, now: datetime) -> None:
    """A new code replaces the unused ones of the same purpose and subject."""
    session.execute(
        update(OtpCode)
        .where(OtpCode.purpose == purpose, OtpCode.subject == subject,
               OtpCode.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )


def current_code(session: Session, purpose: str, subject: str, now: datetime) -> OtpCode | None:
    return session.scalars(
        select(OtpCode)
        .where(OtpCode.purpose == purpose, OtpCode.subject == subject,
               OtpCode.used_at.is_(None), OtpCode.expires_at > now.astimezone(UTC))
        .order_by(OtpCode.id.desc()).limit(1).with_for_update()
    ).first()


def purge_codes(session: Session, before: datetime) -> None:
    session.execute(delete(OtpCode).where(OtpCode.expires_at < before.astimezone(UTC)))


# --- SMS outbox --------------------------------------------------------------------------


def add_outbox(session: Session, values: dict[str, Any]) -> SmsOutbox:
    row = SmsOutbox(**values)
    session.add(row)
    session.flush()
    return row


def outbox(session: Session, *, phone_hash: str | None = None,
           limit: int = 100) -> Sequence[SmsOutbox]:
    query = select(SmsOutbox)
    if phone_hash is not None:
        query = query.where(SmsOutbox.phone_hash == phone_hash)
    return session.scalars(query.order_by(SmsOutbox.id.desc()).limit(limit)).all()


# --- rate limits -------------------------------------------------------------------------


def lock_bucket(session: Session, bucket: str) -> None:
    """Serialise counters of one bucket across processes for this transaction.

    PostgreSQL: a transaction-scoped advisory lock keyed by the bucket, so that two
    processes cannot both count 4 and both insert the 5th attempt. SQLite: write
    transactions are already serial (``BEGIN IMMEDIATE``).
    """
    if session.get_bind().dialect.name != "postgresql":
        return
    key = int.from_bytes(hashlib.sha256(bucket.encode()).digest()[:8], "big", signed=True)
    session.execute(select(func.pg_advisory_xact_lock(key)))


def bucket_events(session: Session, bucket: str, since: datetime) -> list[datetime]:
    return list(session.scalars(
        select(RateLimitEvent.at)
        .where(RateLimitEvent.bucket == bucket, RateLimitEvent.at > since.astimezone(UTC))
        .order_by(RateLimitEvent.at)
    ))


def add_bucket_event(session: Session, bucket: str, at: datetime) -> None:
    session.add(RateLimitEvent(bucket=bucket, at=at))
    session.flush()


def prune_bucket(session: Session, bucket: str, before: datetime) -> None:
    session.execute(delete(RateLimitEvent).where(RateLimitEvent.bucket == bucket,
                                                 RateLimitEvent.at <= before.astimezone(UTC)))


def window_start(now: datetime, seconds: int) -> datetime:
    return now - timedelta(seconds=seconds)
