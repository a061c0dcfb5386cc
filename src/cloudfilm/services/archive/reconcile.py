"""The reconciliation queue: objects a hospital sent that could not be filed as they are.

Ingest holds an object here (a durable blob and one ``reconciliation_item`` row, answered
as a success with a warning) when its PatientID is empty or another hospital already holds
its Study, Series or SOP Instance UID. Held objects are in no patient, study or series: no
search, retrieve, timeline or grant can reach them. Who may see and settle an item: the
sending hospital (its credential, its hospital administrator: ``archive.reconcile``) and
platform administrators (``archive.reconcile_any``). Settling:

- ``assign``: file it under one of the hospital's patients, named by its local PatientID,
  or by a national ID through the patient index (the record of that hospital linked to the
  resident). The archive writes a corrected copy (PatientID set) and ingests it through
  the one pipeline as the hospital's object;
- ``copy``: a study- or series-UID clash that is a genuine copy of the other hospital's
  study: nothing enters the index (the sender gains no access to that study); the item is
  closed, its blob kept;
- ``keep``: a clash (study or series UID) that is the hospital's own exam: a corrected copy
  with new Study, Series and SOP Instance UIDs (``2.25.`` derived from the hospital code and
  the original UIDs, so every object of the study gets the same new study UID) is ingested
  as its study.

The original bytes stay referenced by the item whatever the outcome (never lost). Settling
is idempotent: the corrected copy is deterministic, so a retry after a crash between the
ingest and the close is a resend. Every read and every change is audited.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from pydicom import dcmread
from pydicom.uid import UID

from cloudfilm.infrastructure.db import identity_repository as identity_repo
from cloudfilm.infrastructure.db import reconcile_repository as repo
from cloudfilm.infrastructure.db.session import Database
from cloudfilm.infrastructure.storage.base import BlobStore
from cloudfilm.services.access.audit import AuditEntry, AuditService
from cloudfilm.services.archive.ingest import IngestItem, IngestService, StoredInstance
from cloudfilm.services.errors import (
    CloudfilmError,
    InvalidInputError,
    NotAuthorizedError,
    NotFoundError,
)
from cloudfilm.services.identity.mpi import NATIONAL_ID, parse_national_id
from cloudfilm.services.identity.protection import IdProtector
from cloudfilm.services.kernel.actor import LOCAL_OPERATOR, Actor, Permission
from cloudfilm.services.kernel.sender import Sender

STATES = ("open", "assigned", "copy", "own-study")
CLASHES = ("study-clash", "series-clash")
"""Reasons of a UID another hospital holds: settled by ``copy`` or ``keep``."""
_MAX_LIST = 500
_MAX_LO = 64


@dataclass(frozen=True, slots=True)
class HeldItem:
    """One queue item as shown to those who may settle it."""

    id: int
    hospital_code: str
    reason: str
    state: str
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    size_bytes: int
    door: str
    received_at: datetime
    summary: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    resolved_at: datetime | None = None
    resolved_by: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "hospital": self.hospital_code, "reason": self.reason,
            "state": self.state, "sop_class_uid": self.sop_class_uid,
            "sop_instance_uid": self.sop_instance_uid,
            "study_instance_uid": self.study_instance_uid,
            "series_instance_uid": self.series_instance_uid, "size_bytes": self.size_bytes,
            "door": self.door, "received_at": self.received_at.isoformat(),
            "summary": self.summary, "result": self.result,
            "resolved_at": self.resolved_at.isoformat() if self.resolved_at else None,
            "resolved_by": self.resolved_by,
        }


def derived_uid(hospital_code: str, kind: str, uid: str) -> str:
    """A new UID for ``uid`` kept as ``hospital_code``'s own (PS3.5 B.2: ``2.25.`` and a
    128-bit number), the same every time so that all objects of a study agree."""
    digest = hashlib.sha256(f"cloudfilm-reconcile|{hospital_code}|{kind}|{uid}".encode())
    return f"2.25.{int.from_bytes(digest.digest()[:16], 'big')}"


class ReconciliationService:
    def __init__(self, db: Database, blobs: BlobStore, ingest: IngestService, work_dir: Path,
                 *, audit: AuditService | None = None,
                 protector: IdProtector | None = None) -> None:
        self._db = db
        self._blobs = blobs
        self._ingest = ingest
        self._work_dir = work_dir
        self._audit = audit
        self._protector = protector

    # -- reading ------------------------------------------------------------------------

    def list(self, *, actor: Actor = LOCAL_OPERATOR, state: str | None = "open",
             hospital_code: str | None = None, limit: int = 100,
             after_id: int = 0) -> list[HeldItem]:
        """Items the actor may see: its own hospital's, or any (administrators; optionally
        one hospital's)."""
        if state is not None and state not in STATES:
            raise InvalidInputError(f"state must be one of {', '.join(STATES)}")
        with self._db.read() as session:
            hospital_id = self._scope(session, actor, hospital_code)
            rows = repo.items(session, hospital_id=hospital_id, state=state,
                              limit=max(1, min(limit, _MAX_LIST)), after_id=after_id)
        self._record_read(actor, "reconcile.list", "", {"count": len(rows)})
        return [_view(r) for r in rows]

    def get(self, item_id: int, *, actor: Actor = LOCAL_OPERATOR) -> HeldItem:
        with self._db.read() as session:
            row = self._visible(session, item_id, actor)
        self._record_read(actor, "reconcile.read", row.sop_instance_uid, {"item": item_id})
        return _view(row)

    # -- settling -----------------------------------------------------------------------

    def assign(self, item_id: int, *, actor: Actor = LOCAL_OPERATOR, patient_id: str = "",
               issuer: str = "", national_id: str = "") -> HeldItem:
        """File a held object without PatientID under one of its hospital's patients.

        Raises
        ------
        InvalidInputError
            Neither or both keys, a malformed ID, a national ID with no record linked at
            this hospital, or an item that is not an open one without PatientID.
        """
        with self._db.read() as session:
            row = self._visible(session, item_id, actor)
            _require_open(row, "no-patient-id", "assign")
            if bool(patient_id.strip()) == bool(national_id.strip()):
                raise InvalidInputError("give either patient_id (the hospital's local ID) or "
                                        "national_id")
            if national_id.strip():
                patient_id, issuer = self._local_id_of(session, national_id, row.hospital_id)
                how = "national-id"
            else:
                patient_id, issuer = _lo(patient_id, "patient_id"), _lo(issuer, "issuer")
                how = "local-id"
        stored = self._reingest(row, {"PatientID": patient_id,
                                      **({"IssuerOfPatientID": issuer} if issuer else {})})
        return self._close(row, actor, "assigned", {
            "by": how, "sop_instance_uid": stored.sop_instance_uid,
            "study_instance_uid": stored.study_instance_uid, "outcome": stored.outcome})

    def mark_copy(self, item_id: int, *, actor: Actor = LOCAL_OPERATOR) -> HeldItem:
        """Close a study-UID clash as a genuine copy of the other hospital's study: nothing
        enters the index, and the sender gains no access to that study."""
        with self._db.read() as session:
            row = self._visible(session, item_id, actor)
            _require_open(row, CLASHES, "copy")
        return self._close(row, actor, "copy", {"copy_of": row.study_instance_uid})

    def keep_own(self, item_id: int, *, actor: Actor = LOCAL_OPERATOR) -> HeldItem:
        """File a study-UID clash as the sending hospital's own study under new UIDs."""
        with self._db.read() as session:
            row = self._visible(session, item_id, actor)
            _require_open(row, CLASHES, "keep")
        code = row.hospital_code
        changes = {
            "StudyInstanceUID": derived_uid(code, "study", row.study_instance_uid),
            "SeriesInstanceUID": derived_uid(code, "series", row.series_instance_uid),
            "SOPInstanceUID": derived_uid(code, "sop", row.sop_instance_uid),
        }
        stored = self._reingest(row, changes)
        return self._close(row, actor, "own-study", {
            "sop_instance_uid": stored.sop_instance_uid,
            "study_instance_uid": stored.study_instance_uid,
            "original_study_instance_uid": row.study_instance_uid, "outcome": stored.outcome})

    # -- helpers ------------------------------------------------------------------------

    def _scope(self, session: Any, actor: Actor, hospital_code: str | None) -> int | None:
        """The hospital id whose items ``actor`` may see (None: every hospital)."""
        if actor.can(Permission.RECONCILE_ANY):
            if hospital_code is None:
                return None
            found = identity_repo.hospital_by_code(session, hospital_code)
            if found is None:
                raise NotFoundError(f"no hospital {hospital_code!r}")
            return int(found.id)
        own = self._own_hospital(session, actor)
        if own is None:
            self._deny(actor, "not-permitted")
        if hospital_code is not None and hospital_code != actor.hospital_code:
            self._deny(actor, "other-hospital")
        return own

    def _own_hospital(self, session: Any, actor: Actor) -> int | None:
        if not actor.can(Permission.RECONCILE):
            return None
        if actor.hospital_id is not None:
            return actor.hospital_id
        if actor.hospital_code:
            found = identity_repo.hospital_by_code(session, actor.hospital_code)
            return int(found.id) if found is not None else None
        return None

    def _visible(self, session: Any, item_id: int, actor: Actor) -> Any:
        row = repo.item(session, item_id)
        if actor.can(Permission.RECONCILE_ANY):
            if row is None:
                raise NotFoundError(f"no reconciliation item {item_id}")
            return row
        own = self._own_hospital(session, actor)
        if own is None or row is None or row.hospital_id != own:
            # Absent and another hospital's look the same (no probing of ids).
            self._deny(actor, "not-permitted" if own is None else "not-yours",
                       item=item_id)
        return row

    def _deny(self, actor: Actor, reason: str, **detail: Any) -> Any:
        if self._audit is not None:
            self._audit.write([AuditEntry(actor, "reconcile", "denied", reason=reason,
                                          detail=detail)])
        raise NotAuthorizedError("the reconciliation queue shows a hospital its own held "
                                 "objects only (and every hospital's to administrators)")

    def _record_read(self, actor: Actor, action: str, uid: str,
                     detail: dict[str, Any]) -> None:
        if self._audit is not None:
            self._audit.write([AuditEntry(actor, action, "success", resource_type="instance",
                                          resource_uid=uid, detail=detail)])

    def _local_id_of(self, session: Any, national_id: str, hospital_id: int
                     ) -> tuple[str, str]:
        if self._protector is None:
            raise InvalidInputError("the patient index is not configured here; give the "
                                    "hospital's local patient_id")
        nid = parse_national_id(national_id)
        resident = identity_repo.resident_by_national_id(
            session, self._protector.lookup_hash(NATIONAL_ID, nid.number))
        for _ in range(16):  # follow merges to the surviving resident
            if resident is None or resident.merged_into is None:
                break
            resident = identity_repo.resident_by_id(session, resident.merged_into)
        patient_fk = (identity_repo.linked_patient_of(session, resident.id, hospital_id)
                      if resident is not None else None)
        patient = identity_repo.patient_by_fk(session, patient_fk) if patient_fk else None
        if patient is None:
            raise InvalidInputError("the patient index links no record of this hospital to "
                                    "that national ID; give the hospital's local patient_id")
        return patient.patient_id, patient.issuer_of_patient_id

    def _reingest(self, row: Any, changes: dict[str, str]) -> StoredInstance:
        """Write the held object with ``changes`` applied and ingest it as its hospital's."""
        fd, name = tempfile.mkstemp(prefix="reconcile-", suffix=".dcm", dir=self._work_dir)
        os.close(fd)
        target = Path(name)
        try:
            with self._blobs.open(row.blob_key) as fh:
                ds = dcmread(fh, force=True)
            for keyword, value in changes.items():
                setattr(ds, keyword, value)
            if "SOPInstanceUID" in changes and getattr(ds, "file_meta", None) is not None:
                ds.file_meta.MediaStorageSOPInstanceUID = UID(changes["SOPInstanceUID"])
            ds.save_as(target, enforce_file_format=True)
            sender = Sender(hospital_code=row.hospital_code, hospital_name=row.hospital_name,
                            door="reconcile")
            result = self._ingest.ingest_files([IngestItem(target, move=True)],
                                               sender=sender)[0]
        finally:
            target.unlink(missing_ok=True)
        if isinstance(result, CloudfilmError):
            raise result
        return result

    def _close(self, row: Any, actor: Actor, state: str, result: dict[str, Any]) -> HeldItem:
        now = datetime.now(UTC)
        with self._db.write() as session:
            closed = repo.resolve(session, row.id, state=state, by=actor.subject,
                                  result_json=orjson.dumps(result).decode(), now=now)
            if closed and self._audit is not None:
                self._audit.record(session, actor=actor, action="reconcile.settle",
                                   outcome="success", resource_type="instance",
                                   resource_uid=row.sop_instance_uid, reason=state,
                                   detail={"item": row.id, **{k: v for k, v in result.items()
                                                             if k != "by"}})
            fresh = repo.item(session, row.id)
        if not closed and fresh is not None and fresh.state != state:
            raise InvalidInputError(f"item {row.id} was settled meanwhile as {fresh.state}")
        return _view(fresh if fresh is not None else row)


