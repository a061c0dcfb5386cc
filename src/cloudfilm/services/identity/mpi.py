"""Residents and the master patient index (MPI): one resident, many hospitals' patient IDs.

Each hospital's patient record (``patient``: hospital, PatientID, issuer) is linked to at
most one resident (``patient_link``). Links are made

- at ingest, when the hospital's headers carry a valid national ID (:func:`link_at_ingest`,
  inside the ingest transaction, in a savepoint: a linking problem never fails a store);
- by the hospital's registration feed (:meth:`ResidentService.register_patient`);
- by an administrator (:meth:`ResidentService.link`).

Nothing is merged silently: a national ID whose resident has another name, sex or birth
date, or a local ID already linked to another resident, becomes a ``conflict`` link for
review. Link, unlink, merge and unmerge are explicit, recorded in ``identity_event`` and
reversible. No log line carries a name, ID number or phone.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db import account_repository as account_repo
from cloudfilm.infrastructure.db import archive_repository
from cloudfilm.infrastructure.db import identity_repository as repo
from cloudfilm.infrastructure.db.models import Patient, Resident
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError
from cloudfilm.services.access.actor import LOCAL_OPERATOR, Actor
from cloudfilm.services.errors import (
    AlreadyExistsError,
    IdentityConflictError,
    InvalidInputError,
    NotFoundError,
    ResourceUnavailableError,
)
from cloudfilm.services.identity import names
from cloudfilm.services.identity.national_id import NationalId, NationalIdError, parse
from cloudfilm.services.identity.protection import IdProtector
from cloudfilm.services.identity.roles import actor_label, require_feed_of, require_index_admin
from cloudfilm.services.transactions import guarded as _guarded

logger = logging.getLogger(__name__)

NATIONAL_ID = "cn-rid"  # hash/encryption domain of resident ID numbers
PHONE_DOMAIN = "phone"  # hash/encryption domain of phone numbers (as services.access.sms)
IDENTIFIER_TYPES = ("passport", "hk_macao_permit", "taiwan_permit", "foreign_permanent_residence")
RELATIONS = ("parent", "guardian")
_PHONE = re.compile(r"^(\+86)?1[3-9]\d{9}$")
_DOC = re.compile(r"^[A-Z0-9]{5,20}$")


@dataclass(frozen=True, slots=True)
class LinkView:
    hospital_code: str
    patient_id: str
    issuer_of_patient_id: str
    state: str
    reason: str
    studies: int


@dataclass(frozen=True, slots=True)
class ResidentView:
    """A resident as shown: identity numbers masked unless revealed to an entitled role."""

    id: int
    national_id_masked: str
    name: str
    birth_date: str
    sex: str
    phone_masked: str
    status: str
    merged_into: int | None
    identifiers: tuple[dict[str, str], ...] = field(default=())
    links: tuple[LinkView, ...] = field(default=())
    family: tuple[dict[str, Any], ...] = field(default=())
    national_id: str | None = None  # clear text only when revealed


@dataclass(frozen=True, slots=True)
class Registration:
    """One record of a hospital's patient registration feed (HIS ADT A04/A08 in REST)."""

    patient_id: str
    issuer_of_patient_id: str = ""
    national_id: str | None = None
    identifiers: tuple[tuple[str, str, str], ...] = ()  # (type, value, issuer)
    name: str = ""
    sex: str = ""
    birth_date: str = ""
    phone: str = ""


@dataclass(frozen=True, slots=True)
class LinkOutcome:
    """``state``: linked, conflict or unlinked; ``changed``: whether this call changed it."""

    resident_id: int | None
    state: str
    changed: bool
    reason: str = ""


# --- pure helpers --------------------------------------------------------------------------


def parse_national_id(value: str, *, field_name: str = "national_id") -> NationalId:
    """Validate a national ID, raising InvalidInputError that names the field."""
    try:
        return parse(value)
    except NationalIdError as exc:
        raise InvalidInputError(f"{field_name}: {exc}") from None


def mask_phone(phone: str) -> str:
    """``138****5678``."""
    return phone[:3] + "****" + phone[-4:] if len(phone) >= 11 else "*" * len(phone)


def mask_document(value: str) -> str:
    return value[:2] + "*" * max(len(value) - 4, 0) + value[-2:] if len(value) > 4 else "****"


