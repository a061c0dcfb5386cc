"""Sharing one study with a doctor outside the platform: a time-limited, revocable,
view-only link (and its QR code), optionally protected by a 4-digit PIN.

The link carries a random token; only its SHA-256 is stored (a stolen database holds no
working link). Opening it yields an :class:`Actor` that acts as the resident for that one
study (the pages pass only the link's study UID to the services), so the access policy
still decides and every use is an audit record under ``share:<id>`` that the resident
sees in "who looked at my data". Five wrong PINs lock the link.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from cloudfilm.infrastructure.db import share_repository as repo
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError
from cloudfilm.services.access.audit import AuditEntry, AuditService
from cloudfilm.services.errors import (
    InvalidInputError,
    NotAuthenticatedError,
    NotAuthorizedError,
    NotFoundError,
    RateLimitedError,
    ResourceUnavailableError,
)
from cloudfilm.services.kernel.actor import Actor, Permission, Role
from cloudfilm.services.portal.timeline import TimelineService

MIN_HOURS, MAX_HOURS = 1, 30 * 24
MAX_FAILED_PINS = 5
SHARE_DISPLAY = "Doctor with your share link"


@dataclass(frozen=True, slots=True)
class ShareView:
    id: int
    study_instance_uid: str
    resident_id: int
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    uses: int
    has_pin: bool

    @property
    def active(self) -> bool:
        return self.revoked_at is None and self.expires_at > datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class OpenedShare:
    link: ShareView
    actor: Actor
    """The resident, narrowed to this link (``share:<id>`` in the audit trail)."""


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _view(row: object) -> ShareView:
    r = row
    return ShareView(r.id, r.study_instance_uid, r.resident_id,  # type: ignore[attr-defined]
                     _aware(r.created_at), _aware(r.expires_at),  # type: ignore[attr-defined]
                     _aware(r.revoked_at) if r.revoked_at else None,  # type: ignore[attr-defined]
                     r.uses, bool(r.pin_hash))  # type: ignore[attr-defined]


class ShareService:
    """Create, list, revoke and open share links.

    Parameters
    ----------
    db, audit, timeline
        The index, the audit trail and the timeline (which checks through the policy that
        a study is the resident's before it is shared).
    """

    def __init__(self, db: Database, audit: AuditService, timeline: TimelineService) -> None:
        self._db = db
        self._audit = audit
        self._timeline = timeline

    def create(self, actor: Actor, study_uid: str, *, hours: int,
               pin: str = "") -> tuple[str, ShareView]:
        """A new link to ``study_uid`` for ``hours`` (1 h to 30 days); returns the token
        (shown once, never stored) and the link.

        Raises
        ------
        InvalidInputError
            Hours out of range, or a PIN that is not 4 digits.
        NotAuthorizedError
            Not a resident, or not their (or their family's) study.
        """
        if not actor.can(Permission.SHARE_STUDY) or actor.account_id is None:
            raise NotAuthorizedError("only a signed-in resident shares their studies")
        if not MIN_HOURS <= hours <= MAX_HOURS:
            raise InvalidInputError("a share link lasts 1 hour to 30 days")
        if pin and not (len(pin) == 4 and pin.isdigit()):
            raise InvalidInputError("the PIN is 4 digits")
        summary, _ = self._timeline.study(actor, study_uid)  # policy decides, audited
        resident_id = summary.resident_id or (min(actor.resident_ids)
                                               if len(actor.resident_ids) == 1 else None)
        if resident_id is None:
            resident_id = self._owner(actor, study_uid)
        token = secrets.token_urlsafe(24)
        now = datetime.now(UTC)
        try:
            with self._db.writing() as conn:
                link_id = repo.add(conn, token_hash=_hash(token), resident_id=resident_id,
                                   account_id=actor.account_id, study_instance_uid=study_uid,
                                   pin_hash=_hash(f"{token}:{pin}") if pin else "",
                                   created_at=now, expires_at=now + timedelta(hours=hours))
                self._audit.record_many(conn, [AuditEntry(
                    actor, "share.create", "allowed", "study", study_uid,
                    resident_id=resident_id, reason="resident",
                    detail={"share": link_id, "hours": hours, "pin": bool(pin)})])
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        return token, ShareView(link_id, study_uid, resident_id, now,
                                now + timedelta(hours=hours), None, 0, bool(pin))

    def _owner(self, actor: Actor, study_uid: str) -> int:
        for rid in sorted(actor.resident_ids):
            try:
                self._timeline.study(replace(actor, resident_ids=frozenset({rid})), study_uid)
                return rid
            except NotAuthorizedError:
                continue
        raise NotAuthorizedError("not your study")

    def mine(self, actor: Actor) -> list[ShareView]:
        if not actor.can(Permission.SHARE_STUDY) or not actor.resident_ids:
            raise NotAuthorizedError("only a signed-in resident has share links")
        with self._db.reading() as conn:
            return [_view(r) for r in repo.of_residents(conn, sorted(actor.resident_ids))]

    def revoke(self, actor: Actor, link_id: int) -> None:
        if not actor.can(Permission.SHARE_STUDY) or not actor.resident_ids:
            raise NotAuthorizedError("only a signed-in resident revokes share links")
        try:
            with self._db.writing() as conn:
                done = repo.revoke(conn, link_id, sorted(actor.resident_ids), datetime.now(UTC))
                if done:
                    self._audit.record_many(conn, [AuditEntry(
                        actor, "share.revoke", "allowed", "share", str(link_id),
                        resident_id=None, reason="resident", detail={"share": link_id})])
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        if not done:
            raise NotFoundError("no such active link of yours")

    def peek(self, token: str) -> ShareView:
        """The link behind ``token`` if it still works (to ask for the PIN)."""
        with self._db.reading() as conn:
            row = repo.by_token_hash(conn, _hash(token[:64]))
        if row is None:
            raise NotFoundError("this link does not exist")
        view = _view(row)
        if not view.active:
            raise NotFoundError("this link was revoked or has expired")
        return view

    def open(self, token: str, pin: str = "", *, address: str = "",
             count: bool = False) -> OpenedShare:
        """Check the link (and PIN); ``count``: record the opening as a use.

        Raises
        ------
        NotFoundError
            Unknown, revoked or expired.
        NotAuthenticatedError
            Wrong PIN.
        RateLimitedError
            Too many wrong PINs: the link is locked.
        """
        with self._db.writing() as conn:
            row = repo.by_token_hash(conn, _hash(token[:64]))
            if row is None or row.revoked_at is not None or \
                    _aware(row.expires_at) <= datetime.now(UTC):
                raise NotFoundError("this link was revoked or has expired")
            # A share viewer, not the resident: the policy itself keeps it to this study.
            actor = Actor(kind="resident", subject=f"share:{row.id}",
                          roles=frozenset({Role.SHARE_VIEWER}),
                          resident_ids=frozenset({row.resident_id}),
                          shared_study_uid=row.study_instance_uid, display=SHARE_DISPLAY,
                          address=address)
            if row.failed_pins >= MAX_FAILED_PINS:
                raise RateLimitedError("too many wrong PINs; this link is locked",
                                       retry_after=3600)
            if row.pin_hash and not hmac.compare_digest(row.pin_hash,
                                                        _hash(f"{token[:64]}:{pin}")):
                repo.count_failed_pin(conn, row.id)
                self._audit.record_many(conn, [AuditEntry(
                    actor, "share.open", "denied", "study", row.study_instance_uid,
                    resident_id=row.resident_id, reason="wrong PIN",
                    detail={"share": row.id})])
                failed = True
            else:
                failed = False
                if count:
                    repo.count_use(conn, row.id)
                    self._audit.record_many(conn, [AuditEntry(
                        actor, "share.open", "allowed", "study", row.study_instance_uid,
                        resident_id=row.resident_id, reason="share link",
                        detail={"share": row.id})])
        if failed:  # raised after the commit, so the failure counts
            raise NotAuthenticatedError("wrong PIN")
        return OpenedShare(_view(row), actor)


class PreferenceService:
    """A resident's portal preferences, kept with their account."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def elderly(self, actor: Actor) -> bool | None:
        """The account's elderly-mode choice, or None if never made."""
        if actor.account_id is None:
            return None
        with self._db.reading() as conn:
            return repo.elderly(conn, actor.account_id)

    def set_elderly(self, actor: Actor, value: bool) -> None:
        if not actor.can(Permission.SHARE_STUDY) or actor.account_id is None:
            raise NotAuthorizedError("only a signed-in resident has portal preferences")
        try:
            with self._db.writing() as conn:
                repo.set_elderly(conn, actor.account_id, value, datetime.now(UTC))
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
