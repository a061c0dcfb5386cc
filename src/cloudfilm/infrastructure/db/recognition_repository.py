"""Queries of exam mutual recognition (issue 15): the rules tables, study classifications,
the check's candidate priors, checks/decisions and the savings figures. No commits: the
service owns the unit of work.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, and_, case, delete, func, insert, select, update
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db.models import (
    Hospital,
    Patient,
    PatientLink,
    RecognitionChange,
    RecognitionCheck,
    RecognitionCodeMap,
    RecognitionItem,
    RecognitionPrice,
    RecognitionTerm,
    RecognitionUnmapped,
    Report,
    Series,
    Study,
    StudyRecognition,
)

_SR = cast(Table, StudyRecognition.__table__)
_CHECK = cast(Table, RecognitionCheck.__table__)

ENTITIES: dict[str, Any] = {
    "item": RecognitionItem,
    "code_map": RecognitionCodeMap,
    "term": RecognitionTerm,
    "price": RecognitionPrice,
}

# --- rules ----------------------------------------------------------------------------------


def rules_version(session: Session) -> int:
    return int(session.scalar(select(func.max(RecognitionChange.id))) or 0)


def item_count(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(RecognitionItem)) or 0)


def rows(session: Session, entity: str, **where: Any) -> Sequence[Any]:
    model = ENTITIES[entity]
    query = select(model).order_by(model.id)
    for name, value in where.items():
        query = query.where(getattr(model, name) == value)
    return session.scalars(query).all()


def find(session: Session, entity: str, **keys: Any) -> Any:
    found = rows(session, entity, **keys)
    return found[0] if found else None


def add(session: Session, entity: str, values: dict[str, Any]) -> Any:
    row = ENTITIES[entity](**values)
    session.add(row)
    session.flush()
    return row


def remove(session: Session, row: Any) -> None:
    session.delete(row)
    session.flush()


def add_change(session: Session, values: dict[str, Any]) -> None:
    session.add(RecognitionChange(**values))
    session.flush()


def changes(session: Session, *, entity: str | None, limit: int) -> Sequence[RecognitionChange]:
    query = select(RecognitionChange).order_by(RecognitionChange.id.desc()).limit(limit)
    if entity:
        query = query.where(RecognitionChange.entity == entity)
    return session.scalars(query).all()


def code_map(session: Session, hospital_id: int, procedure_code: str) -> str | None:
    return session.scalar(select(RecognitionCodeMap.item_code).where(
        RecognitionCodeMap.hospital_id == hospital_id,
        RecognitionCodeMap.procedure_code == procedure_code))


def note_unmapped(session: Session, entries: Iterable[tuple[str, str, int, str]],
                  now: datetime) -> None:
    """Count (field, value, hospital, problem) sightings; a new one becomes a row."""
    for field_name, value, hospital_id, problem in dict.fromkeys(entries):
        found = session.execute(
            update(RecognitionUnmapped)
            .where(RecognitionUnmapped.field == field_name, RecognitionUnmapped.value == value,
                   RecognitionUnmapped.hospital_id == hospital_id)
            .values(seen=RecognitionUnmapped.seen + 1, last_seen=now, problem=problem))
        if not found.rowcount:  # type: ignore[attr-defined]
            session.add(RecognitionUnmapped(field=field_name, value=value,
                                            hospital_id=hospital_id, problem=problem, seen=1,
                                            first_seen=now, last_seen=now))
    session.flush()


def unmapped(session: Session, *, field_name: str | None, limit: int) -> Sequence[Any]:
    query = (select(RecognitionUnmapped, Hospital.code.label("hospital_code"))
             .join(Hospital, Hospital.id == RecognitionUnmapped.hospital_id, isouter=True)
             .order_by(RecognitionUnmapped.seen.desc(), RecognitionUnmapped.id).limit(limit))
    if field_name:
        query = query.where(RecognitionUnmapped.field == field_name)
    return session.execute(query).all()


def clear_unmapped(session: Session, field_name: str, value: str) -> None:
    """A value an administrator just mapped is no longer listed."""
    session.execute(delete(RecognitionUnmapped).where(RecognitionUnmapped.field == field_name,
                                                      RecognitionUnmapped.value == value))


# --- patients -------------------------------------------------------------------------------


def hospital(session: Session, *, hospital_id: int | None = None,
             code: str | None = None) -> Hospital | None:
    if hospital_id is not None:
        return session.get(Hospital, hospital_id)
    return session.scalars(select(Hospital).where(Hospital.code == code)).first()


def local_patients(session: Session, hospital_id: int, patient_id: str) -> Sequence[Any]:
    """(patient.id, link state, resident id) of a hospital's records with this PatientID."""
    return session.execute(
        select(Patient.id, PatientLink.state, PatientLink.resident_id)
        .join(PatientLink, PatientLink.patient_fk == Patient.id, isouter=True)
        .where(Patient.hospital_id == hospital_id, Patient.patient_id == patient_id)
        .order_by(Patient.id).limit(5)).all()