def national_id_in_header(ds: Dataset, source: str, issuer: str, tag: str) -> str | None:
    """The national ID a hospital's header carries, per its registry settings, or None."""
    if source == "patient_id":
        return str(ds.get("PatientID", "") or "").strip() or None
    if source == "other_patient_ids":
        for item in ds.get("OtherPatientIDsSequence", None) or []:
            if issuer and str(item.get("IssuerOfPatientID", "") or "").strip() != issuer:
                continue
            value = str(item.get("PatientID", "") or "").strip()
            if value and (issuer or len(value) == 18):
                return value
        return None
    if source == "tag" and tag:
        elem = ds.get(Tag(int(tag, 16)))
        value = elem.value if elem is not None else None
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        return str(value or "").strip() or None
    return None


def _demographic_problems(nid: NationalId, birth_date: str, sex: str) -> list[str]:
    problems = []
    if birth_date and birth_date != f"{nid.birth_date:%Y%m%d}":
        problems.append("PatientBirthDate differs from the birth date in the national ID")
    if sex in ("M", "F") and sex != nid.sex:
        problems.append("PatientSex differs from the sex the national ID encodes")
    return problems


class AuditRecorder(Protocol):
    """What ResidentService needs of ``services.access.audit.AuditService``."""

    def record(self, conn: Any, *, actor: Actor, action: str, outcome: Any,
               resident_id: int | None = None, detail: dict[str, Any] | None = None) -> None: ...


INGEST = "ingest"


def record_event(session: Session, audit: AuditRecorder | None, *, actor: Actor,
                 **event: Any) -> Any:
    """Record an identity change in ``identity_event`` and, in the same transaction, in the
    hash-chained audit trail (issue 11: link, unlink, merge and phone changes must not be
    only in a table anyone with SQL can edit unseen)."""
    row = repo.add_event(session, actor=actor_label(actor), **event)
    if audit is not None:
        detail = {k: event.get(k) for k in ("other_resident_id", "patient_fk", "hospital_id")
                  if event.get(k) is not None}
        detail.update(event.get("detail") or {})
        audit.record(session, actor=actor, action=f"identity.{event['action']}",
                     outcome="success", resident_id=event.get("resident_id"), detail=detail)
    return row


# --- the linking core (runs inside a caller's transaction) ---------------------------------


def _active(session: Session, resident: Resident) -> Resident:
    seen = 0
    while resident.merged_into is not None and seen < 16:
        found = repo.resident_by_id(session, resident.merged_into)
        if found is None:
            break
        resident, seen = found, seen + 1
    return resident


def _resident_for(session: Session, protector: IdProtector, nid: NationalId, name: str,
                  now: datetime, actor: Actor,
                  audit: AuditRecorder | None) -> tuple[Resident, bool]:
    id_hash = protector.lookup_hash(NATIONAL_ID, nid.number)
    found = repo.resident_by_national_id(session, id_hash)
    if found is not None:
        return _active(session, found), False
    created = repo.add_resident(session, {
        "national_id_hash": id_hash,
        "national_id_enc": protector.encrypt(NATIONAL_ID, nid.number),
        "national_id_masked": nid.masked,
        "name": name[:324], "name_search": f" {names.search_keys(name)[:396]} ",
        "birth_date": f"{nid.birth_date:%Y%m%d}", "sex": nid.sex, "phone": "",
        "status": "active", "created_at": now, "updated_at": now,
    })
    record_event(session, audit, actor=actor, at=now, action="resident.create",
                 resident_id=created.id)
    return created, True


