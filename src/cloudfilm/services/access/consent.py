"""Authorisation grants: a doctor asks, the resident says yes (three ways), or an emergency.

A grant lets one doctor (an account of one hospital) see one resident's studies, all of
them or the StudyInstanceUIDs named, for a purpose and a time. Ways to make it active:

1. ``sms``: the platform texts a code to the resident's phone; the patient reads it out to
   the doctor, who enters it (:meth:`ConsentService.confirm_sms`). The code is bound to the
   grant and to the requesting doctor's call (another doctor cannot use it).
2. ``portal``: the request waits in the resident's inbox (an SMS says so); the resident, or
   a family member who acts for them, approves or denies it.
3. ``in_person``: for a resident without a usable phone, the doctor records the consent
   with evidence: the ID card number, typed and checked against the resident's keyed hash,
   and a witness or a signature reference. Shorter validity; the hospital administrator
   reviews it; the resident and family are texted where a phone exists.

``break_glass``: emergency access with a mandatory reason, a short time box, the resident
texted, and a review afterwards.

Every decision reads and writes the database (no cache), so a revocation holds from the
next request; the policy reads live grants through ``grant_repository.active_scopes``.
"""

from __future__ import annotations

import hmac
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db import account_repository as account_repo
from cloudfilm.infrastructure.db import grant_repository as repo
from cloudfilm.infrastructure.db import identity_repository as identity_repo
from cloudfilm.infrastructure.db.models import AccessGrant, Account, Resident
from cloudfilm.infrastructure.db.session import Database
from cloudfilm.services.access.accounts import AuditRecorder, Outcome, audit_event
from cloudfilm.services.access.actor import Actor, Permission, Role
from cloudfilm.services.access.otp import Limit, OneTimeCodes, RateLimiter, aware
from cloudfilm.services.access.sms import PHONE_DOMAIN, SmsService
from cloudfilm.services.errors import (
    CloudfilmError,
    InvalidInputError,
    NotAuthenticatedError,
    NotAuthorizedError,
    NotFoundError,
    ResourceUnavailableError,
)
from cloudfilm.services.identity.mpi import NATIONAL_ID, parse_national_id
from cloudfilm.services.identity.protection import IdProtector
from cloudfilm.services.transactions import guarded as _guarded

logger = logging.getLogger(__name__)

MODES = ("sms", "portal", "in_person", "break_glass")

BREAK_GLASS_REFUSED = ("emergency access cannot be opened for this person: check the "
                       "national ID, or record an in-person consent")
"""The one refusal of a doctor's break-glass for a person the index does not know."""
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
MAX_STUDIES = 200


@dataclass(frozen=True, slots=True)
class GrantSettings:
    """The ``access`` settings grants need (hours)."""

    default_grant_hours: int = 72
    max_grant_hours: int = 720
    in_person_grant_hours: int = 24
    break_glass_hours: int = 4
    otp_sends_per_phone_hour: int = 5
    otp_sends_per_requester_hour: int = 20
    otp_checks_per_15min: int = 10


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """What a doctor asks for. The resident by ``resident_id`` or ``national_id``; no
    ``study_uids`` means all studies."""

    purpose: str
    resident_id: int | None = None
    national_id: str | None = None
    study_uids: tuple[str, ...] = ()
    hours: int | None = None


@dataclass(frozen=True, slots=True)
class InPersonEvidence:
    """What the doctor records when the patient consents in front of them."""

    id_card_number: str
    witness_name: str = ""
    signature_ref: str = ""


@dataclass(frozen=True, slots=True)
class GrantView:
    id: int
    resident_id: int
    doctor_account_id: int
    doctor: str
    hospital_id: int
    hospital_code: str
    hospital_name: str
    department: str
    scope_all: bool
    study_uids: tuple[str, ...]
    purpose: str
    mode: str
    status: str
    hours: int
    requested_at: datetime
    decided_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    review_status: str
    evidence: dict[str, Any]


