"""A resident adds a family member to act for (an elderly parent, a child) from the portal.

Acting for someone shows their studies, reports and access log and lets one approve or
revoke doctors' access for them, so the other person must agree, and a stranger must never
be able to attach a record (issue 13; the real-name rules of issue 11):

1. The resident types the other person's name (as on the ID card) and ID number.
   The ID's keyed hash must find a resident whose name is exactly that name; the person
   must have a portal account with a *proven* phone (an account's, proven by an SMS code:
   never a phone a hospital feed recorded). Then a code goes to that phone, naming who asks.
   Whatever fails, the answer is the same ("if the details match, a code was sent"), so the
   form tells nothing about who is indexed or has an account. Each ask is audited, naming
   the other person when the ID is indexed (they see it in "who looked").
2. The resident enters the code the other person read out; or, for a child or an elder
   without a phone, the one-time activation code a hospital handed over after checking
   both ID cards at the desk (bound to that person). The link is recorded (family_link,
   identity event and hash-chained audit record in one transaction).

Codes are bound to (asking resident, other resident): a code for one person cannot link
another; 5 wrong guesses burn it; asks are limited to 5 an hour per account and checks to
10 in 15 minutes. The relation: ``parent`` for a person under 18, else ``guardian``.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from typing import Any, Literal

from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db import account_repository as account_repo
from cloudfilm.infrastructure.db import identity_repository as identity_repo
from cloudfilm.infrastructure.db.models import Resident
from cloudfilm.infrastructure.db.session import Database
from cloudfilm.services.access.accounts import ACTIVATION_DOMAIN
from cloudfilm.services.access.audit import AuditService
from cloudfilm.services.access.otp import Limit, OneTimeCodes, RateLimiter, aware
from cloudfilm.services.access.sms import PHONE_DOMAIN, SmsService
from cloudfilm.services.errors import (
    InvalidInputError,
    NotAuthenticatedError,
    NotAuthorizedError,
)
from cloudfilm.services.identity import names
from cloudfilm.services.identity.mpi import NATIONAL_ID, parse_national_id, record_event
from cloudfilm.services.identity.protection import IdProtector
from cloudfilm.services.kernel.actor import Actor, Permission
from cloudfilm.services.transactions import guarded

logger = logging.getLogger(__name__)

PURPOSE = "family"
ASKS = Limit(5, 3600)
CHECKS = Limit(10, 900)
ADULT_AGE = 18


class _Refused(Exception):
    """Inside the transaction: not confirmed (one answer outside)."""

    def __init__(self, resident_id: int | None) -> None:
        super().__init__("refused")
        self.resident_id = resident_id


def _display(name: str) -> str:
    """A DICOM person name as the SMS names the asker: characters when there are some."""
    groups = name.split("=")
    ideographic = groups[1] if len(groups) > 1 and groups[1].strip("^ ") else ""
    if ideographic:
        return ideographic.replace("^", "")
    parts = [p for p in groups[0].split("^") if p]
    return " ".join(reversed(parts[:2]))


def _age(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


class FamilyService:
    """Ask for and confirm a family link from the portal."""

    def __init__(self, db: Database, protector: IdProtector, sms: SmsService,
                 codes: OneTimeCodes, limiter: RateLimiter, audit: AuditService) -> None:
        self._db = db
        self._protector = protector
        self._sms = sms
        self._codes = codes
        self._limiter = limiter
        self._audit = audit

    # -- helpers (inside a transaction) ----------------------------------------------------

    def _own(self, session: Session, actor: Actor) -> int:
        """The resident the signed-in account is (never a family member it acts for)."""
        if not actor.can(Permission.LINK_FAMILY) or actor.account_id is None:
            raise NotAuthorizedError("only a signed-in resident adds family members")
        account = account_repo.account_by_id(session, actor.account_id)
        if account is None or not account.active or account.resident_id is None:
            raise NotAuthorizedError("only a signed-in resident adds family members")
        return int(account.resident_id)

    def _target(self, session: Session, own: int, name: str, number: str) -> Resident:
        found = identity_repo.resident_by_national_id(
            session, self._protector.lookup_hash(NATIONAL_ID, number))
        seen = 0
        while found is not None and found.merged_into is not None and seen < 16:
            found, seen = identity_repo.resident_by_id(session, found.merged_into), seen + 1
        if found is None:
            raise _Refused(None)
        if not names.exact_name(found.name, name) or found.id == own:
            raise _Refused(found.id)
        return found

    @staticmethod
    def _subject(own: int, target: int) -> str:
        return f"{own}:{target}"

    # -- the two steps ---------------------------------------------------------------------

    def ask(self, actor: Actor, *, name: str, national_id: str) -> None:
        """Text a code to the other person's proven phone if everything matches.

        Returns the same (nothing) whether or not a code went out.

        Raises
        ------
        InvalidInputError
            An ID number that is not a valid ID number, or no name (the form's own checks).
        RateLimitedError
            More than 5 asks an hour from this account.
        NotAuthorizedError
            Not a signed-in resident.
        """
        nid = parse_national_id(national_id)
        if not name.strip():
            raise InvalidInputError("name: as on the ID card")
        now = datetime.now(UTC)
        send: tuple[str, str, str] | None = None
        with guarded(self._db.write()) as session:
            own = self._own(session, actor)
            self._limiter.hit(session, f"family:ask:acct:{actor.account_id}", ASKS, now,
                              what="family requests")
            target_id: int | None = None
            try:
                target = self._target(session, own, name, nid.number)
                target_id = target.id
                account = account_repo.account_of_resident(session, target.id)
                if account is None or not account.active or not account.phone_enc:
                    raise _Refused(target.id)
                code = self._codes.issue(session, PURPOSE, self._subject(own, target.id), now)
                asker = identity_repo.resident_by_id(session, own)
                send = (self._protector.decrypt(PHONE_DOMAIN, account.phone_enc), code,
                        _display(asker.name) if asker is not None else "")
                outcome: Literal["success", "failure"] = "success"
            except _Refused as refused:
                target_id = refused.resident_id
                outcome = "failure"
            self._audit.record(session, actor=actor, action="family.ask", outcome=outcome,
                               resident_id=target_id, detail={"by_resident": own})
        if send is not None:
            phone, code, asker_name = send
            self._sms.send_code(phone, code, purpose=PURPOSE, doctor=asker_name)

    def confirm(self, actor: Actor, *, name: str, national_id: str,
                code: str) -> int:
        """Record the link once the code (or a hospital's activation code for that person)
        is right; returns the other person's resident id. Committed when this returns.

        Raises
        ------
        NotAuthenticatedError
            Wrong, expired or spent code, or the details do not match (one answer).
        RateLimitedError
            More than 10 checks in 15 minutes from this account.
        """
        nid = parse_national_id(national_id)
        now = datetime.now(UTC)
        refused = False
        linked = 0
        with guarded(self._db.write()) as session:
            own = self._own(session, actor)
            self._limiter.hit(session, f"family:check:acct:{actor.account_id}", CHECKS, now,
                              what="code checks")
            target_id: int | None = None
            try:
                target = self._target(session, own, name, nid.number)
                target_id = target.id
                how = self._proof(session, own, target.id, code, now)
                if how is None:
                    raise _Refused(target.id)
                relation = ("parent" if _age(nid.birth_date, now.date()) < ADULT_AGE
                            else "guardian")
                if identity_repo.find_family_link(session, target.id, own, relation) is None:
                    identity_repo.add_family_link(session, {
                        "resident_id": target.id, "related_resident_id": own,
                        "relation": relation, "created_at": now})
                    record_event(session, self._audit, actor=actor, at=now,
                                 action="family.link", resident_id=target.id,
                                 other_resident_id=own,
                                 detail={"relation": relation, "proof": how,
                                         "by": "portal"})
                linked = target.id
            except _Refused as no:
                target_id = no.resident_id
                refused = True
                self._audit.record(session, actor=actor, action="family.confirm",
                                   outcome="failure", resident_id=target_id,
                                   detail={"by_resident": own})
        if refused:  # after the commit: the counted guess and the burnt code persist
            raise NotAuthenticatedError("the code is wrong or has expired, or the details "
                                        "do not match")
        return linked

    def _proof(self, session: Session, own: int, target: int, code: str,
               now: datetime) -> str | None:
        cleaned = code.strip().upper().replace("-", "").replace(" ", "")
        if cleaned.isdigit() and len(cleaned) == 6:
            if self._codes.verify(session, PURPOSE, self._subject(own, target), cleaned, now):
                return "sms_code"
            return None
        if 8 <= len(cleaned) <= 16:
            row: Any = identity_repo.activation_code_by_hash(
                session, self._protector.lookup_hash(ACTIVATION_DOMAIN, cleaned))
            if (row is not None and row.used_at is None and aware(row.expires_at) > now
                    and row.resident_id == target):
                row.used_at = now
                return "hospital_activation_code"
        return None