def claim(session: Session, protector: IdProtector, *, patient: Patient, nid: NationalId,
          source: str, actor: Actor, now: datetime,
          audit: AuditRecorder | None = None) -> LinkOutcome:
    """Link a hospital's patient record to the resident of ``nid``, or flag a conflict.

    Runs in the caller's transaction. The evidence rule (issue 11): a national ID alone
    never links; the record's name must be the resident's name (:func:`names.same_name`).
    A record without a name stays unmatched (no resident is created for it, and an
    existing one is not touched); a different name is a conflict. An explicit
    ``unlinked`` state is left alone (only an explicit link redoes it).
    """
    if not names.has_name(patient.patient_name):
        return LinkOutcome(None, "unmatched", False,
                           "the record has no name: a national ID alone does not link it")
    resident, created = _resident_for(session, protector, nid, patient.patient_name, now,
                                      actor, audit)
    problems = _demographic_problems(nid, patient.birth_date, patient.sex)
    if not created and names.same_name(resident.name, patient.patient_name) is not True:
        problems.append("PatientName differs from the resident's name")
    link = repo.link_of(session, patient.id)
    if link is not None:
        if link.state == "linked" and link.resident_id == resident.id:
            return LinkOutcome(resident.id, "linked", False)
        if link.state == "unlinked" or (link.state == "conflict"
                                        and link.candidate_resident_id == resident.id):
            return LinkOutcome(link.resident_id, link.state, False, link.reason)
        reason = ("this local patient ID is already linked to another resident"
                  if link.state == "linked" else "; ".join(problems) or link.reason)
        link.state, link.candidate_resident_id = "conflict", resident.id
        link.reason, link.source, link.updated_at = reason[:256], source, now
        record_event(session, audit, actor=actor, at=now, action="link.conflict",
                     resident_id=link.resident_id, other_resident_id=resident.id,
                     patient_fk=patient.id, hospital_id=patient.hospital_id,
                     detail={"reason": reason, "source": source})
        return LinkOutcome(link.resident_id, "conflict", True, reason)
    if problems:
        reason = "; ".join(problems)
        repo.add_link(session, {"patient_fk": patient.id, "resident_id": None,
                                "candidate_resident_id": resident.id, "state": "conflict",
                                "reason": reason[:256], "source": source, "updated_at": now})
        record_event(session, audit, actor=actor, at=now, action="link.conflict",
                     other_resident_id=resident.id, patient_fk=patient.id,
                     hospital_id=patient.hospital_id,
                     detail={"reason": reason, "source": source})
        return LinkOutcome(None, "conflict", True, reason)
    repo.add_link(session, {"patient_fk": patient.id, "resident_id": resident.id,
                            "candidate_resident_id": None, "state": "linked", "reason": "",
                            "source": source, "updated_at": now})
    record_event(session, audit, actor=actor, at=now, action="link", resident_id=resident.id,
                 patient_fk=patient.id, hospital_id=patient.hospital_id,
                 detail={"source": source})
    return LinkOutcome(resident.id, "linked", True)


def link_at_ingest(session: Session, protector: IdProtector, *, hospital_id: int,
                   id_source: tuple[str, str, str], patients: dict[int, Dataset],
                   audit: AuditRecorder | None = None) -> int:
    """Link the new patient records of an ingest batch whose headers carry a national ID.

    Costs one statement per batch when every patient of the batch has a link row already
    (the steady state); new patients cost a few more. Runs in a SAVEPOINT of the ingest
    transaction: any failure rolls back only the linking, is logged without personal
    data, and leaves the patients unmatched (the store succeeds). Returns links made.
    """
    source, issuer, tag = id_source
    if source == "none" or not patients:
        return 0
    made = 0
    try:
        with session.begin_nested():
            states = repo.link_states(session, patients)
            now = datetime.now(UTC)
            for patient_fk, ds in patients.items():
                if patient_fk in states:
                    continue
                value = national_id_in_header(ds, source, issuer, tag)
                if value is None:
                    continue
                try:
                    nid = parse(value)
                except NationalIdError:
                    logger.info("cloudfilm.identity.invalid_national_id_in_header",
                                extra={"hospital_id": hospital_id, "patient_fk": patient_fk})
                    continue
                patient = session.get(Patient, patient_fk)
                if patient is None:
                    continue
                actor = Actor(kind="hospital", subject=f"hospital-id:{hospital_id}",
                              hospital_id=hospital_id, display=INGEST)
                outcome = claim(session, protector, patient=patient, nid=nid, source="ingest",
                                actor=actor, now=now, audit=audit)
                made += outcome.changed
    except Exception:  # never fail a store for linking; the record stays unmatched
        logger.warning("cloudfilm.identity.link_at_ingest_failed",
                       extra={"hospital_id": hospital_id}, exc_info=True)
        return 0
    return made


# --- the service ---------------------------------------------------------------------------