def hospital_and_local_patients(session: Session, *, hospital_id: int | None,
                                code: str | None, patient_id: str) -> Sequence[Any]:
    """The hospital (id, code, name, level) with its records of this PatientID (patient
    id, link state, resident; NULL when it has none), in one round trip: a check by local
    ID needs both, and the hospital row misses the cache on most checks of a province."""
    where = Hospital.id == hospital_id if hospital_id is not None else Hospital.code == code
    return session.connection().execute(
        select(Hospital.id, Hospital.code, Hospital.name, Hospital.level,
               Patient.id.label("patient_fk"), PatientLink.state, PatientLink.resident_id)
        .join(Patient, (Patient.hospital_id == Hospital.id)
              & (Patient.patient_id == patient_id), isouter=True)
        .join(PatientLink, PatientLink.patient_fk == Patient.id, isouter=True)
        .where(where).order_by(Patient.id).limit(5)).all()


def resident_patients(resident_id: int) -> Any:
    """A sub-select of the patient records linked to a resident (for ``IN``)."""
    return (select(PatientLink.patient_fk)
            .where(PatientLink.resident_id == resident_id, PatientLink.state == "linked"))


def linked_patients(session: Session, resident_id: int) -> list[tuple[int, int]]:
    """(patient.id, hospital id) of every record linked to the resident."""
    return [(int(r[0]), int(r[1])) for r in session.execute(
        select(Patient.id, Patient.hospital_id)
        .join(PatientLink, PatientLink.patient_fk == Patient.id)
        .where(PatientLink.resident_id == resident_id, PatientLink.state == "linked"))]


# --- candidates and classification ----------------------------------------------------------






def candidates(session: Session, patient_fks: Any, since: str, until: str) -> Sequence[Any]:
    """Every study of the patients dated ``since``..``until`` (YYYYMMDD), newest first, in
    ONE round trip: its hospital, its cached classification (item, rules version, the
    patient record it was made for, QC; NULL when never classified) and the best rank of
    its reports (2 final/amended, 1 preliminary, 0 other, NULL none).

    Uses ix_study_patient_fk_study_date, the study_recognition unique key and
    ix_report_study_fk. One query instead of three (the stale probe, the match by item and
    the report statuses): at 1M studies on PostgreSQL that took the check's p50 from about
    8 to 5 ms (bench/recognition_bench.py) on this loaded machine.
    """
    rank = case((Report.status.in_(("final", "amended")), 2),
                (Report.status == "preliminary", 1), else_=0)
    best = (select(func.max(rank)).where(Report.study_fk == Study.id)
            .correlate(Study).scalar_subquery())
    return session.connection().execute(
        select(Study.id, Study.study_instance_uid, Study.study_date, Study.num_instances,
               Study.updated_at, Study.hospital_id, Study.patient_fk,
               Hospital.code.label("hospital_code"), Hospital.name.label("hospital_name"),
               Hospital.level.label("hospital_level"), StudyRecognition.item_code,
               StudyRecognition.rules_version,
               StudyRecognition.patient_fk.label("classified_for"), StudyRecognition.qc,
               best.label("report_rank"))
        .join(Hospital, Hospital.id == Study.hospital_id)
        .join(StudyRecognition, StudyRecognition.study_fk == Study.id, isouter=True)
        .where(Study.patient_fk.in_(patient_fks), Study.study_date >= since,
               Study.study_date <= until)
        .order_by(Study.study_date.desc(), Study.id)).all()


