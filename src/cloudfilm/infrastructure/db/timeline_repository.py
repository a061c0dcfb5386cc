"""Queries of a resident's timeline: their visible studies with what a list shows (hospital,
modalities, body parts, report status, a thumbnail instance), in a few statements a page."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, select

from cloudfilm.infrastructure.db.models import (
    Hospital,
    Instance,
    PatientLink,
    Report,
    Series,
    Study,
)


def _filtered(stmt: Any, visible: ColumnElement[bool] | None, *, year: str | None,
              hospital_id: int | None, modality: str | None) -> Any:
    if visible is not None:
        stmt = stmt.where(visible)
    if year:
        stmt = stmt.where(Study.study_date.like(f"{year}%"))
    if hospital_id is not None:
        stmt = stmt.where(Study.hospital_id == hospital_id)
    if modality:
        stmt = stmt.where(select(Series.id).where(Series.study_fk == Study.id,
                                                  Series.modality == modality).exists())
    return stmt


def studies(conn: Any, visible: ColumnElement[bool] | None, *, year: str | None,
            hospital_id: int | None, modality: str | None, limit: int,
            offset: int) -> list[Any]:
    """Visible studies, newest first (exam date, then arrival), one page."""
    stmt = (select(Study.id, Study.study_instance_uid, Study.study_date, Study.study_time,
                   Study.study_description, Study.num_series, Study.num_instances,
                   Study.size_bytes, Study.hospital_id, Hospital.name.label("hospital_name"),
                   Hospital.code.label("hospital_code"),
                   PatientLink.resident_id.label("resident_id"))
            .join(Hospital, Hospital.id == Study.hospital_id)
            .outerjoin(PatientLink, (PatientLink.patient_fk == Study.patient_fk)
                       & (PatientLink.state == "linked"))
            .order_by(Study.study_date.desc(), Study.study_time.desc(), Study.id.desc())
            .limit(limit).offset(offset))
    return list(conn.execute(_filtered(stmt, visible, year=year, hospital_id=hospital_id,
                                       modality=modality)).all())


def facets(conn: Any, visible: ColumnElement[bool] | None) -> tuple[list[str], list[Any],
                                                                     list[str]]:
    """The years, hospitals and modalities the resident's studies have (filter choices)."""
    years = conn.execute(_filtered(
        select(func.substr(Study.study_date, 1, 4)).distinct(), visible, year=None,
        hospital_id=None, modality=None)).scalars().all()
    hospitals = conn.execute(_filtered(
        select(Hospital.id, Hospital.name, Hospital.code).distinct()
        .join(Study, Study.hospital_id == Hospital.id), visible, year=None,
        hospital_id=None, modality=None)).all()
    modalities = conn.execute(_filtered(
        select(Series.modality).distinct().join(Study, Study.id == Series.study_fk),
        visible, year=None, hospital_id=None, modality=None)).scalars().all()
    return (sorted((y for y in years if y), reverse=True), sorted(hospitals, key=lambda h: h[1]),
            sorted(m for m in modalities if m))


def series_of(conn: Any, study_ids: Sequence[int]) -> list[Any]:
    """Series of these studies in display order (series number)."""
    if not study_ids:
        return []
    return list(conn.execute(
        select(Series.id, Series.study_fk, Series.series_instance_uid, Series.modality,
               Series.body_part_examined, Series.series_description, Series.series_number,
               Series.num_instances)
        .where(Series.study_fk.in_(study_ids))
        .order_by(Series.study_fk, Series.series_number, Series.id)).all())


def middle_instance(conn: Any, series_id: int, count: int) -> str | None:
    """The SOP instance UID in the middle of a series (a representative thumbnail)."""
    return conn.execute(  # type: ignore[no-any-return]
        select(Instance.sop_instance_uid).where(Instance.series_fk == series_id)
        .order_by(Instance.instance_number, Instance.id)
        .limit(1).offset(max(count // 2, 0))).scalar_one_or_none()


def reports_of(conn: Any, study_ids: Sequence[int]) -> list[Any]:
    """The reports linked to these studies (public id, status), newest version last."""
    if not study_ids:
        return []
    return list(conn.execute(
        select(Report.study_fk, Report.public_id, Report.status, Report.version_count)
        .where(Report.study_fk.in_(study_ids)).order_by(Report.id)).all())


def study_by_uid(conn: Any, study_uid: str) -> Any:
    """One study row with its hospital's name, or None."""
    return conn.execute(
        select(Study.id, Study.study_instance_uid, Study.study_date, Study.study_time,
               Study.study_description, Study.num_series, Study.num_instances,
               Study.size_bytes, Study.hospital_id, Hospital.name.label("hospital_name"),
               Hospital.code.label("hospital_code"))
        .join(Hospital, Hospital.id == Study.hospital_id)
        .where(Study.study_instance_uid == study_uid)).first()