class ResidentService:
    """Residents, links, merges, family links and the cross-reference (PIX) query."""

    def __init__(self, db: Database, protector: IdProtector, *,
                 audit: AuditRecorder | None = None) -> None:
        self._db = db
        self.protector = protector
        self._audit = audit

    def _audit_read(self, session: Session, action: str, resident_ids: list[int],
                    actor: Actor) -> None:
        """Every read of the index of people leaves an audit record, in the read's own
        (write) transaction, one per resident named (issue 11: no silent truncation)."""
        if self._audit is None:
            return
        if not resident_ids:
            self._audit.record(session, actor=actor, action=action, outcome="allowed",
                               detail={"count": 0})
        for resident_id in resident_ids:
            self._audit.record(session, actor=actor, action=action, outcome="allowed",
                               resident_id=resident_id,
                               detail={"count": len(resident_ids)})

    def _event(self, session: Session, *, actor: Actor, **event: Any) -> Any:
        return record_event(session, self._audit, actor=actor, **event)

    # -- registration feed --

    def register_patient(self, hospital_code: str, reg: Registration, *,
                         actor: Actor = LOCAL_OPERATOR) -> LinkOutcome:
        """Register or update one hospital patient and link it; committed on return.

        The hospital comes from the caller's credential, never from the record. The
        record's national ID (or else a typed identifier) finds or creates the resident.
        A repeated registration changes nothing and answers the same outcome.

        Raises
        ------
        InvalidInputError
            Invalid national ID, identifier type, phone, sex or birth date (named).
        NotFoundError
            Unknown hospital code.
        IdentityConflictError
            An identifier given belongs to another resident.
        """
        require_feed_of(actor, hospital_code)
        patient_id = reg.patient_id.strip()
        if not patient_id or len(patient_id) > 64 or "\\" in patient_id:
            raise InvalidInputError("patient_id is required: 1-64 characters, no backslash")
        nid = parse_national_id(reg.national_id) if reg.national_id else None
        docs = [_document(kind, value, issuer) for kind, value, issuer in reg.identifiers]
        if nid is None and not docs:
            raise InvalidInputError("national_id or at least one identifier is required to "
                                    "link a patient to a resident")
        phone = _phone(reg.phone) if reg.phone else ""
        sex = reg.sex.strip().upper()
        if sex not in ("", "M", "F", "O"):
            raise InvalidInputError(f"sex {sex!r} is not M, F or O")
        birth = reg.birth_date.strip().replace("-", "")
        if birth and not re.fullmatch(r"(18|19|20)\d{6}", birth):
            raise InvalidInputError("birth_date must be YYYYMMDD or YYYY-MM-DD")
        now = datetime.now(UTC)
        try:
            with self._db.write() as session:
                hospital = repo.hospital_by_code(session, hospital_code)
                if hospital is None:
                    raise NotFoundError(f"unknown hospital code {hospital_code[:64]!r}")
                patient = self._patient(session, hospital.id, patient_id,
                                        reg.issuer_of_patient_id.strip()[:64], reg.name, birth,
                                        sex, now)
                if nid is not None:
                    outcome = claim(session, self.protector, patient=patient, nid=nid,
                                    source="feed", actor=actor, now=now, audit=self._audit)
                else:
                    outcome = self._claim_by_document(session, patient, docs, actor, now)
                if outcome.state == "linked" and outcome.resident_id is not None:
                    for kind, value, issuer in docs:
                        self._attach_document(session, outcome.resident_id, kind, value,
                                              issuer, now)
                if phone:
                    self._record_phone(session, patient, phone, outcome, actor, now)
        except IntegrityError:
            raise IdentityConflictError("a concurrent registration changed this resident; "
                                        "send the registration again") from None
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        return outcome

    def _record_phone(self, session: Session, patient: Patient, phone: str,
                      outcome: LinkOutcome, actor: Actor, now: datetime) -> None:
        """Keep the feed's phone as this hospital's record of its patient (issue 11): it
        never replaces the phone a resident proved and never receives consent codes. A
        change is in the chained audit."""
        phone_hash = self.protector.lookup_hash(PHONE_DOMAIN, phone)
        current = repo.contact_of(session, patient.id)
        if current is not None and current.phone_hash == phone_hash:
            return
        repo.set_contact(session, patient.id, {
            "phone_hash": phone_hash, "phone_enc": self.protector.encrypt(PHONE_DOMAIN, phone),
            "phone_masked": mask_phone(phone), "updated_at": now})
        self._event(session, actor=actor, at=now, action="contact.phone",
                    resident_id=outcome.resident_id if outcome.state == "linked" else None,
                    patient_fk=patient.id, hospital_id=patient.hospital_id,
                    detail={"previous": "recorded" if current is not None else "none"})

    def _patient(self, session: Session, hospital_id: int, patient_id: str, issuer: str,
                 name: str, birth: str, sex: str, now: datetime) -> Patient:
        found = repo.patient_by_local_id(session, hospital_id, patient_id, issuer)
        if found is None:
            archive_repository.upsert_patient(session, hospital_id=hospital_id, values={
                "patient_id": patient_id, "issuer_of_patient_id": issuer,
                "patient_name": name[:324],
                "name_search": f" {names.search_keys(name)[:396]} ",
                "birth_date": birth, "sex": sex, "updated_at": now})
            found = repo.patient_by_local_id(session, hospital_id, patient_id, issuer)
        elif name.strip() and not names.has_name(found.patient_name):
            # A later record completes a nameless one (ADT A08); a name already there is
            # not replaced by the feed (that would move the link's evidence under it).
            found.patient_name = name[:324]
            found.name_search = f" {names.search_keys(name)[:396]} "
            found.updated_at = now
        assert found is not None
        return found

    def _claim_by_document(self, session: Session, patient: Patient,
                           docs: list[tuple[str, str, str]], actor: Actor,
                           now: datetime) -> LinkOutcome:
        if not names.has_name(patient.patient_name):
            return LinkOutcome(None, "unmatched", False,
                               "the record has no name: an identifier alone does not link it")
        resident = None
        for kind, value, issuer in docs:
            resident = repo.resident_by_identifier(
                session, kind, issuer, self.protector.lookup_hash(kind, f"{issuer}:{value}"))
            if resident is not None:
                resident = _active(session, resident)
                break
        if resident is None:
            resident = repo.add_resident(session, {
                "national_id_hash": None, "national_id_enc": None, "national_id_masked": "",
                "name": patient.patient_name,
                "name_search": f" {names.search_keys(patient.patient_name)[:396]} ",
                "birth_date": patient.birth_date, "sex": patient.sex[:1], "phone": "",
                "status": "active", "created_at": now, "updated_at": now})
            self._event(session, at=now, action="resident.create", actor=actor,
                           resident_id=resident.id)
        elif names.same_name(resident.name, patient.patient_name) is not True:
            return self._flag(session, patient, resident.id,
                              "PatientName differs from the resident's name", actor, now)
        return self._link_to(session, patient, resident.id, actor, now, source="feed")

    def _attach_document(self, session: Session, resident_id: int, kind: str, value: str,
                         issuer: str, now: datetime) -> None:
        value_hash = self.protector.lookup_hash(kind, f"{issuer}:{value}")
        owner = repo.resident_by_identifier(session, kind, issuer, value_hash)
        if owner is not None:
            if _active(session, owner).id != resident_id:
                raise IdentityConflictError(f"identifiers: this {kind} belongs to another "
                                            "resident; review the registration")
            return
        repo.add_identifier(session, {
            "resident_id": resident_id, "type": kind, "issuer": issuer,
            "value_hash": value_hash, "value_enc": self.protector.encrypt(kind, value),
            "value_masked": mask_document(value), "created_at": now})

    def _flag(self, session: Session, patient: Patient, resident_id: int, reason: str,
              actor: Actor, now: datetime) -> LinkOutcome:
        link = repo.link_of(session, patient.id)
        if link is None:
            repo.add_link(session, {"patient_fk": patient.id, "resident_id": None,
                                    "candidate_resident_id": resident_id, "state": "conflict",
                                    "reason": reason, "source": "feed", "updated_at": now})
        elif link.resident_id != resident_id:
            link.state, link.candidate_resident_id, link.reason = "conflict", resident_id, reason
            link.updated_at = now
        self._event(session, at=now, action="link.conflict", actor=actor,
                       other_resident_id=resident_id, patient_fk=patient.id,
                       hospital_id=patient.hospital_id, detail={"reason": reason})
        return LinkOutcome(link.resident_id if link else None, "conflict", True, reason)

    def _link_to(self, session: Session, patient: Patient, resident_id: int, actor: Actor,
                 now: datetime, *, source: str) -> LinkOutcome:
        link = repo.link_of(session, patient.id)
        previous = (link.state, link.resident_id) if link is not None else (None, None)
        if link is not None and link.state == "linked" and link.resident_id == resident_id:
            return LinkOutcome(resident_id, "linked", False)
        if link is not None and link.state == "linked" and source != "admin":
            return self._flag(session, patient, resident_id,
                              "this local patient ID is already linked to another resident",
                              actor, now)
        if link is None:
            repo.add_link(session, {"patient_fk": patient.id, "resident_id": resident_id,
                                    "candidate_resident_id": None, "state": "linked",
                                    "reason": "", "source": source, "updated_at": now})
        else:
            link.state, link.resident_id, link.candidate_resident_id = "linked", resident_id, None
            link.reason, link.source, link.updated_at = "", source, now
        self._event(session, at=now, action="link", actor=actor, resident_id=resident_id,
                       patient_fk=patient.id, hospital_id=patient.hospital_id,
                       detail={"source": source, "previous_state": previous[0],
                               "previous_resident": previous[1]})
        return LinkOutcome(resident_id, "linked", True)

    # -- explicit operations --

    def link(self, hospital_code: str, patient_id: str, resident_id: int, *,
             issuer: str | None = None, actor: Actor = LOCAL_OPERATOR) -> LinkOutcome:
        """Link a hospital's patient record to a resident (resolves a conflict); audited.

        Raises
        ------
        NotFoundError
            Unknown hospital, patient record or resident.
        IdentityConflictError
            The record is linked to another resident: unlink it first.
        """
        require_index_admin(actor)
        now = datetime.now(UTC)
        with self._write() as session:
            patient = self._require_patient(session, hospital_code, patient_id, issuer)
            resident = self._require_resident(session, resident_id)
            if resident.status != "active":
                raise IdentityConflictError(f"resident {resident_id} was merged into "
                                            f"{resident.merged_into}; link to that one")
            link = repo.link_of(session, patient.id)
            if link is not None and link.state == "linked" and link.resident_id != resident.id:
                raise IdentityConflictError(
                    f"{hospital_code}/{patient_id} is linked to resident {link.resident_id}; "
                    "unlink it first")
            return self._link_to(session, patient, resident.id, actor, now, source="admin")

    def unlink(self, hospital_code: str, patient_id: str, *, issuer: str | None = None,
               actor: Actor = LOCAL_OPERATOR) -> LinkOutcome:
        """Undo a link (or dismiss a conflict); audited with the previous resident, so that
        :meth:`link` restores it. Raises NotFoundError when there is no link."""
        require_index_admin(actor)
        now = datetime.now(UTC)
        with self._write() as session:
            patient = self._require_patient(session, hospital_code, patient_id, issuer)
            link = repo.link_of(session, patient.id)
            if link is None or link.state == "unlinked":
                raise NotFoundError(f"{hospital_code}/{patient_id} is not linked")
            previous = link.resident_id or link.candidate_resident_id
            self._event(session, at=now, action="unlink", actor=actor,
                           resident_id=previous, patient_fk=patient.id,
                           hospital_id=patient.hospital_id,
                           detail={"previous_state": link.state,
                                   "previous_resident": link.resident_id,
                                   "candidate": link.candidate_resident_id})
            link.state, link.resident_id, link.candidate_resident_id = "unlinked", None, None
            link.reason, link.updated_at = "", now
            return LinkOutcome(None, "unlinked", True)

    def merge(self, source_id: int, target_id: int, *, actor: Actor = LOCAL_OPERATOR) -> int:
        """Merge resident ``source_id`` into ``target_id``: its links and identifiers move,
        it stays as ``merged`` (reversible with :meth:`unmerge`). Returns the event id.

        Raises
        ------
        IdentityConflictError
            Both residents have a national ID (two numbers are two people), one is merged
            already, or they are the same.
        """
        require_index_admin(actor)
        if source_id == target_id:
            raise IdentityConflictError("cannot merge a resident into itself")
        now = datetime.now(UTC)
        with self._write() as session:
            source = self._require_resident(session, source_id)
            target = self._require_resident(session, target_id)
            if "merged" in (source.status, target.status):
                raise IdentityConflictError("one of the residents is merged already")
            if source.national_id_hash and target.national_id_hash:
                raise IdentityConflictError(
                    "both residents have a national ID: different numbers are different "
                    "people; fix the wrong link instead (unlink/link)")
            links = repo.link_ids_of_resident(session, source.id)
            docs = [d.id for d in repo.identifiers_of(session, source.id)]
            moved_id = source.national_id_hash is not None
            if moved_id:
                values = (source.national_id_hash, source.national_id_enc,
                          source.national_id_masked)
                source.national_id_hash = source.national_id_enc = None
                session.flush()  # the unique hash must leave the source row first
                (target.national_id_hash, target.national_id_enc,
                 target.national_id_masked) = values
                target.birth_date, target.sex = source.birth_date, source.sex
            repo.move_links(session, links, target.id, now)
            repo.move_identifiers(session, docs, target.id)
            source.status, source.merged_into, source.updated_at = "merged", target.id, now
            event = self._event(session, at=now, action="merge", actor=actor,
                                   resident_id=source.id, other_resident_id=target.id,
                                   detail={"links": links, "identifiers": docs,
                                           "moved_national_id": moved_id})
            return int(event.id)

    def unmerge(self, source_id: int, *, actor: Actor = LOCAL_OPERATOR) -> None:
        """Reverse the latest merge of ``source_id``: links and identifiers go back.

        Raises NotFoundError when the resident is not merged.
        """
        require_index_admin(actor)
        now = datetime.now(UTC)
        with self._write() as session:
            source = self._require_resident(session, source_id)
            merges = repo.events(session, resident_id=source.id, action="merge", limit=1)
            if source.status != "merged" or not merges:
                raise NotFoundError(f"resident {source_id} is not merged")
            event = merges[0]
            detail = orjson.loads(event.detail)
            target = self._require_resident(session, event.other_resident_id or 0)
            repo.move_links(session, detail["links"], source.id, now)
            repo.move_identifiers(session, detail["identifiers"], source.id)
            if detail["moved_national_id"]:
                values = (target.national_id_hash, target.national_id_enc,
                          target.national_id_masked)
                target.national_id_hash = target.national_id_enc = None
                target.national_id_masked = ""
                session.flush()
                (source.national_id_hash, source.national_id_enc,
                 source.national_id_masked) = values
            source.status, source.merged_into, source.updated_at = "active", None, now
            self._event(session, at=now, action="unmerge", actor=actor,
                           resident_id=source.id, other_resident_id=target.id,
                           detail={"merge_event": event.id})

    def add_family_link(self, resident_id: int, related_id: int, relation: str, *,
                        actor: Actor = LOCAL_OPERATOR) -> None:
        """Record that ``related_id`` is the parent or guardian of ``resident_id``.

        Raises InvalidInputError, NotFoundError, AlreadyExistsError.
        """
        require_index_admin(actor)
        if relation not in RELATIONS:
            raise InvalidInputError(f"relation {relation!r} is not one of {', '.join(RELATIONS)}")
        if resident_id == related_id:
            raise InvalidInputError("a resident cannot be their own parent or guardian")
        now = datetime.now(UTC)
        with self._write() as session:
            self._require_resident(session, resident_id)
            self._require_resident(session, related_id)
            if repo.find_family_link(session, resident_id, related_id, relation):
                raise AlreadyExistsError(f"resident {related_id} is already recorded as "
                                         f"{relation} of {resident_id}")
            repo.add_family_link(session, {"resident_id": resident_id,
                                           "related_resident_id": related_id,
                                           "relation": relation, "created_at": now})
            self._event(session, at=now, action="family.link", actor=actor,
                           resident_id=resident_id, other_resident_id=related_id,
                           detail={"relation": relation})

    # -- queries --

    def xref(self, *, hospital_code: str | None = None, patient_id: str | None = None,
             issuer: str | None = None, national_id: str | None = None,
             reveal: bool = False, actor: Actor = LOCAL_OPERATOR) -> ResidentView:
        """The resident of a hospital's local ID or of a national ID, with every linked
        local ID (IHE PIX query). ``reveal`` shows the national ID in clear and is audited.

        Raises
        ------
        InvalidInputError
            Neither key given, or an invalid national ID.
        NotFoundError
            No such record, or it is not linked to a resident (unmatched or in conflict).
        """
        require_index_admin(actor)
        with self._write() as session:
            if national_id:
                nid = parse_national_id(national_id)
                found = repo.resident_by_national_id(
                    session, self.protector.lookup_hash(NATIONAL_ID, nid.number))
                if found is None:
                    raise NotFoundError("no resident has this national ID")
                resident = _active(session, found)
            elif hospital_code and patient_id:
                patient = self._require_patient(session, hospital_code, patient_id, issuer)
                link = repo.link_of(session, patient.id)
                if link is None or link.state != "linked" or link.resident_id is None:
                    state = link.state if link is not None else "unmatched"
                    raise NotFoundError(f"{hospital_code}/{patient_id} is not linked to a "
                                        f"resident (state: {state})")
                resident = self._require_resident(session, link.resident_id)
            else:
                raise InvalidInputError("give hospital_code and patient_id, or national_id")
            self._audit_read(session, "identity.xref", [resident.id], actor)
            return self._view(session, resident, reveal=reveal, actor=actor)

    def get(self, resident_id: int, *, reveal: bool = False,
            actor: Actor = LOCAL_OPERATOR) -> ResidentView:
        require_index_admin(actor)
        with self._write() as session:
            resident = self._require_resident(session, resident_id)
            self._audit_read(session, "identity.read", [resident.id], actor)
            return self._view(session, resident, reveal=reveal, actor=actor)

    def search(self, name: str, *, limit: int = 50,
               actor: Actor = LOCAL_OPERATOR) -> list[ResidentView]:
        """Residents by a whole name component, in characters or pinyin (``王小东``,
        ``wangxiaodong``, ``wang``)."""
        require_index_admin(actor)
        term = name.strip()
        if not term or "%" in term or "_" in term:
            raise InvalidInputError("name: give a name or a part of it, without % or _")
        with self._write() as session:
            found = list(repo.search_residents(session, term, limit))
            self._audit_read(session, "identity.search", [r.id for r in found], actor)
            return [self._view(session, r, reveal=False, actor=actor) for r in found]

    def conflicts(self, *, limit: int = 200,
                  actor: Actor = LOCAL_OPERATOR) -> list[dict[str, Any]]:
        require_index_admin(actor)
        with self._write() as session:
            self._audit_read(session, "identity.conflicts", [], actor)
            return [{"hospital_code": r.hospital_code, "patient_id": r.patient_id,
                     "issuer_of_patient_id": r.issuer_of_patient_id, "reason": r.reason,
                     "resident_id": r.resident_id, "candidate_resident_id":
                     r.candidate_resident_id} for r in repo.conflicts(session, limit)]

    def unmatched(self, *, limit: int = 200,
                  actor: Actor = LOCAL_OPERATOR) -> list[dict[str, Any]]:
        require_index_admin(actor)
        with self._write() as session:
            self._audit_read(session, "identity.unmatched", [], actor)
            return [{"hospital_code": r.hospital_code, "patient_id": r.patient_id,
                     "issuer_of_patient_id": r.issuer_of_patient_id, "studies": r.studies}
                    for r in repo.unmatched(session, limit)]

    def events(self, *, resident_id: int | None = None, limit: int = 100,
               actor: Actor = LOCAL_OPERATOR) -> list[dict[str, Any]]:
        require_index_admin(actor)
        with self._read() as session:
            return [{"id": e.id, "at": e.at.isoformat(), "action": e.action, "actor": e.actor,
                     "resident_id": e.resident_id, "other_resident_id": e.other_resident_id,
                     "patient_fk": e.patient_fk, "detail": orjson.loads(e.detail)}
                    for e in repo.events(session, resident_id=resident_id, limit=limit)]

    # -- helpers --

    def _view(self, session: Session, resident: Resident, *, reveal: bool,
              actor: Actor) -> ResidentView:
        clear = None
        if reveal and resident.national_id_enc:
            clear = self.protector.decrypt(NATIONAL_ID, resident.national_id_enc)
            self._event(session, at=datetime.now(UTC), action="reveal", actor=actor,
                           resident_id=resident.id)
        links = tuple(
            LinkView(r.hospital_code, r.patient_id, r.issuer_of_patient_id,
                     r.state if r.resident_id == resident.id else "candidate", r.reason,
                     int(r.studies or 0))
            for r in repo.links_of_resident(session, resident.id))
        docs = tuple({"type": d.type, "issuer": d.issuer, "value": d.value_masked}
                     for d in repo.identifiers_of(session, resident.id))
        family = tuple(
            {"relation": f.relation, "resident_id": f.related_resident_id, "direction":
             "is_dependent_of"} if f.resident_id == resident.id else
            {"relation": f.relation, "resident_id": f.resident_id, "direction": "is_" +
             f.relation + "_of"}
            for f in repo.family_of(session, resident.id))
        # The phone the resident proved (their account's); hospitals' phones are records
        # of their own patients, not the resident's contact phone (issue 11).
        account = account_repo.account_of_resident(session, resident.id)
        return ResidentView(
            id=resident.id, national_id_masked=resident.national_id_masked,
            name=resident.name, birth_date=resident.birth_date, sex=resident.sex,
            phone_masked=account.phone_masked if account is not None else "",
            status=resident.status, merged_into=resident.merged_into, identifiers=docs,
            links=links, family=family, national_id=clear)

    def _require_patient(self, session: Session, hospital_code: str, patient_id: str,
                         issuer: str | None) -> Patient:
        hospital = repo.hospital_by_code(session, hospital_code.strip())
        if hospital is None:
            raise NotFoundError(f"unknown hospital code {hospital_code.strip()[:64]!r}")
        patient = repo.patient_by_local_id(session, hospital.id, patient_id.strip(), issuer)
        if patient is None:
            raise NotFoundError(f"hospital {hospital.code} has no patient record "
                                f"{patient_id.strip()[:64]!r}"
                                + ("" if issuer is not None else
                                   " (or several issuers: give issuer_of_patient_id)"))
        return patient

    @staticmethod
    def _require_resident(session: Session, resident_id: int) -> Resident:
        resident = repo.resident_by_id(session, resident_id)
        if resident is None:
            raise NotFoundError(f"no resident has the id {resident_id}")
        return resident

    def _write(self) -> Any:
        return _guarded(self._db.write())

    def _read(self) -> Any:
        return _guarded(self._db.read())




def _document(kind: str, value: str, issuer: str) -> tuple[str, str, str]:
    kind = kind.strip().lower()
    if kind not in IDENTIFIER_TYPES:
        raise InvalidInputError(f"identifiers: type {kind!r} is not one of "
                                f"{', '.join(IDENTIFIER_TYPES)}")
    cleaned = value.strip().upper().replace(" ", "")
    if not _DOC.match(cleaned):
        raise InvalidInputError(f"identifiers: a {kind} number is 5-20 letters or digits")
    return kind, cleaned, issuer.strip().upper()[:64]


def _phone(value: str) -> str:
    cleaned = value.strip().replace(" ", "").replace("-", "")
    if not _PHONE.match(cleaned):
        raise InvalidInputError("phone must be a mainland mobile number (11 digits starting "
                                "with 1, optionally +86)")
    return cleaned[-11:]

