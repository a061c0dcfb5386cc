"""Queries of the storage jobs' outbox, the scrubber's results and lossless re-encoding."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

import orjson
from sqlalchemy import Row, Table, bindparam, func, insert, literal, select, update
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db.models import (
    BlobCheck,
    Hospital,
    Instance,
    InstanceVersion,
    Series,
    StorageJob,
)


def add_jobs(session: Session, kind: str, uids: Iterable[str], *, now: datetime) -> None:
    rows = [{"kind": kind, "sop_instance_uid": uid, "state": "pending", "attempts": 0,
             "last_error": "", "created_at": now, "updated_at": now} for uid in uids]
    if rows:
        session.execute(insert(StorageJob), rows)


def add_jobs_for_syntaxes(session: Session, kind: str, uids: Sequence[str],
                          syntaxes: Iterable[str], *, now: datetime) -> None:
    """:func:`add_jobs` for those of ``uids`` stored in one of ``syntaxes`` only, in one
    INSERT ... SELECT (as many statements as :func:`add_jobs`)."""
    if not uids:
        return
    at = literal(now, StorageJob.created_at.type)
    chosen = (select(literal(kind, StorageJob.kind.type), Instance.sop_instance_uid,
                     literal("pending", StorageJob.state.type), literal(0),
                     literal("", StorageJob.last_error.type), at, at)
              .where(Instance.sop_instance_uid.in_(list(uids)),
                     Instance.transfer_syntax_uid.in_(sorted(syntaxes))))
    session.execute(insert(StorageJob).from_select(
        ["kind", "sop_instance_uid", "state", "attempts", "last_error", "created_at",
         "updated_at"], chosen))


def claim(session: Session, *, stale_before: datetime, cleanup_before: datetime,
          now: datetime, limit: int) -> list[int]:
    """Mark pending jobs, queued ones not finished since ``stale_before`` (their worker
    died) and cleanups due (old blob kept until ``cleanup_before``) as queued now; return
    their ids (the caller hands them to the queue)."""
    ids = list(session.scalars(
        select(StorageJob.id)
        .where((StorageJob.state == "pending")
               | ((StorageJob.state == "queued") & (StorageJob.updated_at < stale_before))
               | ((StorageJob.state == "cleanup") & (StorageJob.updated_at <= cleanup_before)))
        .order_by(StorageJob.id).limit(limit).with_for_update(skip_locked=True)))
    if ids:
        session.execute(update(StorageJob).where(StorageJob.id.in_(ids))
                        .values(state="queued", updated_at=now))
    return ids


def job(session: Session, job_id: int) -> StorageJob | None:
    return session.get(StorageJob, job_id)


def jobs(session: Session, *, state: str | None, limit: int) -> Sequence[StorageJob]:
    query = select(StorageJob)
    if state:
        query = query.where(StorageJob.state == state)
    return session.scalars(query.order_by(StorageJob.id.desc()).limit(limit)).all()


def job_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(StorageJob.state, func.count()).group_by(StorageJob.state))
    return {state: n for state, n in rows}


def retry(session: Session, ids: Sequence[int] | None, *, now: datetime) -> int:
    stmt = update(StorageJob).where(StorageJob.state == "dead")
    if ids:
        stmt = stmt.where(StorageJob.id.in_(ids))
    result = session.execute(stmt.values(state="pending", attempts=0, updated_at=now))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _instance_rows() -> Any:
    """An instance with what storage jobs decide on: its blob, syntax, modality, hospital."""
    return (select(Instance.id, Instance.sop_instance_uid, Instance.hospital_id,
                   Instance.blob_key, Instance.sha256, Instance.size_bytes,
                   Instance.transfer_syntax_uid, Instance.original_transfer_syntax_uid,
                   Instance.received_at, Instance.metadata_json, Instance.study_fk,
                   Instance.storage_tier, Series.modality,
                   Hospital.code.label("hospital_code"))
            .join(Series, Series.id == Instance.series_fk)
            .join(Hospital, Hospital.id == Instance.hospital_id))


def instance(session: Session, sop_uid: str) -> Any:
    return session.execute(
        _instance_rows().where(Instance.sop_instance_uid == sop_uid)).first()


_INSTANCES = cast(Table, Instance.__table__)
_VERSIONS = cast(Table, InstanceVersion.__table__)


def apply_transcode(session: Session, current: Row[Any], *, blob_key: str, sha256: str,
                    size: int, transfer_syntax_uid: str, metadata_json: str,
                    now: datetime, batch: _SwitchBatch | None = None) -> bool:
    """Point the instance at its re-encoded blob and keep the original in its history.

    Only when the row still holds the blob we read (compare-and-set on sha256): a sender's
    replacement meanwhile wins. Returns whether the row changed. With ``batch`` the history
    row and the study's size change are collected there (:meth:`_SwitchBatch.flush` writes
    a batch's in one statement each) instead of written here.
    """
    table = _INSTANCES.c
    changed = session.execute(
        update(_INSTANCES)  # Core: a fraction of the ORM-enabled update's CPU
        .where(table.id == current.id, table.sha256 == current.sha256)
        .values(blob_key=blob_key, sha256=sha256, size_bytes=size,
                transfer_syntax_uid=transfer_syntax_uid, metadata_json=metadata_json,
                original_transfer_syntax_uid=current.transfer_syntax_uid,
                storage_tier="hot"))  # the new blob is written to the hot store
    if not changed.rowcount:  # type: ignore[attr-defined]
        return False
    own = batch if batch is not None else _SwitchBatch()
    own.versions.append({
        "sop_instance_uid": current.sop_instance_uid, "hospital_id": current.hospital_id,
        "blob_key": "", "size_bytes": current.size_bytes, "sha256": current.sha256,
        "received_at": current.received_at, "superseded_at": now,
        "superseded_by_sha256": sha256, "transfer_syntax_uid": current.transfer_syntax_uid,
        "reason": "transcoded"})
    own.study_sizes[current.study_fk] = (own.study_sizes.get(current.study_fk, 0)
                                         + size - current.size_bytes)
    if batch is None:
        own.flush(session)
    return True


class _SwitchBatch:
    """History rows and study size changes of a batch of switches, written together."""

    def __init__(self) -> None:
        self.versions: list[dict[str, Any]] = []
        self.study_sizes: dict[int, int] = {}

    def flush(self, session: Session) -> None:
        if self.versions:
            session.execute(insert(_VERSIONS), self.versions)
        add_study_sizes(session, self.study_sizes)
        self.versions, self.study_sizes = [], {}


def switch_batch() -> _SwitchBatch:
    return _SwitchBatch()


def add_study_sizes(session: Session, deltas: dict[int, int]) -> None:
    from cloudfilm.infrastructure.db.models import Study

    for study_fk, delta in deltas.items():
        session.execute(update(Study).where(Study.id == study_fk)
                        .values(size_bytes=Study.size_bytes + delta))


def transcoded_from(session: Session, sop_uid: str) -> Any:
    """The originals an instance was re-encoded from (newest first)."""
    return session.execute(
        select(InstanceVersion.sha256, InstanceVersion.transfer_syntax_uid,
               InstanceVersion.size_bytes)
        .where(InstanceVersion.sop_instance_uid == sop_uid,
               InstanceVersion.reason == "transcoded")
        .order_by(InstanceVersion.id.desc())).all()


def blob_in_use(session: Session, key: str) -> bool:
    if session.execute(select(Instance.id).where(Instance.blob_key == key).limit(1)).first():
        return True
    if session.execute(select(InstanceVersion.id).where(InstanceVersion.blob_key == key)
                       .limit(1)).first():
        return True
    from cloudfilm.infrastructure.db.models import ReconciliationItem

    return session.execute(select(ReconciliationItem.id)
                           .where(ReconciliationItem.blob_key == key).limit(1)).first() is not None


# -- batches of jobs: one query per batch instead of one per object -----------------------


def jobs_by_id(session: Session, ids: Sequence[int]) -> dict[int, Any]:
    """(id, kind, sop uid, state, attempts) of the named jobs, by id."""
    rows = session.execute(
        select(StorageJob.id, StorageJob.kind, StorageJob.sop_instance_uid, StorageJob.state,
               StorageJob.attempts).where(StorageJob.id.in_(ids))).all()
    return {row.id: row for row in rows}


def instances_by_uid(session: Session, uids: Sequence[str]) -> dict[str, Any]:
    """What :func:`instance` returns, for several SOP Instance UIDs at once."""
    rows = session.execute(_instance_rows().where(Instance.sop_instance_uid.in_(uids))).all()
    return {row.sop_instance_uid: row for row in rows}


def originals_of(session: Session, uids: Sequence[str]) -> dict[str, list[str]]:
    """SHA-256 of the originals each instance was re-encoded from."""
    out: dict[str, list[str]] = {}
    for uid, sha in session.execute(
            select(InstanceVersion.sop_instance_uid, InstanceVersion.sha256)
            .where(InstanceVersion.sop_instance_uid.in_(uids),
                   InstanceVersion.reason == "transcoded")):
        out.setdefault(uid, []).append(sha)
    return out


def held_studies(session: Session, study_fks: Sequence[int]) -> set[int]:
    """Which of the studies an unreleased legal hold covers (itself or its patient)."""
    from cloudfilm.infrastructure.db.models import Patient, Study

    studies, patients = active_holds(session)
    if not studies and not patients:
        return set()
    return {fk for fk, uid, code, pid in session.execute(
        select(Study.id, Study.study_instance_uid, Hospital.code, Patient.patient_id)
        .join(Patient, Patient.id == Study.patient_fk)
        .join(Hospital, Hospital.id == Study.hospital_id)
        .where(Study.id.in_(study_fks)))
        if uid in studies or (code, pid) in patients}


def blobs_in_use(session: Session, keys: Sequence[str]) -> set[str]:
    """Which of the blob keys an instance, a kept version or a reconciliation item uses."""
    from cloudfilm.infrastructure.db.models import ReconciliationItem

    used: set[str] = set()
    for column in (Instance.blob_key, InstanceVersion.blob_key, ReconciliationItem.blob_key):
        used.update(session.scalars(select(column).where(column.in_(keys)).distinct()))
    return used


def set_jobs(session: Session, updates: Iterable[tuple[int, str, str, int]], *,
             now: datetime) -> None:
    """(id, state, detail, attempts) for several jobs in one statement."""
    rows = [{"jid": jid, "state": state, "last_error": detail, "attempts": attempts,
             "updated_at": now} for jid, state, detail, attempts in updates]
    if rows:
        table = StorageJob.__table__
        session.execute(
            update(table).where(table.c.id == bindparam("jid"))  # type: ignore[arg-type]
            .values(state=bindparam("state"), last_error=bindparam("last_error"),
                    attempts=bindparam("attempts"), updated_at=bindparam("updated_at")),
            rows)


def instances_after(session: Session, after_id: int, limit: int) -> Any:
    return session.execute(
        select(Instance.id, Instance.sop_instance_uid, Instance.blob_key, Instance.sha256,
               Instance.size_bytes, Instance.storage_tier)
        .where(Instance.id > after_id).order_by(Instance.id).limit(limit)).all()


def record_check(session: Session, sop_uid: str, *, ok: bool, repaired: bool, detail: str,
                 now: datetime) -> None:
    row = session.scalars(select(BlobCheck).where(BlobCheck.sop_instance_uid == sop_uid)
                          ).first()
    if row is None:
        session.add(BlobCheck(sop_instance_uid=sop_uid, checked_at=now, ok=ok,
                              repaired=repaired, detail=detail))
    else:
        row.checked_at, row.ok, row.repaired, row.detail = now, ok, repaired, detail


def check_of(session: Session, sop_uid: str) -> BlobCheck | None:
    return session.scalars(select(BlobCheck).where(BlobCheck.sop_instance_uid == sop_uid)
                           ).first()


def bytes_by_modality_month(session: Session) -> Any:
    """(modality, "YYYY-MM", objects, stored bytes, bytes as received) per month of receipt.

    As-received bytes of a re-encoded object come from its ``transcoded`` history row.
    """
    if session.get_bind().dialect.name == "postgresql":
        month: Any = func.to_char(Instance.received_at, "YYYY-MM")
    else:
        month = func.substr(Instance.received_at, 1, 7)
    original = (select(InstanceVersion.size_bytes)
                .where(InstanceVersion.sop_instance_uid == Instance.sop_instance_uid,
                       InstanceVersion.reason == "transcoded")
                .order_by(InstanceVersion.id).limit(1).scalar_subquery())
    received = func.coalesce(original, Instance.size_bytes)
    return session.execute(
        select(Series.modality, month.label("month"), func.count(),
               func.sum(Instance.size_bytes), func.sum(received))
        .join(Series, Series.id == Instance.series_fk)
        .group_by(Series.modality, month).order_by(month, Series.modality)).all()


# -- tiers, legal holds (issue 16 lifecycle) ------------------------------------------------

_UNFINISHED = ("pending", "queued", "cleanup")


def tier_candidates(session: Session, *, done_before: datetime, after_id: int,
                    limit: int) -> Any:
    """Hot instances of studies done (exam time, else receipt) before ``done_before`` with
    no unfinished job, from ``after_id`` on: (id, sop uid, modality, study uid, done at,
    hospital code, patient id)."""
    from cloudfilm.infrastructure.db.models import Patient, Study

    done_at = func.coalesce(Study.exam_at, Study.received_at)
    busy = (select(StorageJob.id)
            .where(StorageJob.sop_instance_uid == Instance.sop_instance_uid,
                   StorageJob.state.in_(_UNFINISHED)).exists())
    return session.execute(
        select(Instance.id, Instance.sop_instance_uid, Series.modality,
               Study.study_instance_uid, done_at.label("done_at"), Hospital.code,
               Patient.patient_id)
        .join(Series, Series.id == Instance.series_fk)
        .join(Study, Study.id == Instance.study_fk)
        .join(Patient, Patient.id == Study.patient_fk)
        .join(Hospital, Hospital.id == Study.hospital_id)
        .where(Instance.storage_tier == "hot", Instance.id > after_id, done_at < done_before,
               ~busy)
        .order_by(Instance.id).limit(limit)).all()


def studies_read_since(session: Session, since: datetime) -> set[str]:
    """Study UIDs with an allowed read in the audit trail since ``since``: every read of
    patient data leaves one (resource study/series/instance; the study in ``detail``)."""
    from cloudfilm.infrastructure.db.models import AuditEvent

    seen: set[str] = set()
    rows = session.execute(
        select(AuditEvent.resource_type, AuditEvent.resource_uid, AuditEvent.detail)
        .where(AuditEvent.at >= since, AuditEvent.outcome == "allowed",
               AuditEvent.resource_type.in_(("study", "series", "instance"))))
    for rtype, uid, detail in rows:
        if rtype == "study":
            seen.add(uid)
            continue
        try:
            study = orjson.loads(detail or "{}").get("study")
        except orjson.JSONDecodeError:
            continue
        if isinstance(study, str):
            seen.add(study)
    return seen


def active_holds(session: Session) -> tuple[set[str], set[tuple[str, str]]]:
    """Studies and (hospital code, PatientID) pairs under an unreleased legal hold."""
    from cloudfilm.infrastructure.db.models import LegalHold

    studies: set[str] = set()
    patients: set[tuple[str, str]] = set()
    for scope, uid, code, pid in session.execute(
            select(LegalHold.scope, LegalHold.study_instance_uid, LegalHold.hospital_code,
                   LegalHold.patient_id).where(LegalHold.released_at.is_(None))):
        if scope == "study":
            studies.add(uid)
        else:
            patients.add((code, pid))
    return studies, patients


def study_held(session: Session, study_fk: int) -> bool:
    """Whether an unreleased legal hold covers the study (itself or its patient)."""
    from cloudfilm.infrastructure.db.models import LegalHold, Patient, Study

    row = session.execute(
        select(Study.study_instance_uid, Hospital.code, Patient.patient_id)
        .join(Patient, Patient.id == Study.patient_fk)
        .join(Hospital, Hospital.id == Study.hospital_id)
        .where(Study.id == study_fk)).first()
    if row is None:
        return False
    uid, code, pid = row
    hit = session.execute(
        select(LegalHold.id).where(
            LegalHold.released_at.is_(None),
            ((LegalHold.scope == "study") & (LegalHold.study_instance_uid == uid))
            | ((LegalHold.scope == "patient") & (LegalHold.hospital_code == code)
               & (LegalHold.patient_id == pid))).limit(1)).first()
    return hit is not None


def set_tier(session: Session, instance_id: int, *, sha256: str, from_tier: str,
             to_tier: str) -> bool:
    """Compare-and-set of an instance's tier (only if it still holds the same blob)."""
    changed = session.execute(
        update(Instance)
        .where(Instance.id == instance_id, Instance.sha256 == sha256,
               Instance.storage_tier == from_tier)
        .values(storage_tier=to_tier))
    return bool(changed.rowcount)  # type: ignore[attr-defined]


def tier_counts(session: Session) -> dict[str, tuple[int, int]]:
    """Objects and stored bytes per tier."""
    rows = session.execute(select(Instance.storage_tier, func.count(),
                                  func.coalesce(func.sum(Instance.size_bytes), 0))
                           .group_by(Instance.storage_tier))
    return {tier: (int(n), int(b)) for tier, n, b in rows}
