"""Queries of the identity domain: hospital registry, credentials, residents, patient links,
family links and identity events. Like every repository: no commits, the service owns the
unit of work.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Row, and_, func, or_, select, update
from sqlalchemy.orm import Session, aliased

from cloudfilm.infrastructure.db.models import (
    ActivationCode,
    DicomPeer,
    FamilyLink,
    Hospital,
    HospitalCredential,
    IdentityEvent,
    Patient,
    PatientContact,
    PatientLink,
    Resident,
    ResidentIdentifier,
    Study,
)

# --- hospitals ---------------------------------------------------------------------------


def hospital_by_code(session: Session, code: str) -> Hospital | None:
    return session.scalars(select(Hospital).where(Hospital.code == code)).first()


def hospital_by_id(session: Session, hospital_id: int) -> Hospital | None:
    return session.get(Hospital, hospital_id)


def all_hospitals(session: Session, *, active_only: bool = False) -> Sequence[Hospital]:
    query = select(Hospital).order_by(Hospital.code)
    if active_only:
        query = query.where(Hospital.active.is_(True))
    return session.scalars(query).all()


def add_hospital(session: Session, values: dict[str, Any]) -> Hospital:
    row = Hospital(**values)
    session.add(row)
    session.flush()
    return row


def peers_of(session: Session, codes: Iterable[str]) -> dict[str, list[DicomPeer]]:
    found: dict[str, list[DicomPeer]] = {}
    rows = session.scalars(
        select(DicomPeer).where(DicomPeer.hospital_code.in_(list(codes)))
        .order_by(DicomPeer.ae_title)
    )
    for peer in rows:
        found.setdefault(peer.hospital_code, []).append(peer)
    return found


def hospital_id_source(session: Session, hospital_id: int) -> Any:
    """Where a hospital puts the national ID in its headers (one statement, for ingest)."""
    return session.execute(
        select(Hospital.national_id_source, Hospital.national_id_issuer,
               Hospital.national_id_tag).where(Hospital.id == hospital_id)
    ).one_or_none()


# --- credentials -------------------------------------------------------------------------


def add_credential(session: Session, values: dict[str, Any]) -> HospitalCredential:
    row = HospitalCredential(**values)
    session.add(row)
    session.flush()
    return row


def credential_by_id(session: Session, credential_id: int) -> HospitalCredential | None:
    return session.get(HospitalCredential, credential_id)


def credentials_of(session: Session, hospital_id: int) -> Sequence[HospitalCredential]:
    return session.scalars(
        select(HospitalCredential).where(HospitalCredential.hospital_id == hospital_id)
        .order_by(HospitalCredential.id)
    ).all()


def hospital_for_token(session: Session, token_hash: str) -> Any:
    """The hospital of a live (not revoked) credential, with its active flag."""
    return session.execute(
        select(Hospital.id, Hospital.code, Hospital.name, Hospital.active)
        .join(HospitalCredential, HospitalCredential.hospital_id == Hospital.id)
        .where(HospitalCredential.token_hash == token_hash,
               HospitalCredential.revoked_at.is_(None))
    ).one_or_none()


# --- residents ---------------------------------------------------------------------------


def resident_by_id(session: Session, resident_id: int) -> Resident | None:
    return session.get(Resident, resident_id)


def resident_by_national_id(session: Session, id_hash: str) -> Resident | None:
    return session.scalars(select(Resident).where(Resident.national_id_hash == id_hash)).first()


def resident_by_identifier(session: Session, kind: str, issuer: str,
                           value_hash: str) -> Resident | None:
    return session.scalars(
        select(Resident).join(ResidentIdentifier, ResidentIdentifier.resident_id == Resident.id)
        .where(ResidentIdentifier.type == kind, ResidentIdentifier.issuer == issuer,
               ResidentIdentifier.value_hash == value_hash)
    ).first()


def add_resident(session: Session, values: dict[str, Any]) -> Resident:
    row = Resident(**values)
    session.add(row)
    session.flush()
    return row


def search_residents(session: Session, term: str, limit: int) -> Sequence[Resident]:
    """Residents whose name has a whole component (or whole name) equal to ``term``."""
    pattern = f"% {term.upper()} %"
    return session.scalars(
        select(Resident).where(Resident.name_search.like(pattern), Resident.status == "active")
        .order_by(Resident.id).limit(limit)
    ).all()


def identifiers_of(session: Session, resident_id: int) -> Sequence[ResidentIdentifier]:
    return session.scalars(
        select(ResidentIdentifier).where(ResidentIdentifier.resident_id == resident_id)
        .order_by(ResidentIdentifier.id)
    ).all()


def add_identifier(session: Session, values: dict[str, Any]) -> ResidentIdentifier:
    row = ResidentIdentifier(**values)
    session.add(row)
    session.flush()
    return row


def move_identifiers(session: Session, ids: Sequence[int], resident_id: int) -> None:
    if ids:
        session.execute(update(ResidentIdentifier).where(ResidentIdentifier.id.in_(ids))
                        .values(resident_id=resident_id))


# --- family ------------------------------------------------------------------------------


def family_of(session: Session, resident_id: int) -> Sequence[FamilyLink]:
    return session.scalars(
        select(FamilyLink).where(or_(FamilyLink.resident_id == resident_id,
                                     FamilyLink.related_resident_id == resident_id))
        .order_by(FamilyLink.id)
    ).all()


def find_family_link(session: Session, resident_id: int, related_id: int,
                     relation: str) -> FamilyLink | None:
    return session.scalars(
        select(FamilyLink).where(FamilyLink.resident_id == resident_id,
                                 FamilyLink.related_resident_id == related_id,
                                 FamilyLink.relation == relation)
    ).first()


def add_family_link(session: Session, values: dict[str, Any]) -> FamilyLink:
    row = FamilyLink(**values)
    session.add(row)
    session.flush()
    return row


# --- patients and links ------------------------------------------------------------------


def patient_by_local_id(session: Session, hospital_id: int, patient_id: str,
                        issuer: str | None) -> Patient | None:
    """A hospital's patient record; with ``issuer`` None, the only one with this PatientID."""
    query = select(Patient).where(Patient.hospital_id == hospital_id,
                                  Patient.patient_id == patient_id)
    if issuer is not None:
        query = query.where(Patient.issuer_of_patient_id == issuer)
    rows = session.scalars(query.order_by(Patient.id).limit(2)).all()
    return rows[0] if len(rows) == 1 else None