def _require_open(row: Any, reasons: str | tuple[str, ...], action: str) -> None:
    if row.state != "open":
        raise InvalidInputError(f"item {row.id} is settled already ({row.state})")
    allowed = (reasons,) if isinstance(reasons, str) else reasons
    if row.reason not in allowed:
        raise InvalidInputError(f"{action!r} settles items held for {' or '.join(allowed)}; "
                                f"item {row.id} is held for {row.reason}")


def _lo(value: str, name: str) -> str:
    value = value.strip()
    if len(value) > _MAX_LO or any(ord(c) < 32 or c == "\\" for c in value):
        raise InvalidInputError(f"{name} must be at most 64 characters, without backslash or "
                                "control characters")
    return value


def _view(row: Any) -> HeldItem:
    return HeldItem(
        id=int(row.id), hospital_code=row.hospital_code, reason=row.reason, state=row.state,
        sop_class_uid=row.sop_class_uid, sop_instance_uid=row.sop_instance_uid,
        study_instance_uid=row.study_instance_uid,
        series_instance_uid=row.series_instance_uid, size_bytes=int(row.size_bytes),
        door=row.door, received_at=row.received_at, summary=orjson.loads(row.summary_json),
        result=orjson.loads(row.result_json or "{}"), resolved_at=row.resolved_at,
        resolved_by=row.resolved_by)
