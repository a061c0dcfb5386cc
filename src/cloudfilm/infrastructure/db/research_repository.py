"""Queries for research projects, cohorts and exports. No commits: the service owns the
unit of work."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db.models import (
    Hospital,
    Instance,
    Patient,
    PatientLink,
    Report,
    ResearchExport,
    ResearchProject,
    Resident,
    Series,
    Study,
)


@dataclass(frozen=True, slots=True)
class CohortFilter:
    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    date_from: str = ""  # YYYYMMDD, inclusive
    date_to: str = ""
    sex: str = ""
    hospital_levels: tuple[str, ...] = ()
    report_terms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CohortRow:
    instance_id: int
    sop_instance_uid: str
    blob_key: str
    study_fk: int
    patient_fk: int
    study_date: str
    birth_date: str
    resident_id: int | None
    refused: bool
    study_instance_uid: str

    def key(self) -> str:
        """What pseudonyms and the date shift derive from: the resident where linked (one
        person, one pseudonym across hospitals), else the hospital's patient record."""
        return f"r:{self.resident_id}" if self.resident_id is not None else f"p:{self.patient_fk}"


def _cohort_select(f: CohortFilter) -> Any:
    link = and_(PatientLink.patient_fk == Patient.id, PatientLink.state == "linked")
    stmt = (select(Instance.id, Instance.sop_instance_uid, Instance.blob_key, Instance.study_fk,
                   Study.patient_fk, Study.study_date, Patient.birth_date,
                   PatientLink.resident_id, Resident.research_refused,
                   Study.study_instance_uid)
            .join(Series, Series.id == Instance.series_fk)
            .join(Study, Study.id == Instance.study_fk)
            .join(Patient, Patient.id == Study.patient_fk)
            .join(Hospital, Hospital.id == Study.hospital_id)
            .outerjoin(PatientLink, link)
            .outerjoin(Resident, Resident.id == PatientLink.resident_id))
    if f.modalities:
        stmt = stmt.where(Series.modality.in_(f.modalities))
    if f.body_parts:
        stmt = stmt.where(Series.body_part_examined.in_(f.body_parts))
    if f.date_from:
        stmt = stmt.where(Study.study_date >= f.date_from)
    if f.date_to:
        stmt = stmt.where(Study.study_date <= f.date_to)
    if f.sex:
        stmt = stmt.where(Patient.sex == f.sex)
    if f.hospital_levels:
        stmt = stmt.where(Hospital.level.in_(f.hospital_levels))
    for term in f.report_terms:
        pattern = f"%{term}%"
        stmt = stmt.where(exists().where(
            Report.study_fk == Study.id,
            or_(Report.findings.like(pattern), Report.impression.like(pattern),
                Report.title.like(pattern))))
    return stmt.order_by(Instance.study_fk, Instance.series_fk, Instance.id)


def cohort(session: Session, f: CohortFilter, *, after_id: int = 0) -> Iterator[CohortRow]:
    """The cohort's instances in a stable order (resumable after an instance id)."""
    stmt = _cohort_select(f)
    if after_id:
        stmt = stmt.where(Instance.id > after_id)
    for r in session.execute(stmt.execution_options(yield_per=500)):
        yield CohortRow(int(r[0]), str(r[1]), str(r[2]), int(r[3]), int(r[4]), str(r[5] or ""),
                        str(r[6] or ""), None if r[7] is None else int(r[7]), bool(r[8]),
                        str(r[9]))


def insert_project(session: Session, **values: Any) -> ResearchProject:
    row = ResearchProject(**values)
    session.add(row)
    session.flush()
    return row


def project(session: Session, public_id: str, *, lock: bool = False) -> ResearchProject | None:
    stmt = select(ResearchProject).where(ResearchProject.public_id == public_id)
    if lock:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).first()


def projects(session: Session) -> Sequence[ResearchProject]:
    return session.scalars(select(ResearchProject).order_by(ResearchProject.id)).all()


def set_refusal(session: Session, resident_id: int, refused: bool) -> int:
    result: Any = session.execute(update(Resident).where(Resident.id == resident_id)
                                  .values(research_refused=refused))
    return int(result.rowcount or 0)


def refused(session: Session, resident_id: int) -> bool | None:
    return session.scalars(select(Resident.research_refused)
                           .where(Resident.id == resident_id)).first()


def still_allowed(session: Session, resident_id: int) -> bool:
    """Re-read at export time: a refusal made during an export stops it for the rest."""
    return not session.scalars(select(Resident.research_refused)
                               .where(Resident.id == resident_id)).first()


def dictionary_terms(session: Session, study_fks: Sequence[int]) -> dict[str, str]:
    """Names to scrub from report text: hospitals, the patients, the reports' authors."""
    terms: dict[str, str] = {}
    for (name,) in session.execute(select(Hospital.name)):
        if name:
            terms[str(name)] = "HOSPITAL"
    rows = session.execute(
        select(Patient.patient_name, Study.referring_physician_name, Study.institution_name)
        .join(Study, Study.patient_fk == Patient.id).where(Study.id.in_(study_fks)))
    for patient_name, referring, institution in rows:
        for person in (patient_name, referring):
            for part in str(person or "").replace("=", "^").split("^"):
                if part.strip():
                    terms[part.strip()] = "NAME"
        if institution:
            terms[str(institution)] = "HOSPITAL"
    for author, verifier in session.execute(
            select(Report.author, Report.verifier).where(Report.study_fk.in_(study_fks))):
        for person in (author, verifier):
            if person:
                terms[str(person)] = "NAME"
    return terms


def report_texts(session: Session, study_fk: int) -> list[tuple[str, str]]:
    """(public id, text) of the study's reports."""
    rows = session.execute(select(Report.public_id, Report.title, Report.findings,
                                  Report.impression).where(Report.study_fk == study_fk)
                           .order_by(Report.id))
    return [(str(pid), "\n".join(str(p or "") for p in (title, findings, impression)))
            for pid, title, findings, impression in rows]


def start_export(session: Session, project_id: int, at: datetime, by: str) -> ResearchExport:
    row = ResearchExport(project_id=project_id, started_at=at, created_by=by, exported=0,
                         excluded=0, refused=0, manifest_sha256="")
    session.add(row)
    session.flush()
    return row


def finish_export(session: Session, export_id: int, **values: Any) -> None:
    session.execute(update(ResearchExport).where(ResearchExport.id == export_id).values(**values))


def exports(session: Session, project_id: int) -> Sequence[ResearchExport]:
    return session.scalars(select(ResearchExport).where(ResearchExport.project_id == project_id)
                           .order_by(ResearchExport.id)).all()