class ConsentService:
    """Requests, decisions, revocations, expiry and review of access grants.

    Parameters
    ----------
    db, protector
        The index; the keyed hash of national IDs and the encryption of phones.
    sms, codes, limiter
        Text messages, one-time codes, the table-based rate limiter.
    settings
        Grant durations and code limits (``access`` settings).
    audit
        The audit trail, when wired; None logs ids only.
    """

    def __init__(self, db: Database, protector: IdProtector, sms: SmsService,
                 codes: OneTimeCodes, limiter: RateLimiter,
                 settings: GrantSettings | None = None,
                 audit: AuditRecorder | None = None) -> None:
        self._db = db
        self._protector = protector
        self._sms = sms
        self._codes = codes
        self._limiter = limiter
        self._s = settings or GrantSettings()
        self.audit = audit

    # -- doctors --

    def request(self, actor: Actor, req: GrantRequest, *, mode: str = "portal") -> GrantView:
        """Ask a resident for access; ``mode`` ``sms`` texts a code to read out, ``portal``
        puts the request in the resident's inbox and texts a notice. Committed before the
        SMS is sent; the grant stays ``requested`` until the resident decides.

        Raises
        ------
        NotAuthorizedError
            Not a doctor.
        InvalidInputError
            Bad scope, purpose or hours; no phone for ``sms``; nobody to see a ``portal``
            request (the message says which mode to use instead).
        NotFoundError
            No such resident.
        RateLimitedError
            Too many codes sent to this phone or by this doctor.
        """
        if mode not in ("sms", "portal"):
            raise InvalidInputError("mode must be sms or portal (in_person and break_glass "
                                    "have their own endpoints)")
        now = datetime.now(UTC)
        hours = self._hours(req.hours, self._s.default_grant_hours)
        uids = _study_uids(req.study_uids)
        purpose = _purpose(req.purpose)
        notices: list[tuple[str, str]] = []
        refusal: CloudfilmError | None = None
        view: GrantView | None = None
        with self._write() as session:
            doctor = self._doctor(session, actor)
            resident = self._resident_or_none(session, req.resident_id, req.national_id)
            phone = self._own_phone(session, resident) if resident is not None else None
            if resident is None or (mode == "sms" and phone is None) or (
                    mode == "portal" and not self._someone_can_approve(session, resident)):
                # One answer whether the person is not indexed, has no proven phone or no
                # account (issue 11, finding 9: the error told any doctor which).
                refusal = InvalidInputError(
                    "this resident cannot be asked this way: ask them (or a family member) "
                    "to approve in the portal, or record an in-person consent",
                    code="grant-undeliverable")
                audit_event(self.audit, session, actor=actor, action="grant.request",
                            outcome="failure", detail={"mode": mode})
            else:
                grant = repo.add_grant(session, {
                    "doctor_account_id": doctor.id, "hospital_id": doctor.hospital_id,
                    "resident_id": resident.id, "scope_all": not uids,
                    "study_uids": orjson.dumps(list(uids)).decode(), "purpose": purpose,
                    "mode": mode, "status": "requested", "hours": hours,
                    "requested_at": now, "decided_by": "", "revoked_by": "",
                    "evidence": "{}", "review_status": "", "reviewed_by": "",
                    "review_note": "",
                })
                if mode == "sms":
                    # Only to the phone the resident proved (their account's), never to a
                    # phone a hospital's feed sent (issue 11, finding 1).
                    assert phone is not None
                    self._count_send(session, phone, actor, now)
                    code = self._codes.issue(session, "grant", f"grant:{grant.id}", now)
                    notices.append((phone, code))
                else:
                    for notice_phone in self._notice_phones(session, resident):
                        self._count_send(session, notice_phone, actor, now)
                        notices.append((notice_phone, ""))
                audit_event(self.audit, session, actor=actor, action="grant.request",
                            outcome="success", resident_id=resident.id,
                            detail={"grant": grant.id, "mode": mode})
                view = self._view(session, grant, now)
        if refusal is not None:
            raise refusal
        assert view is not None
        for notice_phone, code in notices:
            if code:
                self._sms.send_code(notice_phone, code, purpose="grant", doctor=view.doctor,
                                    hospital=view.hospital_name)
            else:
                self._sms.send_grant_request(notice_phone, doctor=view.doctor,
                                             hospital=view.hospital_name)
        return view

    def confirm_sms(self, actor: Actor, grant_id: int, code: str) -> GrantView:
        """The doctor enters the code the patient read out: the grant becomes active for
        its hours. Only the requesting doctor may; committed when this returns (a wrong
        code is counted: 5 wrong guesses burn it, and checks are rate limited).

        Raises
        ------
        NotAuthorizedError
            Another doctor's request.
        InvalidInputError
            Wrong, expired, used or burnt code (``invalid-code``), or the grant is not an
            SMS request waiting for its code.
        RateLimitedError
        """
        now = datetime.now(UTC)
        refusal: CloudfilmError | None = None
        with self._write() as session:
            doctor = self._doctor(session, actor)
            grant = self._grant(session, grant_id, for_update=True,
                                visible=lambda g: g.doctor_account_id == doctor.id)
            if grant.mode != "sms" or grant.status != "requested":
                raise InvalidInputError(f"grant {grant.id} is not waiting for an SMS code "
                                        f"(mode {grant.mode}, status {grant.status})")
            self._limiter.hit(session, f"otp-check:grant:{grant.id}",
                              Limit(self._s.otp_checks_per_15min, 900), now,
                              what="code checks for this request")
            self._limiter.hit(session, f"otp-check:req:account:{doctor.id}",
                              Limit(self._s.otp_checks_per_15min * 4, 900), now,
                              what="code checks by this doctor")
            outcome: Outcome = "success"
            if self._codes.verify(session, "grant", f"grant:{grant.id}", code, now):
                self._activate(grant, now, by="sms-code", hours=grant.hours)
            else:
                # 400, not 401: the doctor's session is fine, the code the patient read is not.
                refusal = InvalidInputError("the code is wrong, expired or already used; "
                                            "ask for a new request", code="invalid-code")
                outcome = "failure"
            audit_event(self.audit, session, actor=actor, action="grant.sms_confirm",
                        outcome=outcome, resident_id=grant.resident_id,
                        detail={"grant": grant.id})
            view = self._view(session, grant, now)
        if refusal is not None:
            raise refusal
        return view

    def in_person(self, actor: Actor, req: GrantRequest,
                  evidence: InPersonEvidence) -> GrantView:
        """Record a consent given in front of the doctor; active at once, for at most
        ``in_person_grant_hours``, pending the hospital administrator's review. The
        resident and family members with a phone are texted after the commit.

        Raises
        ------
        NotAuthorizedError
            Not a doctor, or the ID card number does not match the resident.
        InvalidInputError
            No witness and no signature reference, or bad scope/purpose.
        RateLimitedError
            Too many ID checks by this doctor.
        """
        now = datetime.now(UTC)
        hours = min(self._hours(req.hours, self._s.in_person_grant_hours),
                    self._s.in_person_grant_hours)
        uids = _study_uids(req.study_uids)
        purpose = _purpose(req.purpose)
        witness, signature = evidence.witness_name.strip(), evidence.signature_ref.strip()
        if not witness and not signature:
            raise InvalidInputError("evidence: give a witness name or a signature reference")
        nid = parse_national_id(evidence.id_card_number, field_name="id_card_number")
        refusal: CloudfilmError | None = None
        with self._write() as session:
            doctor = self._doctor(session, actor)
            # Each check can confirm a guessed ID number: bound them per doctor.
            self._limiter.hit(session, f"id-check:account:{doctor.id}", Limit(20, 3600), now,
                              what="ID card checks by this doctor")
            resident = self._resident_or_none(session, req.resident_id, req.national_id)
            typed = self._protector.lookup_hash(NATIONAL_ID, nid.number)
            if resident is None or not resident.national_id_hash or not hmac.compare_digest(
                    typed, resident.national_id_hash):
                # The same answer for an unknown resident (nothing to learn from it).
                refusal = NotAuthorizedError("the ID card number does not match this resident")
                audit_event(self.audit, session, actor=actor, action="grant.in_person",
                            outcome="failure",
                            resident_id=resident.id if resident is not None else None)
            else:
                grant = repo.add_grant(session, {
                    "doctor_account_id": doctor.id, "hospital_id": doctor.hospital_id,
                    "resident_id": resident.id, "scope_all": not uids,
                    "study_uids": orjson.dumps(list(uids)).decode(), "purpose": purpose,
                    "mode": "in_person", "status": "requested", "hours": hours,
                    "requested_at": now, "decided_by": "", "revoked_by": "",
                    "evidence": orjson.dumps({
                        "id_card_checked": True, "id_card_masked": nid.masked,
                        "witness_name": witness[:128], "signature_ref": signature[:128],
                    }).decode(),
                    "review_status": "pending", "reviewed_by": "", "review_note": "",
                })
                self._activate(grant, now, by=f"in-person:{actor.subject}", hours=hours)
                audit_event(self.audit, session, actor=actor, action="grant.in_person",
                            outcome="success", resident_id=resident.id,
                            detail={"grant": grant.id})
                view = self._view(session, grant, now)
                phones = self._notice_phones(session, resident)
        if refusal is not None:
            raise refusal
        self._notify(phones, view, how="consent in person")
        return view

    def break_glass(self, actor: Actor, req: GrantRequest) -> GrantView:
        """Emergency access: active at once for ``break_glass_hours`` (all studies unless
        named), ``req.purpose`` is the mandatory reason; reviewed afterwards; the resident
        and family are texted after the commit.

        Raises
        ------
        NotAuthorizedError
            Not a doctor; or nobody in the index has this national ID (or id): the same
            refusal whatever the reason, audited, so that the emergency door does not tell
            a doctor who is indexed without leaving a trace.
        InvalidInputError
            The reason is missing or too short to review.
        """
        reason = req.purpose.strip()
        if len(reason) < 10:
            raise InvalidInputError("reason: describe the emergency (at least 10 characters); "
                                    "it is reviewed afterwards")
        now = datetime.now(UTC)
        hours = self._s.break_glass_hours
        uids = _study_uids(req.study_uids)
        view: GrantView | None = None
        with self._write() as session:
            doctor = self._doctor(session, actor)
            resident = self._resident_or_none(session, req.resident_id, req.national_id)
            if resident is None:
                # Recorded, so that a doctor probing IDs through the emergency door leaves a
                # trace; committed with the refusal raised below.
                audit_event(self.audit, session, actor=actor, action="grant.break_glass",
                            outcome="failure",
                            detail={"reason": "not-indexed",
                                    "by": "national_id" if req.national_id else "resident_id"})
            else:
                grant = repo.add_grant(session, {
                    "doctor_account_id": doctor.id, "hospital_id": doctor.hospital_id,
                    "resident_id": resident.id, "scope_all": not uids,
                    "study_uids": orjson.dumps(list(uids)).decode(), "purpose": reason[:256],
                    "mode": "break_glass", "status": "requested", "hours": hours,
                    "requested_at": now, "decided_by": "", "revoked_by": "",
                    "evidence": orjson.dumps({"reason": reason[:1000]}).decode(),
                    "review_status": "pending", "reviewed_by": "", "review_note": "",
                })
                self._activate(grant, now, by=f"break-glass:{actor.subject}", hours=hours)
                audit_event(self.audit, session, actor=actor, action="grant.break_glass",
                            outcome="success", resident_id=resident.id,
                            detail={"grant": grant.id})
                view = self._view(session, grant, now)
                phones = self._notice_phones(session, resident)
        if view is None:
            logger.warning("cloudfilm.access.break_glass_refused", extra={"account": doctor.id})
            raise NotAuthorizedError(BREAK_GLASS_REFUSED, code="break-glass-refused")
        logger.warning("cloudfilm.access.break_glass",
                       extra={"grant": view.id, "account": view.doctor_account_id})
        self._notify(phones, view, how="emergency access")
        return view

    def doctor_grants(self, actor: Actor) -> list[GrantView]:
        """The signed-in doctor's own requests and grants, newest first."""
        now = datetime.now(UTC)
        with self._read() as session:
            doctor = self._doctor(session, actor)
            return [self._view(session, g, now) for g in repo.grants_of_doctor(session,
                                                                                doctor.id)]

    # -- residents --

    def resident_grants(self, actor: Actor, *, pending_only: bool = False) -> list[GrantView]:
        """Grants and requests about the resident and those they act for, newest first."""
        ids = self._resident_ids(actor)
        now = datetime.now(UTC)
        with self._read() as session:
            rows = (repo.pending_requests(session, ids) if pending_only
                    else repo.grants_of_residents(session, ids))
            return [self._view(session, g, now) for g in rows]

    def approve(self, actor: Actor, grant_id: int) -> GrantView:
        """The resident (or a family member acting for them) approves a waiting request:
        active for its hours from now. Committed when this returns.

        Raises
        ------
        NotAuthorizedError
            Not this resident's (or their dependant's) request.
        InvalidInputError
            Not waiting for a decision (decided, revoked or expired).
        """
        return self._decide(actor, grant_id, approve=True)

    def deny(self, actor: Actor, grant_id: int) -> GrantView:
        """The resident denies a waiting request (see :meth:`approve`)."""
        return self._decide(actor, grant_id, approve=False)

    def _decide(self, actor: Actor, grant_id: int, *, approve: bool) -> GrantView:
        ids = self._resident_ids(actor)
        now = datetime.now(UTC)
        with self._write() as session:
            grant = self._grant(session, grant_id, for_update=True,
                                visible=lambda g: g.resident_id in ids)
            if grant.status != "requested":
                raise InvalidInputError(f"grant {grant.id} is {grant.status}, not waiting "
                                        "for a decision")
            if approve:
                self._activate(grant, now, by=actor.subject, hours=grant.hours)
            else:
                grant.status, grant.decided_at, grant.decided_by = "denied", now, actor.subject
            audit_event(self.audit, session, actor=actor,
                        action="grant.approve" if approve else "grant.deny",
                        outcome="success", resident_id=grant.resident_id,
                        detail={"grant": grant.id})
            return self._view(session, grant, now)

    def revoke(self, actor: Actor, grant_id: int) -> GrantView:
        """End a grant (or withdraw a request) now. Who may: the resident or a family
        member acting for them, the doctor who holds it, a platform administrator. The
        very next ``active_scopes`` call no longer sees it. Idempotent.

        Raises
        ------
        NotAuthorizedError
        """
        now = datetime.now(UTC)
        with self._write() as session:
            grant = self._grant(session, grant_id, for_update=True,
                                visible=lambda g: _may_revoke(actor, g))
            if grant.status in ("requested", "active"):
                grant.status, grant.revoked_at, grant.revoked_by = "revoked", now, \
                    actor.subject[:64]
                audit_event(self.audit, session, actor=actor, action="grant.revoke",
                            outcome="success", resident_id=grant.resident_id,
                            detail={"grant": grant.id})
            return self._view(session, grant, now)

    # -- hospital administrators --

    def review_queue(self, actor: Actor, *, include_done: bool = False) -> list[GrantView]:
        """In-person and break-glass grants to review: the hospital administrator's own
        hospital, or every hospital for a platform administrator."""
        now = datetime.now(UTC)
        with self._read() as session:
            hospital_id = self._reviewer_scope(actor)
            return [self._view(session, g, now) for g in
                    repo.grants_to_review(session, hospital_id, include_done=include_done)]

    def review(self, actor: Actor, grant_id: int, *, decision: str,
               note: str = "") -> GrantView:
        """Record the review of an in-person or break-glass grant: ``accepted``, or
        ``flagged`` (also revokes it if still running). Committed when this returns.

        Raises
        ------
        NotAuthorizedError
            Not an administrator of the grant's hospital.
        InvalidInputError
            Unknown decision, or the grant needs no review.
        """
        if decision not in ("accepted", "flagged"):
            raise InvalidInputError("decision must be accepted or flagged")
        now = datetime.now(UTC)
        with self._write() as session:
            hospital_id = self._reviewer_scope(actor)
            grant = self._grant(session, grant_id, for_update=True,
                                visible=lambda g: hospital_id is None
                                or g.hospital_id == hospital_id)
            if actor.account_id is not None and grant.doctor_account_id == actor.account_id:
                # Four eyes: a hospital administrator is also a clinician of its hospital
                # (it may break the glass), but never reviews its own grant.
                raise NotAuthorizedError("another administrator reviews your own grants")
            if not grant.review_status:
                raise InvalidInputError(f"grant {grant.id} ({grant.mode}) needs no review")
            grant.review_status, grant.reviewed_at = decision, now
            grant.reviewed_by, grant.review_note = actor.subject[:64], note.strip()[:256]
            if decision == "flagged" and grant.status in ("requested", "active"):
                grant.status, grant.revoked_at, grant.revoked_by = "revoked", now, \
                    actor.subject[:64]
            audit_event(self.audit, session, actor=actor, action="grant.review",
                        outcome="success", resident_id=grant.resident_id,
                        detail={"grant": grant.id, "decision": decision})
            return self._view(session, grant, now)

    def expire(self) -> int:
        """Mark grants past their end as expired (bookkeeping; the policy already ignores
        them by time). Returns how many."""
        with self._write() as session:
            return repo.expire_due(session, datetime.now(UTC))

    # -- helpers --

    def _activate(self, grant: AccessGrant, now: datetime, *, by: str, hours: int) -> None:
        grant.status, grant.decided_at, grant.decided_by = "active", now, by[:64]
        grant.expires_at = now + timedelta(hours=hours)

    def _hours(self, hours: int | None, default: int) -> int:
        if hours is None:
            return default
        if not 1 <= hours <= self._s.max_grant_hours:
            raise InvalidInputError(f"hours must be 1 to {self._s.max_grant_hours}")
        return hours

    def _doctor(self, session: Session, actor: Actor) -> Account:
        """The requesting clinician's account (a signed-in person of a hospital with
        ``REQUEST_GRANT``; its row names the hospital the grant is for)."""
        if not actor.can(Permission.REQUEST_GRANT) or actor.account_id is None:
            raise NotAuthorizedError("only a signed-in doctor can do this")
        account = account_repo.account_by_id(session, actor.account_id)
        if account is None or not account.active or account.hospital_id is None:
            raise NotAuthorizedError("only an active doctor's account can do this")
        return account

    @staticmethod
    def _reviewer_scope(actor: Actor) -> int | None:
        """None for a platform administrator (every hospital), else the hospital whose
        grants the actor reviews (a hospital administrator's own)."""
        if actor.can(Permission.REVIEW_ALL_GRANTS):
            return None
        if actor.can(Permission.REVIEW_GRANTS) and actor.hospital_id is not None:
            return actor.hospital_id
        raise NotAuthorizedError("hospital administrators only")

    @staticmethod
    def _resident_ids(actor: Actor) -> list[int]:
        if not (actor.can(Permission.DECIDE_GRANT) and actor.has(Role.RESIDENT)):
            raise NotAuthorizedError("only a signed-in resident can do this")
        if not actor.resident_ids:
            raise NotAuthenticatedError("this account is not bound to a resident")
        return sorted(actor.resident_ids)

    def _resident_or_none(self, session: Session, resident_id: int | None,
                          national_id: str | None) -> Resident | None:
        try:
            return self._resident(session, resident_id, national_id)
        except NotFoundError:
            return None

    def _resident(self, session: Session, resident_id: int | None,
                  national_id: str | None) -> Resident:
        if (resident_id is None) == (not national_id):
            raise InvalidInputError("give the resident's id or national ID (one of them)")
        if national_id:
            nid = parse_national_id(national_id)
            found = identity_repo.resident_by_national_id(
                session, self._protector.lookup_hash(NATIONAL_ID, nid.number))
        else:
            assert resident_id is not None
            found = identity_repo.resident_by_id(session, resident_id)
        seen = 0
        while found is not None and found.merged_into is not None and seen < 16:
            found, seen = identity_repo.resident_by_id(session, found.merged_into), seen + 1
        if found is None:
            raise NotFoundError("no such resident in the index")
        return found

    def _grant(self, session: Session, grant_id: int, *, for_update: bool,
               visible: Callable[[AccessGrant], bool]) -> AccessGrant:
        """The grant, if the caller may act on it; one answer (not found) for an unknown
        id and another person's grant, so ids cannot be probed (issue 11, finding 9)."""
        grant = repo.grant_by_id(session, grant_id, for_update=for_update)
        if grant is None or not visible(grant):
            raise NotFoundError(f"no grant {grant_id} that you can act on")
        return grant

    def _phone_of_account(self, account: Account | None) -> str | None:
        if account is None or not account.active or not account.phone_enc:
            return None
        try:
            return self._protector.decrypt(PHONE_DOMAIN, account.phone_enc)
        except ValueError:
            logger.warning("cloudfilm.access.phone_unreadable", extra={"account": account.id})
            return None

    def _own_phone(self, session: Session, resident: Resident) -> str | None:
        """The phone the resident proved they hold (their account's, proven by an SMS code).
        Never a phone a hospital's feed sent: that is the hospital's record (issue 11)."""
        return self._phone_of_account(account_repo.account_of_resident(session, resident.id))

    def _notice_phones(self, session: Session, resident: Resident) -> list[str]:
        """Where to tell a resident about a grant: their phone and their guardians'."""
        phones = []
        own = self._own_phone(session, resident)
        if own:
            phones.append(own)
        for guardian in account_repo.guardians_of(session, resident.id):
            phone = self._phone_of_account(account_repo.account_of_resident(session, guardian))
            if phone and phone not in phones:
                phones.append(phone)
        return phones

    def _someone_can_approve(self, session: Session, resident: Resident) -> bool:
        if account_repo.account_of_resident(session, resident.id) is not None:
            return True
        return any(account_repo.account_of_resident(session, g) is not None
                   for g in account_repo.guardians_of(session, resident.id))

    def _count_send(self, session: Session, phone: str, actor: Actor, now: datetime) -> None:
        phone_hash = self._protector.lookup_hash(PHONE_DOMAIN, phone)
        # Own buckets (purpose "grant"): doctors' requests cannot use up the sign-in codes
        # a resident needs (issue 11, finding 9), nor the other way round.
        self._limiter.hit(session, f"sms:grant:phone:{phone_hash[:32]}",
                          Limit(self._s.otp_sends_per_phone_hour, 3600), now,
                          what="messages sent to this phone")
        self._limiter.hit(session, f"sms:grant:req:{actor.subject[:64]}",
                          Limit(self._s.otp_sends_per_requester_hour, 3600), now,
                          what="messages sent by this doctor")

    def _notify(self, phones: Sequence[str], view: GrantView, *, how: str) -> None:
        # After the commit: the grant stands even if the SMS provider is down; the
        # resident also sees it in the portal.
        for phone in phones:
            try:
                self._sms.send_grant_notice(phone, doctor=view.doctor,
                                            hospital=view.hospital_name, how=how,
                                            hours=view.hours)
            except ResourceUnavailableError:
                logger.warning("cloudfilm.access.notice_failed", extra={"grant": view.id})

    def _view(self, session: Session, grant: AccessGrant, now: datetime) -> GrantView:
        doctor = account_repo.account_by_id(session, grant.doctor_account_id)
        hospital = identity_repo.hospital_by_id(session, grant.hospital_id)
        expires = aware(grant.expires_at) if grant.expires_at else None
        status = grant.status
        if status == "active" and expires is not None and expires <= now:
            status = "expired"
        return GrantView(
            id=grant.id, resident_id=grant.resident_id,
            doctor_account_id=grant.doctor_account_id,
            doctor=doctor.display_name if doctor else "",
            hospital_id=grant.hospital_id, hospital_code=hospital.code if hospital else "",
            hospital_name=hospital.name if hospital else "",
            department=doctor.department if doctor else "", scope_all=grant.scope_all,
            study_uids=tuple(orjson.loads(grant.study_uids or "[]")), purpose=grant.purpose,
            mode=grant.mode, status=status, hours=grant.hours,
            requested_at=aware(grant.requested_at),
            decided_at=aware(grant.decided_at) if grant.decided_at else None,
            expires_at=expires,
            revoked_at=aware(grant.revoked_at) if grant.revoked_at else None,
            review_status=grant.review_status, evidence=orjson.loads(grant.evidence or "{}"))

    def _write(self) -> Any:
        return _guarded(self._db.write())

    def _read(self) -> Any:
        return _guarded(self._db.read())


def _study_uids(values: Sequence[str]) -> tuple[str, ...]:
    cleaned = tuple(dict.fromkeys(v.strip() for v in values if v.strip()))
    if len(cleaned) > MAX_STUDIES:
        raise InvalidInputError(f"study_uids: at most {MAX_STUDIES} studies per request")
    for uid in cleaned:
        if len(uid) > 64 or not _UID.match(uid):
            raise InvalidInputError(f"study_uids: {uid[:70]!r} is not a DICOM UID (PS3.5 9.1)")
    return cleaned


def _purpose(value: str) -> str:
    purpose = value.strip()
    if not purpose:
        raise InvalidInputError("purpose: say why you need the studies (residents see it)")
    return purpose[:256]




def _may_revoke(actor: Actor, grant: AccessGrant) -> bool:
    """The resident (or family acting for them), the doctor holding it, an administrator."""
    return ((actor.can(Permission.DECIDE_GRANT) and grant.resident_id in actor.resident_ids)
            or (actor.can(Permission.REQUEST_GRANT) and actor.account_id is not None
                and actor.account_id == grant.doctor_account_id)
            or actor.can(Permission.REVIEW_ALL_GRANTS))