def link_states(session: Session, patient_fks: Iterable[int]) -> dict[int, str]:
    """``patient.id -> state`` of the patients of a batch that have a link row (ingest)."""
    rows = session.execute(
        select(PatientLink.patient_fk, PatientLink.state)
        .where(PatientLink.patient_fk.in_(list(patient_fks)))
    )
    return {r.patient_fk: r.state for r in rows}


def link_of(session: Session, patient_fk: int) -> PatientLink | None:
    return session.scalars(select(PatientLink).where(PatientLink.patient_fk == patient_fk)).first()


def add_link(session: Session, values: dict[str, Any]) -> PatientLink:
    row = PatientLink(**values)
    session.add(row)
    session.flush()
    return row


def links_of_resident(session: Session, resident_id: int) -> Sequence[Row[Any]]:
    """Every hospital record linked (or flagged) to a resident, with its hospital code and
    study count."""
    studies = (select(func.count(Study.id)).where(Study.patient_fk == Patient.id)
               .scalar_subquery())
    return session.execute(
        select(PatientLink.id.label("link_id"), PatientLink.state, PatientLink.reason,
               PatientLink.resident_id, PatientLink.candidate_resident_id,
               Patient.id.label("patient_fk"), Patient.patient_id,
               Patient.issuer_of_patient_id, Hospital.code.label("hospital_code"),
               studies.label("studies"))
        .join(Patient, Patient.id == PatientLink.patient_fk)
        .join(Hospital, Hospital.id == Patient.hospital_id)
        .where(or_(PatientLink.resident_id == resident_id,
                   PatientLink.candidate_resident_id == resident_id))
        .order_by(Hospital.code, Patient.patient_id)
    ).all()


def link_ids_of_resident(session: Session, resident_id: int) -> list[int]:
    return list(session.scalars(
        select(PatientLink.id).where(PatientLink.resident_id == resident_id,
                                     PatientLink.state == "linked")
    ))


def move_links(session: Session, link_ids: Sequence[int], resident_id: int,
               now: datetime) -> None:
    if link_ids:
        session.execute(update(PatientLink).where(PatientLink.id.in_(link_ids))
                        .values(resident_id=resident_id, updated_at=now))


def conflicts(session: Session, limit: int) -> Sequence[Any]:
    return session.execute(
        select(PatientLink.id.label("link_id"), PatientLink.reason, PatientLink.resident_id,
               PatientLink.candidate_resident_id, PatientLink.updated_at,
               Patient.patient_id, Patient.issuer_of_patient_id,
               Hospital.code.label("hospital_code"))
        .join(Patient, Patient.id == PatientLink.patient_fk)
        .join(Hospital, Hospital.id == Patient.hospital_id)
        .where(PatientLink.state == "conflict").order_by(PatientLink.id).limit(limit)
    ).all()


