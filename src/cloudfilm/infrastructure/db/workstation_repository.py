"""Queries of the doctor's workstation: finding a patient among one hospital's records, a
resident's studies across hospitals (with what a locked row may show), launch tokens."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, or_, select, update
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db.models import (
    Hospital,
    Patient,
    PatientLink,
    Report,
    Resident,
    Series,
    Study,
    WorkstationLaunch,
)


def own_patients_by_name(session: Session, hospital_id: int, term: str,
                         limit: int) -> list[Any]:
    """Patient records *of one hospital* whose name (the hospital's own record, or the
    resident it is linked to, with pinyin keys) has a whole component equal to ``term``.
    Never another hospital's record: the hospital is part of the statement."""
    pattern = f"% {term.upper()} %"
    resident_match = (select(PatientLink.patient_fk)
                      .join(Resident, Resident.id == PatientLink.resident_id)
                      .where(PatientLink.state == "linked",
                             Resident.name_search.like(pattern)))
    return list(session.execute(
        select(Patient.id, Patient.patient_id, Patient.patient_name, Patient.birth_date,
               Patient.sex, PatientLink.resident_id, PatientLink.state)
        .outerjoin(PatientLink, PatientLink.patient_fk == Patient.id)
        .where(Patient.hospital_id == hospital_id,
               or_((" " + Patient.name_search + " ").like(pattern),
                   Patient.id.in_(resident_match)))
        .order_by(Patient.patient_name, Patient.id).limit(limit)).all())


def own_patients_by_local_id(session: Session, hospital_id: int,
                             patient_id: str) -> list[Any]:
    """One hospital's records with this PatientID (several issuers: several rows)."""
    return list(session.execute(
        select(Patient.id, Patient.patient_id, Patient.patient_name, Patient.birth_date,
               Patient.sex, PatientLink.resident_id, PatientLink.state)
        .outerjoin(PatientLink, PatientLink.patient_fk == Patient.id)
        .where(Patient.hospital_id == hospital_id, Patient.patient_id == patient_id)
        .order_by(Patient.id).limit(10)).all())


def patient_row(session: Session, patient_fk: int) -> Any:
    return session.execute(
        select(Patient.id, Patient.hospital_id, Patient.patient_id, Patient.patient_name,
               Patient.birth_date, Patient.sex, PatientLink.resident_id, PatientLink.state)
        .outerjoin(PatientLink, PatientLink.patient_fk == Patient.id)
        .where(Patient.id == patient_fk)).first()


def own_records_of(session: Session, resident_id: int, hospital_id: int) -> list[Any]:
    """The hospital's patient records linked to the resident (local IDs, names)."""
    return list(session.execute(
        select(Patient.id, Patient.patient_id, Patient.patient_name)
        .join(PatientLink, PatientLink.patient_fk == Patient.id)
        .where(PatientLink.resident_id == resident_id, PatientLink.state == "linked",
               Patient.hospital_id == hospital_id).order_by(Patient.id)).all())


def _studies_stmt(resident_id: int | None, patient_fk: int | None) -> Any:
    stmt = (select(Study.id, Study.study_instance_uid, Study.study_date, Study.study_time,
                   Study.study_description, Study.accession_number, Study.num_series,
                   Study.num_instances, Study.hospital_id,
                   Hospital.name.label("hospital_name"), Hospital.code.label("hospital_code"),
                   Hospital.level.label("hospital_level"))
            .join(Hospital, Hospital.id == Study.hospital_id))
    if resident_id is not None:
        linked = select(PatientLink.patient_fk).where(PatientLink.resident_id == resident_id,
                                                      PatientLink.state == "linked")
        return stmt.where(Study.patient_fk.in_(linked))
    return stmt.where(Study.patient_fk == patient_fk)


def patient_studies(session: Session, *, resident_id: int | None, patient_fk: int | None,
                    limit: int) -> list[Any]:
    """Every study of a resident (all linked records) or of one unlinked record, newest
    first. The caller decides which rows it may show in full."""
    stmt = _studies_stmt(resident_id, patient_fk).order_by(
        Study.study_date.desc(), Study.study_time.desc(), Study.id.desc()).limit(limit)
    return list(session.execute(stmt).all())


def visible_ids(session: Session, study_ids: Sequence[int],
                visible: ColumnElement[bool] | None) -> set[int]:
    """Which of these studies the policy's restriction keeps."""
    if not study_ids:
        return set()
    stmt = select(Study.id).where(Study.id.in_(list(study_ids)))
    if visible is not None:
        stmt = stmt.where(visible)
    return set(session.scalars(stmt).all())


def series_facts(session: Session, study_ids: Sequence[int]) -> list[Any]:
    """(study, modality, body part) of these studies' series."""
    if not study_ids:
        return []
    return list(session.execute(
        select(Series.study_fk, Series.modality, Series.body_part_examined,
               Series.series_number, Series.id)
        .where(Series.study_fk.in_(list(study_ids)))
        .order_by(Series.study_fk, Series.series_number, Series.id)).all())


def reports_of(session: Session, study_ids: Sequence[int]) -> list[Any]:
    if not study_ids:
        return []
    return list(session.execute(
        select(Report.study_fk, Report.public_id, Report.status, Report.version_count)
        .where(Report.study_fk.in_(list(study_ids))).order_by(Report.id)).all())


def hospital_of(session: Session, hospital_id: int) -> Hospital | None:
    return session.get(Hospital, hospital_id)


def study_by_uid_or_accession(session: Session, hospital_id: int, *, study_uid: str = "",
                              accession: str = "") -> Any:
    """A study *of this hospital* by UID or accession number (for a launch), or None."""
    stmt = select(Study.study_instance_uid, Study.patient_fk).where(
        Study.hospital_id == hospital_id)
    if study_uid:
        stmt = stmt.where(Study.study_instance_uid == study_uid)
    elif accession:
        stmt = stmt.where(Study.accession_number == accession)
    else:
        return None
    return session.execute(stmt.order_by(Study.id.desc()).limit(1)).first()


# --- launch tokens ---------------------------------------------------------------------------


def add_launch(session: Session, values: dict[str, Any]) -> WorkstationLaunch:
    row = WorkstationLaunch(**values)
    session.add(row)
    session.flush()
    return row


def launch_by_hash(session: Session, token_hash: str) -> WorkstationLaunch | None:
    return session.scalars(
        select(WorkstationLaunch).where(WorkstationLaunch.token_hash == token_hash)
        .with_for_update()).first()


def use_launch(session: Session, launch_id: int, now: datetime) -> bool:
    """Mark a launch used, once: False when another request used it first."""
    done = session.execute(
        update(WorkstationLaunch).where(WorkstationLaunch.id == launch_id,
                                        WorkstationLaunch.used_at.is_(None))
        .values(used_at=now))
    return bool(getattr(done, "rowcount", 0) == 1)
