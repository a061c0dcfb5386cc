"""Launching the workstation from a hospital's HIS (IHE Invoke Image Display style).

The HIS asks, with its hospital credential, for a launch token bound to *its own* hospital,
one of *its own* patient records (by local patient ID, or a national ID whose resident has a
record linked at this hospital) and one of *its own* doctors' user names, optionally a study
or accession number of its own and a planned exam item. The token is random (only its
SHA-256 is stored), lives a few minutes and opens the workstation once, for the doctor
named: in a browser where nobody is signed in it signs that doctor in (the HIS vouched for
them: IHE Invoke Image Display, one button), where that doctor is signed in it just opens,
and where anyone else is signed in it is refused without being used up. Every mint,
redemption and launched sign-in is audited naming the resident.

No fishing: an unknown patient, another hospital's patient, a doctor of another hospital
and an unknown study all get the same refusal, audited as denied.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cloudfilm.infrastructure.db import account_repository as account_repo
from cloudfilm.infrastructure.db import identity_repository as identity_repo
from cloudfilm.infrastructure.db import workstation_repository as repo
from cloudfilm.infrastructure.db.session import Database, as_utc
from cloudfilm.services.access.accounts import AccountService, SignedIn, anonymous
from cloudfilm.services.access.audit import AuditService
from cloudfilm.services.access.workstation import require_doctor
from cloudfilm.services.errors import InvalidInputError, NotAuthorizedError, NotFoundError
from cloudfilm.services.identity.mpi import NATIONAL_ID, parse_national_id
from cloudfilm.services.identity.protection import IdProtector
from cloudfilm.services.kernel.actor import Actor, Permission
from cloudfilm.services.transactions import guarded

TOKEN_PREFIX = "cfl_"
_TOKEN = re.compile(r"^cfl_[A-Za-z0-9_-]{30,60}$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
REFUSED = "no such patient, study or doctor at this hospital"
SPENT = "this launch link is unknown, expired or used; open the patient from the HIS again"


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    patient: str
    """The hospital's patient ID, or the patient's national ID."""
    doctor: str
    """The user name of the doctor who will open it."""
    study_uid: str = ""
    accession: str = ""
    item_code: str = ""


@dataclass(frozen=True, slots=True)
class MintedLaunch:
    token: str
    """Shown once; put it in ``/workstation/launch?token=``."""
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Launch:
    """What a redeemed launch opens: the hospital's patient record (and its resident)."""

    patient_fk: int
    resident_id: int | None
    study_uid: str
    item_code: str
    signed_in: SignedIn | None = None
    """The new session when the launch signed its doctor in (nobody was signed in)."""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class LaunchService:
    """Mints and redeems launch tokens (``ttl_seconds``: their life, default 5 minutes)."""

    def __init__(self, db: Database, protector: IdProtector, audit: AuditService,
                 accounts: AccountService, *, ttl_seconds: int = 300) -> None:
        self._db = db
        self._accounts = accounts
        self._protector = protector
        self._audit = audit
        self._ttl = ttl_seconds

    def mint(self, actor: Actor, req: LaunchRequest) -> MintedLaunch:
        """A launch token for the calling hospital's own doctor and patient.

        Raises
        ------
        NotAuthorizedError
            Not a hospital system (its credential).
        InvalidInputError
            No patient or doctor, a malformed study UID.
        NotFoundError
            The patient, study or doctor is not this hospital's (one answer, audited).
        """
        if not actor.can(Permission.LAUNCH_WORKSTATION) or actor.hospital_id is None:
            raise NotAuthorizedError("a hospital's system (its credential) mints launches")
        patient, username = req.patient.strip(), req.doctor.strip().lower()
        if not patient or not username:
            raise InvalidInputError("give the patient (local or national ID) and the doctor")
        study_uid, accession = req.study_uid.strip(), req.accession.strip()[:64]
        if study_uid and (len(study_uid) > 64 or not _UID.match(study_uid)):
            raise InvalidInputError("study: not a DICOM UID")
        nid_hash = None
        if re.fullmatch(r"\d{17}[\dXx]", patient):
            nid_hash = self._protector.lookup_hash(NATIONAL_ID,
                                                   parse_national_id(patient).number)
        now = datetime.now(UTC)
        with guarded(self._db.write()) as session:
            patient_fk, resident_id = self._own_patient(session, actor.hospital_id,
                                                        patient[:64], nid_hash)
            doctor = account_repo.account_by_username(session, username[:64])
            # Only clinicians' accounts belong to a hospital (residents and platform
            # administrators have none): a member of this hospital is one of its doctors.
            ok_doctor = (doctor is not None and doctor.active
                         and doctor.hospital_id == actor.hospital_id)
            if patient_fk is not None and (study_uid or accession):
                found = repo.study_by_uid_or_accession(session, actor.hospital_id,
                                                       study_uid=study_uid, accession=accession)
                if found is None or not self._same_patient(session, found.patient_fk,
                                                           patient_fk, resident_id):
                    patient_fk = None
                else:
                    study_uid = found.study_instance_uid
            if patient_fk is None or not ok_doctor:
                self._audit.record(session, actor=actor, action="workstation.launch_mint",
                                   outcome="denied", resident_id=resident_id,
                                   reason="not-this-hospital")
                refused = True
            else:
                refused = False
                token = TOKEN_PREFIX + secrets.token_urlsafe(32)
                expires = now + timedelta(seconds=self._ttl)
                row = repo.add_launch(session, {
                    "token_hash": _hash(token), "hospital_id": actor.hospital_id,
                    "patient_fk": patient_fk, "doctor_username": username[:64],
                    "study_instance_uid": study_uid, "accession_number": accession,
                    "item_code": req.item_code.strip().upper()[:32],
                    "created_by": actor.subject[:128], "created_at": now,
                    "expires_at": expires, "used_at": None})
                self._audit.record(session, actor=actor, action="workstation.launch_mint",
                                   outcome="success", resident_id=resident_id,
                                   detail={"launch": row.id})
        if refused:
            raise NotFoundError(REFUSED)
        return MintedLaunch(token, expires)

    def redeem(self, actor: Actor | None, token: str, *, address: str = "") -> Launch:
        """Open a launch: once, before it expires, at its hospital.

        Nobody signed in here (``actor`` None): the launch signs in the doctor it names (a
        new session in ``Launch.signed_in``): the HIS vouched for that doctor when it minted
        the token with its hospital's credential. The doctor must still be an active
        clinician of that hospital, and the hospital active. A signed-in doctor: only the
        one named; anyone else is refused and does not use it up (someone else's session on
        a shared desk is never replaced behind their back: sign out first).

        Raises
        ------
        NotFoundError
            Unknown, expired or used; or the doctor can no longer be signed in.
        NotAuthorizedError
            Another doctor (or hospital) than the one named is signed in.
        """
        if actor is not None:
            require_doctor(actor)
        token = token.strip()
        if not _TOKEN.match(token):
            raise NotFoundError(SPENT)
        now = datetime.now(UTC)
        who = actor if actor is not None else anonymous("doctor", address)
        refusal: Exception | None = None
        with guarded(self._db.write()) as session:
            row = repo.launch_by_hash(session, _hash(token))
            if row is None or row.used_at is not None or as_utc(row.expires_at) <= now:
                self._audit.record(session, actor=who, action="workstation.launch",
                                   outcome="denied", reason="spent",
                                   detail={"launch": row.id if row is not None else None})
                refusal = NotFoundError(SPENT)
            else:
                link = identity_repo.link_of(session, row.patient_fk)
                resident_id = (link.resident_id if link is not None and link.state == "linked"
                               else None)
                signed: SignedIn | None = None
                reason = ""
                if actor is not None:
                    doctor = account_repo.account_by_id(session, actor.account_id or 0)
                    if (doctor is None or doctor.username != row.doctor_username
                            or doctor.hospital_id != row.hospital_id
                            or actor.hospital_id != row.hospital_id):
                        reason = "other-doctor"
                if not reason and not repo.use_launch(session, row.id, now):
                    reason = "spent"  # a parallel redemption won
                if not reason and actor is None:
                    # Used first, then the session: a doctor who can no longer be signed in
                    # (deactivated since) leaves the launch spent, and no session behind.
                    signed = self._accounts.launched_session(
                        session, row.doctor_username, row.hospital_id, now, address=address)
                    if signed is None:
                        reason = "doctor-unavailable"
                    else:
                        who = signed.actor
                if reason:
                    self._audit.record(session, actor=who, action="workstation.launch",
                                       outcome="denied", resident_id=resident_id,
                                       reason=reason, detail={"launch": row.id})
                    refusal = (NotAuthorizedError("this launch is for another doctor")
                               if reason == "other-doctor" else NotFoundError(SPENT))
                else:
                    self._audit.record(session, actor=who, action="workstation.launch",
                                       outcome="success", resident_id=resident_id,
                                       detail={"launch": row.id,
                                               "signed_in": signed is not None})
                    launch = Launch(row.patient_fk, resident_id, row.study_instance_uid,
                                    row.item_code, signed)
        if refusal is not None:
            raise refusal
        return launch

    # -- helpers --

    def _own_patient(self, session: Any, hospital_id: int, patient: str,
                     nid_hash: str | None) -> tuple[int | None, int | None]:
        """(the hospital's own record, its resident) or (None, resident or None)."""
        if nid_hash is not None:
            resident = identity_repo.resident_by_national_id(session, nid_hash)
            if resident is None:
                return None, None
            rid = int(resident.merged_into or resident.id)
            return identity_repo.linked_patient_of(session, rid, hospital_id), rid
        rows = repo.own_patients_by_local_id(session, hospital_id, patient)
        if len(rows) != 1:
            return None, None
        row = rows[0]
        linked = int(row.resident_id) if row.state == "linked" and row.resident_id else None
        return int(row.id), linked

    @staticmethod
    def _same_patient(session: Any, study_patient: int, patient_fk: int,
                      resident_id: int | None) -> bool:
        if study_patient == patient_fk:
            return True
        if resident_id is None:
            return False
        link = identity_repo.link_of(session, study_patient)
        return link is not None and link.state == "linked" and link.resident_id == resident_id
