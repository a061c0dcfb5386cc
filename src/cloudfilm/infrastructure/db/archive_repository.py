"""Queries behind ingest: find-or-create hospitals, patients, studies, series; store instances.

Repositories never commit; the calling service owns the transaction. Creation races between
concurrent ingests are settled by the unique constraints: ``INSERT .. ON CONFLICT DO
NOTHING`` then ``SELECT``, on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db.models import (
    Hospital,
    Instance,
    InstanceVersion,
    Patient,
    Series,
    Study,
)


def _insert_ignore(session: Session, model: Any, values: dict[str, Any]) -> None:
    dialect = session.get_bind().dialect.name
    ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(ins(model).values(**values).on_conflict_do_nothing())


def hospital_id(session: Session, code: str, *, name: str, now: datetime) -> int:
    found = session.scalar(select(Hospital.id).where(Hospital.code == code))
    if found is not None:
        return found
    _insert_ignore(session, Hospital, {"code": code, "name": name, "created_at": now})
    return session.scalars(select(Hospital.id).where(Hospital.code == code)).one()


def upsert_patient(session: Session, *, hospital_id: int, values: dict[str, Any]) -> int:
    """Create or refresh one hospital's patient record; the latest header's values win."""
    key = (
        Patient.hospital_id == hospital_id,
        Patient.patient_id == values["patient_id"],
        Patient.issuer_of_patient_id == values["issuer_of_patient_id"],
    )
    row = session.execute(
        select(Patient.id, Patient.patient_name, Patient.birth_date, Patient.sex).where(*key)
    ).one_or_none()
    if row is None:
        _insert_ignore(session, Patient, {"hospital_id": hospital_id, **values})
        return session.scalars(select(Patient.id).where(*key)).one()
    changed = (row.patient_name, row.birth_date, row.sex) != (
        values["patient_name"],
        values["birth_date"],
        values["sex"],
    )
    if changed:
        session.execute(update(Patient).where(Patient.id == row.id).values(**values))
    return int(row.id)


def study_by_uid(session: Session, uid: str) -> Study | None:
    return session.scalars(select(Study).where(Study.study_instance_uid == uid)).one_or_none()


def series_by_uid(session: Session, uid: str) -> Series | None:
    return session.scalars(
        select(Series).where(Series.series_instance_uid == uid)
    ).one_or_none()


def instance_by_uid(session: Session, uid: str) -> Instance | None:
    return session.scalars(
        select(Instance).where(Instance.sop_instance_uid == uid)
    ).one_or_none()


def create_study(session: Session, values: dict[str, Any]) -> Study:
    _insert_ignore(session, Study, values)
    study = study_by_uid(session, values["study_instance_uid"])
    assert study is not None
    return study


def create_series(session: Session, values: dict[str, Any]) -> Series:
    _insert_ignore(session, Series, values)
    series = series_by_uid(session, values["series_instance_uid"])
    assert series is not None
    return series


def add_instance(session: Session, values: dict[str, Any], *, new_series: bool) -> None:
    """Insert an instance and bump the series and study counters in the same transaction."""
    session.add(Instance(**values))
    session.flush()
    now = values["received_at"]
    session.execute(
        update(Series)
        .where(Series.id == values["series_fk"])
        .values(num_instances=Series.num_instances + 1, updated_at=now)
    )
    session.execute(
        update(Study)
        .where(Study.id == values["study_fk"])
        .values(
            num_instances=Study.num_instances + 1,
            num_series=Study.num_series + (1 if new_series else 0),
            size_bytes=Study.size_bytes + values["size_bytes"],
            updated_at=now,
        )
    )


def replace_instance(
    session: Session, current: Instance, values: dict[str, Any], *, now: datetime
) -> None:
    """Keep the current version in ``instance_version`` and point the row at the new one."""
    session.add(
        InstanceVersion(
            sop_instance_uid=current.sop_instance_uid,
            hospital_id=current.hospital_id,
            blob_key=current.blob_key,
            size_bytes=current.size_bytes,
            sha256=current.sha256,
            received_at=current.received_at,
            superseded_at=now,
            superseded_by_sha256=values["sha256"],
        )
    )
    delta = values["size_bytes"] - current.size_bytes
    for name, value in values.items():
        setattr(current, name, value)
    session.flush()
    session.execute(
        update(Study)
        .where(Study.id == current.study_fk)
        .values(size_bytes=Study.size_bytes + delta, updated_at=now)
    )


def blob_is_referenced(session: Session, key: str) -> bool:
    in_use = session.scalar(select(Instance.id).where(Instance.blob_key == key).limit(1))
    if in_use is not None:
        return True
    kept = session.scalar(
        select(InstanceVersion.id).where(InstanceVersion.blob_key == key).limit(1)
    )
    return kept is not None
