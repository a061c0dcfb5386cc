"""Queries of retention rules, legal holds, deletion requests, and the removal of a study's
index rows (issue 16 lifecycle)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db.models import (
    Base,
    DeletionRequest,
    Hospital,
    Instance,
    InstanceVersion,
    LegalHold,
    Patient,
    RetentionRule,
    Series,
    Study,
)


def rules(session: Session, *, active_only: bool = True) -> Sequence[RetentionRule]:
    query = select(RetentionRule).order_by(RetentionRule.id)
    if active_only:
        query = query.where(RetentionRule.active.is_(True))
    return session.scalars(query).all()


def studies_done_before(session: Session, *, date_before: str, received_before: datetime,
                        after_id: int, limit: int) -> Any:
    """Studies whose study date (else receipt) is before the given bounds, from ``after_id``:
    with their hospital code, patient, birth date and totals."""
    return session.execute(
        select(Study.id, Study.study_instance_uid, Study.study_date, Study.received_at,
               Study.study_description, Study.num_instances, Study.size_bytes,
               Hospital.code.label("hospital_code"), Patient.patient_id, Patient.birth_date,
               Study.patient_fk)
        .join(Patient, Patient.id == Study.patient_fk)
        .join(Hospital, Hospital.id == Study.hospital_id)
        .where(Study.id > after_id,
               ((Study.study_date != "") & (Study.study_date < date_before))
               | ((Study.study_date == "") & (Study.received_at < received_before)))
        .order_by(Study.id).limit(limit)).all()


def study_facts(session: Session, uids: Sequence[str]) -> Any:
    """The same columns as :func:`studies_done_before` for the named studies."""
    return session.execute(
        select(Study.id, Study.study_instance_uid, Study.study_date, Study.received_at,
               Study.study_description, Study.num_instances, Study.size_bytes,
               Hospital.code.label("hospital_code"), Patient.patient_id, Patient.birth_date,
               Study.patient_fk)
        .join(Patient, Patient.id == Study.patient_fk)
        .join(Hospital, Hospital.id == Study.hospital_id)
        .where(Study.study_instance_uid.in_(list(uids)))).all()


def modalities(session: Session, study_ids: Sequence[int]) -> dict[int, set[str]]:
    out: dict[int, set[str]] = {}
    if not study_ids:
        return out
    for study_fk, modality in session.execute(
            select(Series.study_fk, Series.modality).distinct()
            .where(Series.study_fk.in_(list(study_ids)))):
        out.setdefault(study_fk, set()).add((modality or "").upper())
    return out


def patient_exists(session: Session, hospital_code: str, patient_id: str) -> int | None:
    return session.scalars(
        select(Patient.id).join(Hospital, Hospital.id == Patient.hospital_id)
        .where(Hospital.code == hospital_code, Patient.patient_id == patient_id)
        .limit(1)).first()


def study_exists(session: Session, uid: str) -> bool:
    return session.scalars(select(Study.id).where(Study.study_instance_uid == uid)
                           ).first() is not None


def holds(session: Session, *, active_only: bool) -> Sequence[LegalHold]:
    query = select(LegalHold).order_by(LegalHold.id.desc())
    if active_only:
        query = query.where(LegalHold.released_at.is_(None))
    return session.scalars(query).all()


def deletion_requests(session: Session, limit: int = 100) -> Sequence[DeletionRequest]:
    return session.scalars(select(DeletionRequest).order_by(DeletionRequest.id.desc())
                           .limit(limit)).all()


def _referencing(target: str) -> list[tuple[Table, Any]]:
    """Every (table, column) with a foreign key to ``target`` (study/series/instance): the
    tables of any area, found from the schema so that a new one is never missed."""
    found = []
    for table in Base.metadata.sorted_tables:
        if table.name in ("study", "series", "instance"):
            continue
        for fk in table.foreign_keys:
            if fk.column.table.name == target:
                found.append((table, fk.parent))
    return found


def delete_study(session: Session, study_id: int) -> tuple[list[str], int, int]:
    """Remove a study's index rows (instances, their history, jobs and checks, series, the
    study; rows of other tables pointing at them lose the pointer or go with it).

    Returns the blob keys it referenced (the caller deletes them after the commit), and the
    objects and bytes removed.
    """
    from cloudfilm.infrastructure.db.models import BlobCheck, StorageJob

    inst = session.execute(select(Instance.id, Instance.sop_instance_uid, Instance.blob_key,
                                  Instance.size_bytes)
                           .where(Instance.study_fk == study_id)).all()
    uids = [r.sop_instance_uid for r in inst]
    keys = {r.blob_key for r in inst}
    size = sum(int(r.size_bytes) for r in inst)
    if uids:
        keys |= {k for k in session.scalars(select(InstanceVersion.blob_key).where(
            InstanceVersion.sop_instance_uid.in_(uids))) if k}
        for model in (InstanceVersion, StorageJob, BlobCheck):
            session.execute(delete(model).where(model.sop_instance_uid.in_(uids)))
    series_ids = list(session.scalars(select(Series.id).where(Series.study_fk == study_id)))
    for target, ids in (("instance", [r.id for r in inst]), ("series", series_ids),
                        ("study", [study_id])):
        if not ids:
            continue
        for table, column in _referencing(target):
            if column.nullable:
                session.execute(update(table).where(column.in_(ids)).values({column.name: None}))
            else:
                session.execute(delete(table).where(column.in_(ids)))
    session.execute(delete(Instance).where(Instance.study_fk == study_id))
    session.execute(delete(Series).where(Series.study_fk == study_id))
    session.execute(delete(Study).where(Study.id == study_id))
    return sorted(keys), len(inst), size


def keys_in_use(session: Session, keys: Sequence[str]) -> set[str]:
    """Of ``keys``, those another instance or version still references (identical bytes
    stored twice share one content-addressed blob)."""
    if not keys:
        return set()
    used = set(session.scalars(select(Instance.blob_key).where(Instance.blob_key.in_(keys))))
    used |= set(session.scalars(select(InstanceVersion.blob_key)
                                .where(InstanceVersion.blob_key.in_(keys))))
    return used


def count_studies(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(Study)) or 0)