def study_facts(session: Session, study_fks: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Columns normalisation reads: study description and attributes (DICOM JSON, no blob),
    and each series' modality and BodyPartExamined."""
    facts: dict[int, dict[str, Any]] = {}
    for r in session.execute(select(Study.id, Study.study_description, Study.attributes_json,
                                    Study.patient_fk, Study.study_date, Study.hospital_id)
                             .where(Study.id.in_(list(study_fks)))):
        facts[int(r.id)] = {"description": r.study_description, "attributes": r.attributes_json,
                            "patient_fk": r.patient_fk, "study_date": r.study_date,
                            "hospital_id": r.hospital_id, "modalities": [], "body_parts": []}
    for s in session.execute(select(Series.study_fk, Series.modality, Series.body_part_examined)
                             .where(Series.study_fk.in_(list(facts)))):
        facts[int(s.study_fk)]["modalities"].append(s.modality)
        facts[int(s.study_fk)]["body_parts"].append(s.body_part_examined)
    return facts


def study_fk(session: Session, study_uid: str) -> int | None:
    found = session.scalar(select(Study.id).where(Study.study_instance_uid == study_uid))
    return int(found) if found is not None else None


def unclassified(session: Session, version: int, limit: int) -> list[int]:
    """Studies without a classification under rules ``version`` (backfill)."""
    return [int(f) for f in session.scalars(
        select(Study.id).join(StudyRecognition, StudyRecognition.study_fk == Study.id,
                              isouter=True)
        .where(StudyRecognition.id.is_(None) | (StudyRecognition.rules_version != version))
        .order_by(Study.id).limit(limit))]


def save_classifications(session: Session, rows_: Sequence[dict[str, Any]]) -> None:
    if not rows_:
        return
    fks = [r["study_fk"] for r in rows_]
    qc = {r[0]: r[1] for r in session.execute(
        select(StudyRecognition.study_fk, StudyRecognition.qc)
        .where(StudyRecognition.study_fk.in_(fks)))}
    session.execute(delete(StudyRecognition).where(StudyRecognition.study_fk.in_(fks)))
    session.execute(insert(_SR), [{**r, "qc": qc.get(r["study_fk"], "")} for r in rows_])


def set_qc(session: Session, study_uid: str, qc: str) -> bool:
    study_fk = session.scalar(select(Study.id).where(Study.study_instance_uid == study_uid))
    if study_fk is None:
        return False
    done = session.execute(update(StudyRecognition).where(StudyRecognition.study_fk == study_fk)
                           .values(qc=qc))
    return bool(done.rowcount)  # type: ignore[attr-defined]




# --- checks, decisions, figures ---------------------------------------------------------------


def add_check(session: Session, values: dict[str, Any]) -> None:
    session.execute(insert(_CHECK), [values])


def check_by_public_id(session: Session, public_id: str) -> RecognitionCheck | None:
    return session.scalars(select(RecognitionCheck)
                           .where(RecognitionCheck.public_id == public_id)).first()


def check_by_order(session: Session, hospital_id: int, order_ref: str) -> str | None:
    """The decision id of the hospital's latest check of an order (feed order number)."""
    return session.scalar(select(RecognitionCheck.public_id)
                          .where(RecognitionCheck.hospital_id == hospital_id,
                                 RecognitionCheck.order_ref == order_ref)
                          .order_by(RecognitionCheck.id.desc()).limit(1))


def refresh_check(session: Session, public_id: str, priors: int, prior_uids: str) -> None:
    """A resent order's check: the priors found now, unless the doctor already decided."""
    session.execute(update(RecognitionCheck)
                    .where(RecognitionCheck.public_id == public_id,
                           RecognitionCheck.decision == "")
                    .values(priors=priors, prior_uids=prior_uids))


def savings(session: Session, *, months: Sequence[str], hospital_id: int | None
            ) -> Sequence[Any]:
    """Counts per month, hospital, department, item, level, decision/reason, performed."""
    c = RecognitionCheck
    performed = case((c.performed_at.is_not(None), 1), else_=0)
    query = (select(c.month, c.hospital_id, Hospital.code.label("hospital_code"), c.department,
                    c.item_code, c.hospital_level, c.decision, c.reason,
                    func.count().label("checks"),
                    func.sum(case((c.priors > 0, 1), else_=0)).label("prompts"),
                    func.sum(performed).label("performed"))
             .join(Hospital, Hospital.id == c.hospital_id)
             .group_by(c.month, c.hospital_id, Hospital.code, c.department, c.item_code,
                       c.hospital_level, c.decision, c.reason)
             .order_by(c.month, Hospital.code, c.department, c.item_code))
    if months:
        query = query.where(c.month.in_(list(months)))
    if hospital_id is not None:
        query = query.where(and_(c.hospital_id == hospital_id))
    return session.execute(query).all()
