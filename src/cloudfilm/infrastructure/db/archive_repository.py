"""Queries behind ingest: find-or-create hospitals, patients, studies, series; store instances.

Repositories never commit; the calling service owns the transaction. Creation races between
concurrent ingests are settled by the unique constraints: ``INSERT .. ON CONFLICT DO
NOTHING`` then ``SELECT``, on SQLite and PostgreSQL alike. Core statements (not ORM
entities) keep the per-instance cost of ingest low: a batch of 50 instances of one series
costs a handful of statements plus one multi-row INSERT.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, insert, select, update
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


def _insert_ignore(session: Session, model: Any, values: dict[str, Any]) -> bool:
    """Insert unless a unique key exists already; True when this call inserted the row."""
    dialect = session.get_bind().dialect.name
    ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
    result = session.execute(ins(model).values(**values).on_conflict_do_nothing())
    return bool(result.rowcount)  # type: ignore[attr-defined]


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


def studies_by_uid(session: Session, uids: Iterable[str]) -> dict[str, Row[Any]]:
    rows = session.execute(
        select(Study.id, Study.study_instance_uid, Study.patient_fk).where(
            Study.study_instance_uid.in_(list(uids))
        )
    )
    return {r.study_instance_uid: r for r in rows}


def series_by_uid(session: Session, uids: Iterable[str]) -> dict[str, Row[Any]]:
    rows = session.execute(
        select(Series.id, Series.series_instance_uid, Series.study_fk).where(
            Series.series_instance_uid.in_(list(uids))
        )
    )
    return {r.series_instance_uid: r for r in rows}


def instances_by_uid(session: Session, uids: Iterable[str]) -> dict[str, Row[Any]]:
    rows = session.execute(
        select(
            Instance.id, Instance.sop_instance_uid, Instance.sha256, Instance.series_fk,
            Instance.study_fk, Instance.hospital_id, Instance.blob_key, Instance.size_bytes,
            Instance.received_at,
        ).where(Instance.sop_instance_uid.in_(list(uids)))
    )  # fmt: skip
    return {r.sop_instance_uid: r for r in rows}


def known_versions(session: Session, pairs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (SOP Instance UID, SHA-256) pairs were stored before, as current or superseded
    versions (a late resend of an old version then changes nothing)."""
    if not pairs:
        return set()
    uids = list({uid for uid, _ in pairs})
    found = {
        (r.sop_instance_uid, r.sha256)
        for r in session.execute(
            select(Instance.sop_instance_uid, Instance.sha256).where(
                Instance.sop_instance_uid.in_(uids)
            )
        )
    }
    missing = [p for p in pairs if p not in found]
    if missing:
        found |= {
            (r.sop_instance_uid, r.sha256)
            for r in session.execute(
                select(InstanceVersion.sop_instance_uid, InstanceVersion.sha256).where(
                    InstanceVersion.sop_instance_uid.in_([u for u, _ in missing])
                )
            )
        }
    return found & set(pairs)


def create_study(session: Session, values: dict[str, Any]) -> Row[Any]:
    _insert_ignore(session, Study, values)
    return studies_by_uid(session, [values["study_instance_uid"]])[values["study_instance_uid"]]


def create_series(session: Session, values: dict[str, Any]) -> tuple[Row[Any], bool]:
    """The series row, and whether this call created it (a concurrent ingest may have)."""
    created = _insert_ignore(session, Series, values)
    uid = values["series_instance_uid"]
    return series_by_uid(session, [uid])[uid], created


def add_instances(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert new instances (one multi-row statement) and bump the series and study counters.

    ``rows`` carry an extra key ``_new_series`` (bool) that is not a column.
    """
    if not rows:
        return
    now = rows[-1]["received_at"]
    per_series: dict[int, int] = {}
    per_study: dict[int, list[int]] = {}
    for row in rows:
        per_series[row["series_fk"]] = per_series.get(row["series_fk"], 0) + 1
        counts = per_study.setdefault(row["study_fk"], [0, 0, 0])
        counts[0] += 1
        counts[1] += 1 if row["_new_series"] else 0
        counts[2] += row["size_bytes"]
    session.execute(insert(Instance), [{k: v for k, v in r.items() if k[0] != "_"} for r in rows])
    for series_fk, n in per_series.items():
        session.execute(
            update(Series)
            .where(Series.id == series_fk)
            .values(num_instances=Series.num_instances + n, updated_at=now)
        )
    for study_fk, (n, new_series, size) in per_study.items():
        session.execute(
            update(Study)
            .where(Study.id == study_fk)
            .values(
                num_instances=Study.num_instances + n,
                num_series=Study.num_series + new_series,
                size_bytes=Study.size_bytes + size,
                updated_at=now,
            )
        )


def replace_instance(
    session: Session, current: Row[Any], values: dict[str, Any], *, now: datetime
) -> None:
    """Keep the current version in ``instance_version`` and point the row at the new one."""
    session.execute(
        insert(InstanceVersion).values(
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
    session.execute(
        update(Instance)
        .where(Instance.id == current.id)
        .values(**{k: v for k, v in values.items() if k[0] != "_"})
    )
    session.execute(
        update(Study)
        .where(Study.id == current.study_fk)
        .values(size_bytes=Study.size_bytes + values["size_bytes"] - current.size_bytes,
                updated_at=now)
    )


def blob_is_referenced(session: Session, key: str) -> bool:
    in_use = session.scalar(select(Instance.id).where(Instance.blob_key == key).limit(1))
    if in_use is not None:
        return True
    kept = session.scalar(
        select(InstanceVersion.id).where(InstanceVersion.blob_key == key).limit(1)
    )
    return kept is not None