def unmatched(session: Session, limit: int) -> Sequence[Row[Any]]:
    """Hospital records no resident is linked to (no link row, or explicitly unlinked)."""
    link = aliased(PatientLink)
    studies = (select(func.count(Study.id)).where(Study.patient_fk == Patient.id)
               .scalar_subquery())
    return session.execute(
        select(Patient.id.label("patient_fk"), Patient.patient_id,
               Patient.issuer_of_patient_id, Hospital.code.label("hospital_code"),
               studies.label("studies"))
        .join(Hospital, Hospital.id == Patient.hospital_id)
        .outerjoin(link, and_(link.patient_fk == Patient.id))
        .where(or_(link.id.is_(None), link.state == "unlinked"))
        .order_by(Patient.id).limit(limit)
    ).all()


# --- events ------------------------------------------------------------------------------


def add_event(session: Session, *, at: datetime, action: str, actor: str,
              resident_id: int | None = None, other_resident_id: int | None = None,
              patient_fk: int | None = None, hospital_id: int | None = None,
              detail: dict[str, Any] | None = None) -> IdentityEvent:
    row = IdentityEvent(at=at, action=action, actor=actor[:128], resident_id=resident_id,
                        other_resident_id=other_resident_id, patient_fk=patient_fk,
                        hospital_id=hospital_id,
                        detail=orjson.dumps(detail or {}).decode())
    session.add(row)
    session.flush()
    return row


def events(session: Session, *, resident_id: int | None = None, patient_fk: int | None = None,
           action: str | None = None, limit: int = 100) -> Sequence[IdentityEvent]:
    query = select(IdentityEvent)
    if resident_id is not None:
        query = query.where(or_(IdentityEvent.resident_id == resident_id,
                                IdentityEvent.other_resident_id == resident_id))
    if patient_fk is not None:
        query = query.where(IdentityEvent.patient_fk == patient_fk)
    if action is not None:
        query = query.where(IdentityEvent.action == action)
    return session.scalars(query.order_by(IdentityEvent.id.desc()).limit(limit)).all()


# --- hospital-recorded phones and activation codes (issue 11) ------------------------------


def contact_of(session: Session, patient_fk: int) -> PatientContact | None:
    return session.scalars(
        select(PatientContact).where(PatientContact.patient_fk == patient_fk)).first()


def set_contact(session: Session, patient_fk: int, values: dict[str, Any]) -> PatientContact:
    row = contact_of(session, patient_fk)
    if row is None:
        row = PatientContact(patient_fk=patient_fk, **values)
        session.add(row)
    else:
        for key, value in values.items():
            setattr(row, key, value)
    session.flush()
    return row


def hospital_recorded_phone(session: Session, resident_id: int, phone_hash: str) -> bool:
    """Whether a hospital record linked to ``resident_id`` carries this phone."""
    found = session.execute(
        select(PatientContact.id)
        .join(PatientLink, PatientLink.patient_fk == PatientContact.patient_fk)
        .where(PatientLink.resident_id == resident_id, PatientLink.state == "linked",
               PatientContact.phone_hash == phone_hash)
        .limit(1)).first()
    return found is not None


def add_activation_code(session: Session, values: dict[str, Any]) -> ActivationCode:
    row = ActivationCode(**values)
    session.add(row)
    session.flush()
    return row


def activation_code_by_hash(session: Session, code_hash: str) -> ActivationCode | None:
    return session.scalars(select(ActivationCode).where(ActivationCode.code_hash == code_hash)
                           .with_for_update()).first()


def retire_activation_codes(session: Session, resident_id: int, hospital_id: int,
                            now: datetime) -> None:
    session.execute(update(ActivationCode).where(
        ActivationCode.resident_id == resident_id, ActivationCode.hospital_id == hospital_id,
        ActivationCode.used_at.is_(None)).values(used_at=now))


def linked_patient_of(session: Session, resident_id: int, hospital_id: int) -> int | None:
    """A patient record of ``hospital_id`` linked to ``resident_id`` (its id), or None."""
    return session.scalars(
        select(Patient.id).join(PatientLink, PatientLink.patient_fk == Patient.id)
        .where(PatientLink.resident_id == resident_id, PatientLink.state == "linked",
               Patient.hospital_id == hospital_id)
        .order_by(Patient.id).limit(1)).first()


def patient_by_fk(session: Session, patient_fk: int) -> Patient | None:
    return session.get(Patient, patient_fk)
