"""The one ingest pipeline. Every entry door (STOW-RS, C-STORE, folder import) calls it.

Order of work, so that a success is only ever reported for a durable, indexed object:

1. parse the header (pixels are never decoded) and validate what the archive needs;
2. hash the bytes; if the SOP Instance UID is known with the same hash (current or a
   superseded version), it is a resend: answer success without storing anything;
3. write the blob (content-addressed key; fsynced or acknowledged by the object store);
4. index patient, study, series and instance in ONE transaction, then commit;
5. return; the door answers its peer only now.

A crash between 3 and 4 leaves at most an unreferenced blob, which ``cloudfilm storage
sweep`` removes; a failed transaction deletes the blob it wrote unless something else
references the same content.

Rule for a *different* object under a known SOP Instance UID: when it comes from the same
hospital for the same study and series, it replaces the current version and the previous
one is kept (row in ``instance_version``, blob untouched), because hospitals resend to
correct headers. Otherwise it is refused with :class:`InstanceConflictError`.

Objects a hospital could not otherwise archive are *held* (outcome ``"held"``, a success
with a warning): without PatientID, or under a Study Instance UID (or SOP Instance UID)
another hospital holds. They are stored (blob durable, a ``reconciliation_item`` row in the
same transaction) but enter no patient, study or series until settled
(services/archive/reconcile.py); a resend of the same bytes adds nothing.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import orjson
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID
from sqlalchemy.exc import IntegrityError

from cloudfilm.infrastructure.db import archive_repository as repo
from cloudfilm.infrastructure.db import identity_repository, reconcile_repository
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError
from cloudfilm.infrastructure.dicom import charset, json_model
from cloudfilm.infrastructure.dicom.dates import exam_time
from cloudfilm.infrastructure.dicom.part10 import (
    ParsedHeader,
    Part10Error,
    read_header,
    write_part10,
)
from cloudfilm.infrastructure.dicom.uids import is_valid_uid
from cloudfilm.infrastructure.reports import dicom as dicom_reports
from cloudfilm.infrastructure.reports.document import ReportDocument, ReportFormatError
from cloudfilm.infrastructure.storage.base import BlobStore, BlobStoreError, blob_key
from cloudfilm.services.access.audit import AuditEntry, AuditService
from cloudfilm.services.archive import ingest_metrics
from cloudfilm.services.archive.group_commit import GroupCommit
from cloudfilm.services.errors import (
    CloudfilmError,
    InstanceConflictError,
    InvalidInstanceError,
    NotAuthorizedError,
    ResourceUnavailableError,
    UnsupportedSOPClassError,
)
from cloudfilm.services.identity import mpi, names
from cloudfilm.services.identity.protection import IdProtector
from cloudfilm.services.kernel.actor import Actor, Permission
from cloudfilm.services.kernel.sender import Sender as Sender  # re-exported for the doors
from cloudfilm.services.reports.intake import ReportIntake, ReportObject

logger = logging.getLogger(__name__)

Outcome = Literal["stored", "duplicate", "replaced", "held"]
# Outcomes that put an object into the index (and so into jobs, reports, linking).
_INDEXED: frozenset[str] = frozenset({"stored", "replaced"})
HELD_REASONS = {
    "no-patient-id": "held for reconciliation: PatientID is empty",
    "study-clash": "held for reconciliation: another hospital holds this study UID",
    "series-clash": "held for reconciliation: another hospital holds this series UID",
}

# Where a stored JSON bulk data URI starts; replaced by the request's base URL on the way out.
BULK_BASE = "{{BASE}}"

_STUDY_GROUP_TAGS = frozenset(
    {
        "00080005", "00080020", "00080030", "00080050", "00080051", "00080080", "00080090",
        "00081030", "00081032", "00081060", "00080201", "0020000D", "00200010",
        "00101010", "00101020", "00101030", "00102160", "00104000",
    }
)  # fmt: skip
_SERIES_TAGS = frozenset(
    {
        "00080005", "00080021", "00080031", "00080060", "00080070", "00081010", "0008103E",
        "00081090", "00180015", "00185100", "0020000E", "00200011", "00200060", "00400244",
        "00400245", "00400275", "00080201",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class StoredInstance:
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    outcome: Outcome
    size: int
    sha256: str
    warnings: tuple[str, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class _Header:
    parsed: ParsedHeader
    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    patient: dict[str, Any]
    warnings: list[str]
    # Why the object goes to the reconciliation queue instead of the index ("" = it does not).
    held_reason: str = ""


@dataclass(frozen=True, slots=True)
class IngestItem:
    """One file for :meth:`IngestService.ingest_files`."""

    path: Path
    move: bool = False
    expected_study_uid: str | None = None
    # SHA-256 the door computed while writing the file (saves reading it again).
    sha256: str | None = None


@dataclass(slots=True)
class _Prepared:
    index: int
    item: IngestItem
    header: _Header
    sha256: str
    key: str
    metadata_json: str
    study_json: str
    series_json: str
    # The report an SR or Encapsulated PDF object carries (services/reports).
    report: ReportDocument | None = None
    # Why the index transaction held it for reconciliation (a UID clash found there).
    held: str = ""


IngestResult = StoredInstance | CloudfilmError


class _BlobWriteFailedError(Exception):
    """Some blobs of a batch could not be written; the batch's transaction must not commit."""

    def __init__(self, entries: list[_Prepared]) -> None:
        super().__init__(f"{len(entries)} blob(s) could not be written")
        self.entries = entries

_ID_SOURCE_TTL = 30.0


def allowed_sender(actor: Actor, *, door: str) -> Sender | None:
    """:meth:`IngestService.sender_for` without the database: None when ``actor`` may not
    upload (a door calls ``sender_for`` then, which records the refusal)."""
    if actor.can(Permission.STORE_FOR_ANY_HOSPITAL):
        return Sender(door=door, remote=actor.address)
    if actor.can(Permission.STORE) and actor.hospital_code:
        return Sender(hospital_code=actor.hospital_code,
                      hospital_name=actor.display or actor.hospital_code, door=door,
                      remote=actor.address)
    return None


class IngestService:
    def __init__(self, db: Database, blobs: BlobStore, work_dir: Path, *,
                 protector: IdProtector | None = None,
                 audit: AuditService | None = None,
                 zone: tzinfo = ZoneInfo("Asia/Shanghai"),
                 reports: ReportIntake | None = None,
                 enqueue: Callable[[Any, list[str]], None] | None = None) -> None:
        self._db = db
        # Background jobs for the objects stored (services/storage outbox), written in the
        # same transaction so that a crash after the commit loses none.
        self._enqueue = enqueue
        # The province's time zone: StudyDate/StudyTime carry none (exam_at).
        self._zone = zone
        # Reports (SR, Encapsulated PDF) are recorded, and held reports linked, in the
        # same transaction as the objects (services/reports).
        self._reports = reports
        self._audit = audit
        # With a protector, patients are linked to residents at ingest (services/identity).
        self._protector = protector
        # hospital id -> (national ID source settings, monotonic expiry): read at most every
        # _ID_SOURCE_TTL seconds, so a registry change reaches running ingest quickly.
        self._id_sources: dict[int, tuple[tuple[str, str, str], float]] = {}
        self._blobs = blobs
        # Scratch space on the blob store's filesystem (rewritten raw data sets).
        self._work_dir = work_dir
        self._hospitals: dict[str, int] = {}
        self._writers = ThreadPoolExecutor(max_workers=8, thread_name_prefix="blob-writer")
        # Concurrent single-object ingests share batches (group_commit.py).
        self._group = GroupCommit(self.ingest_files)

    def sender_for(self, actor: Actor, *, door: str) -> Sender:
        """Who an upload by ``actor`` is recorded for: the local operator stores as
        ``LOCAL``, a hospital system as itself (never a hospital named in the request).

        Raises
        ------
        NotAuthorizedError
            Doctors, residents and administrators do not upload (recorded in the audit
            trail).
        """
        sender = allowed_sender(actor, door=door)
        if sender is not None:
            return sender
        if self._audit is not None:
            self._audit.write([AuditEntry(actor, "store", "denied", reason="not-a-sender",
                                          detail={"door": door})])
        raise NotAuthorizedError("only hospital systems (with their credential) and the local "
                                 "operator can store objects")

    def ingest_file(
        self,
        path: Path,
        *,
        sender: Sender,
        move: bool = False,
        expected_study_uid: str | None = None,
    ) -> StoredInstance:
        """Store one DICOM file and index it; return only once both are durable.

        Parameters
        ----------
        path
            A Part 10 file (or a raw data set with a recognisable first element).
        sender
            The hospital the object is recorded for (decided by the door's authentication).
        move
            The file is a temporary copy the store may consume (renamed into place).
        expected_study_uid
            STOW-RS to ``/studies/{study}``: objects of another study are refused.

        Raises
        ------
        InvalidInstanceError, UnsupportedSOPClassError, InstanceConflictError,
        ResourceUnavailableError

        References
        ----------
        PS3.18 10.5 (STOW-RS), PS3.4 B.2.3 (C-STORE statuses).
        """
        item = IngestItem(path, move, expected_study_uid)
        result = self.ingest_files([item], sender=sender)[0]
        if isinstance(result, CloudfilmError):
            raise result
        return result

    def ingest_file_grouped(
        self,
        path: Path,
        *,
        sender: Sender,
        move: bool = False,
        expected_study_uid: str | None = None,
        sha256: str | None = None,
    ) -> StoredInstance:
        """:meth:`ingest_file` for doors that receive one object per call from many
        threads at once (C-STORE associations, single-instance STOW-RS): objects arriving
        together are indexed in one transaction with one commit (group_commit.py). Same
        arguments, result and exceptions; it returns only once this object is durable and
        indexed. ``sha256``: the file's SHA-256 when the door computed it while writing
        the file (else it is read and hashed here)."""
        result = self.ingest_grouped(IngestItem(path, move, expected_study_uid, sha256),
                                     sender=sender)
        if isinstance(result, CloudfilmError):
            raise result
        return result

    def ingest_grouped(self, item: IngestItem, *, sender: Sender) -> IngestResult:
        """One item through the group commit: the result ``ingest_files([item])`` would
        give (a StoredInstance or a CloudfilmError), durable and indexed when it returns."""
        return self._group.ingest(item, sender)  # type: ignore[no-any-return]

    def ingest_files(self, items: list[IngestItem], *, sender: Sender) -> list[IngestResult]:
        """Store and index several files; one result (or error) per file, in order.

        The batch is indexed in one transaction (one commit, one fsync of the index for up
        to hundreds of objects); if that transaction fails, each object is indexed alone so
        that one bad object cannot fail the others. Every result is final when this returns.
        """
        started = time.perf_counter()
        results: list[IngestResult | None] = [None] * len(items)
        prepared: list[_Prepared] = []
        later: list[int] = []
        seen: set[str] = set()
        for index, item in enumerate(items):
            try:
                entry = _prepare(index, item, self._work_dir)
            except CloudfilmError as exc:
                results[index] = exc
                continue
            if entry.header.sop_instance_uid in seen:
                later.append(index)  # the same SOP Instance twice in one batch: after it
                continue
            seen.add(entry.header.sop_instance_uid)
            prepared.append(entry)

        known: set[tuple[str, str]] = set()
        hospital_id = self._hospitals.get(sender.hospital_code)
        if len(prepared) > 1 and hospital_id is not None:
            # Batches are often whole resends: skip their blob writes. A single object goes
            # straight on: its content-addressed blob rewrite is harmless, and the index
            # transaction recognises the resend anyway (one transaction instead of two).
            # A Core connection: an ORM session's set-up and tear-down cost more than the
            # look-up itself (py-spy, C-STORE group commits over 4 associations).
            with self._db.reading() as conn:
                # Only this hospital's own objects: another hospital's identical copy is
                # a clash to hold, not a resend.
                known = repo.known_versions(
                    conn, [(p.header.sop_instance_uid, p.sha256) for p in prepared],
                    hospital_id=hospital_id)
        new: list[_Prepared] = []
        for entry in prepared:
            if (entry.header.sop_instance_uid, entry.sha256) in known:
                results[entry.index] = _result(entry, "duplicate")
            else:
                new.append(entry)
        # Blob writes run while the index statements run; the transaction commits only once
        # every blob of the batch is durable (see _index_batch), so the order "blob durable,
        # then index committed" holds while the two waits overlap.
        writes = {entry.index: self._writers.submit(self._put_blob, entry) for entry in new}
        outcomes = self._index(new, sender, writes)
        for entry, outcome in zip(new, outcomes, strict=True):
            write_error = writes[entry.index].result()
            if write_error is not None:
                results[entry.index] = write_error
            elif isinstance(outcome, CloudfilmError):
                self._forget_blob(entry.key)
                results[entry.index] = outcome
            else:
                results[entry.index] = _result(entry, outcome)
        if later:
            again = self.ingest_files([items[i] for i in later], sender=sender)
            for index, result in zip(later, again, strict=True):
                results[index] = result
        final = [r for r in results if r is not None]
        ingest_metrics.observe(sender.door, final, time.perf_counter() - started)
        logger.info(
            "cloudfilm.archive.instances_stored",
            extra={
                "count": len(items),
                "stored": sum(isinstance(r, StoredInstance) for r in final),
                "hospital": sender.hospital_code,
                "door": sender.door,
                "ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
        return final

    def _put_blob(self, entry: _Prepared) -> CloudfilmError | None:
        """Write one blob (in the writer pool: each waits on its own fsync or S3 PUT, and the
        filesystem journal commits concurrent fsyncs together)."""
        try:
            self._blobs.put_file(entry.key, entry.item.path, move=entry.item.move)
        except BlobStoreError as exc:
            return ResourceUnavailableError(f"cannot store the object: {exc}")
        return None

    def _index(self, entries: list[_Prepared], sender: Sender,
               writes: dict[int, Future[CloudfilmError | None]]
               ) -> list[Outcome | CloudfilmError]:
        if not entries:
            return []

        def blobs_durable(batch: list[_Prepared]) -> None:
            failed = [e for e in batch if writes[e.index].result() is not None]
            if failed:
                raise _BlobWriteFailedError(failed)

        try:
            return list(self._index_batch(entries, sender, blobs_durable))
        except _BlobWriteFailedError as exc:
            # Index the others without them; the failed ones get their write error.
            failed = {e.index for e in exc.entries}
            rest = [e for e in entries if e.index not in failed]
            by_index = dict(zip((e.index for e in rest),
                                self._index(rest, sender, writes), strict=True))
            placeholder = ResourceUnavailableError("the object could not be stored")
            return [by_index.get(e.index, placeholder) for e in entries]
        except CloudfilmError as exc:
            if len(entries) == 1:
                return [exc]
        except IntegrityError:
            pass  # a concurrent ingest created a row first; settle it one object at a time
        return [self._index_one(entry, sender, blobs_durable) for entry in entries]

    def _index_one(self, entry: _Prepared, sender: Sender,
                   blobs_durable: Callable[[list[_Prepared]], None]
                   ) -> Outcome | CloudfilmError:
        for attempt in range(3):
            try:
                return self._index_batch([entry], sender, blobs_durable)[0]
            except _BlobWriteFailedError:
                return ResourceUnavailableError("the object could not be stored")
            except CloudfilmError as exc:
                return exc
            except IntegrityError:
                if attempt == 2:
                    return ResourceUnavailableError(
                        "the index kept changing under a concurrent ingest; send again"
                    )
        raise AssertionError("unreachable")

    def _index_batch(self, entries: list[_Prepared], sender: Sender,
                     blobs_durable: Callable[[list[_Prepared]], None]) -> list[Outcome]:
        try:
            with self._db.write() as session:
                hospital = self._hospital(session, sender)
                patients: dict[int, Dataset] = {}
                created: list[Any] = []
                held: list[tuple[_Prepared, str]] = []
                outcomes = _index_in(session, entries, hospital, self._zone, patients, created,
                                     door=sender.door, held_out=held)
                if held and self._audit is not None:
                    self._audit.record_many(session, [_held_entry(sender, e, r) for e, r in held])
                if self._enqueue is not None:
                    self._enqueue(session, [e.header.sop_instance_uid for e, o in
                                           zip(entries, outcomes, strict=True)
                                           if o in _INDEXED])
                if self._reports is not None:
                    self._reports.after_index(session, hospital_id=hospital, door=sender.door,
                                              entries=_report_entries(entries, outcomes),
                                              created_studies=created)
                if self._protector is not None:
                    # Same transaction, in a savepoint: a linking failure never fails the
                    # store (mpi.link_at_ingest); 0-1 statements per batch once linked.
                    source = self._id_source(session, hospital)
                    mpi.link_at_ingest(session, self._protector, hospital_id=hospital,
                                       id_source=source, patients=patients,
                                       audit=self._audit)
                # Commit (at the end of this block) only once the blobs are durable.
                blobs_durable(entries)
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        # Cached only once committed: a rolled-back insert must not leave a stale id.
        self._hospitals[sender.hospital_code] = hospital
        return outcomes

    def _hospital(self, session: Any, sender: Sender) -> int:
        cached = self._hospitals.get(sender.hospital_code)
        if cached is not None:
            return cached
        now = datetime.now(UTC)
        return repo.hospital_id(session, sender.hospital_code, name=sender.hospital_name, now=now)

    def _id_source(self, session: Any, hospital: int) -> tuple[str, str, str]:
        cached = self._id_sources.get(hospital)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        row = identity_repository.hospital_id_source(session, hospital)
        source = (row.national_id_source, row.national_id_issuer, row.national_id_tag) \
            if row is not None else ("none", "", "")
        self._id_sources[hospital] = (source, time.monotonic() + _ID_SOURCE_TTL)
        return source

    def _forget_blob(self, key: str) -> None:
        try:
            with self._db.read() as session:
                if repo.blob_is_referenced(session, key):
                    return
            self._blobs.delete(key)
        except Exception:  # the sweeper removes it later; the original error matters more
            logger.warning("cloudfilm.archive.blob_cleanup_failed", extra={"key": key})


def _prepare(index: int, item: IngestItem, work_dir: Path) -> _Prepared:
    """Everything that needs no database: parse, validate, hash, build the JSON documents."""
    header = _read_and_validate(item.path)
    if not header.parsed.is_part10:
        item = _as_part10(item, work_dir)
        header = _read_and_validate(item.path)
    if item.expected_study_uid is not None and header.study_uid != item.expected_study_uid:
        raise InvalidInstanceError(
            f"StudyInstanceUID {header.study_uid} does not match the study "
            f"{item.expected_study_uid} in the request URL",
            code="study-mismatch",
        )
    sha256 = item.sha256 or _sha256(item.path)
    full_json = json_model.dataset_to_json_dict(
        header.parsed.dataset,
        bulk_base=f"{BULK_BASE}/studies/{header.study_uid}/series/{header.series_uid}"
        f"/instances/{header.sop_instance_uid}",
        has_pixel_data=header.parsed.has_pixel_data,
    )
    full_json["00083002"] = {"vr": "UI", "Value": [header.parsed.transfer_syntax_uid]}
    report = None
    # A device-observed SR (an AI result, a CAD report) is an object of the study, never
    # a doctor's report (issue 19).
    if dicom_reports.is_report(header.sop_class_uid) \
            and not dicom_reports.is_device_observed(header.parsed.dataset):
        try:
            report = dicom_reports.read_dicom_report(header.parsed.dataset)
        except ReportFormatError as exc:
            raise InvalidInstanceError(f"the report cannot be read: {exc}",
                                       code="invalid-report") from exc
    return _Prepared(
        report=report,
        index=index,
        item=item,
        header=header,
        sha256=sha256,
        key=blob_key(sha256),
        metadata_json=orjson.dumps(full_json).decode(),
        study_json=_subset_json(full_json, _STUDY_GROUP_TAGS, group="0010"),
        series_json=_subset_json(full_json, _SERIES_TAGS),
    )


def _report_entries(entries: list[_Prepared], outcomes: list[Outcome]
                    ) -> list[ReportObject]:
    """The reports of the objects this batch stored or replaced (a resend adds nothing)."""
    return [ReportObject(e.report, new_object=outcome == "stored")
            for e, outcome in zip(entries, outcomes, strict=True)
            if e.report is not None and outcome in _INDEXED]


def _as_part10(item: IngestItem, work_dir: Path) -> IngestItem:
    fd, name = tempfile.mkstemp(prefix="part10-", suffix=".dcm", dir=work_dir)
    os.close(fd)
    target = Path(name)
    try:
        write_part10(item.path, target)
    except Part10Error as exc:
        target.unlink(missing_ok=True)
        raise InvalidInstanceError(str(exc)) from exc
    if item.move:
        item.path.unlink(missing_ok=True)
    return IngestItem(target, move=True, expected_study_uid=item.expected_study_uid)


def _index_in(session: Any, entries: list[_Prepared], hospital: int, zone: tzinfo,
              patients_out: dict[int, Dataset] | None = None,
              created_out: list[Any] | None = None, *, door: str = "",
              held_out: list[tuple[_Prepared, str]] | None = None) -> list[Outcome]:
    now = datetime.now(UTC)
    sops = [e.header.sop_instance_uid for e in entries]
    # Everything the batch reads before writing, in one statement (round trips were most
    # of a single object's index CPU on PostgreSQL; profiled).
    looked = repo.look_up(
        session, sops=sops, studies={e.header.study_uid for e in entries},
        series={e.header.series_uid for e in entries}, hospital_id=hospital,
        patients={(e.header.patient["patient_id"], e.header.patient["issuer_of_patient_id"])
                  for e in entries if e.header.patient["patient_id"]})
    current: dict[str, Any] = dict(looked.instances)
    known = {(uid, row.sha256) for uid, row in current.items()}
    changed = [(e.header.sop_instance_uid, e.sha256) for e in entries
               if e.header.sop_instance_uid in current
               and (e.header.sop_instance_uid, e.sha256) not in known]
    if changed:  # a resend of a superseded version is a duplicate too
        known |= repo.known_versions(session, changed)
    studies: dict[str, Any] = dict(looked.studies)
    series: dict[str, Any] = dict(looked.series)
    # Series UIDs held under another hospital's study (uid -> that study's id).
    foreign = {uid: int(row.study_fk) for uid, row in series.items()
               if row.hospital_id != hospital}
    patients: dict[tuple[str, str], int] = {}
    created_series: set[str] = set()
    new_rows: list[dict[str, Any]] = []
    outcomes: list[Outcome] = []
    for entry in entries:
        header, ds = entry.header, entry.header.parsed.dataset
        reason, clash_fk = _held_reason(entry, studies.get(header.study_uid),
                                        current.get(header.sop_instance_uid), hospital,
                                        foreign.get(header.series_uid))
        if reason:
            entry.held = reason
            # Before the resend check: another hospital's identical copy is held too.
            if _hold(session, entry, hospital, reason, clash_fk, door, now) and \
                    held_out is not None:
                held_out.append((entry, reason))
            outcomes.append("held")
            continue
        if (header.sop_instance_uid, entry.sha256) in known:
            outcomes.append("duplicate")
            continue
        pkey = (header.patient["patient_id"], header.patient["issuer_of_patient_id"])
        if pkey not in patients:
            patients[pkey] = repo.upsert_patient(
                session, hospital_id=hospital, values={**header.patient, "updated_at": now},
                found=looked.patients.get(pkey))
        patient_fk = patients[pkey]
        if patients_out is not None:
            patients_out.setdefault(patient_fk, ds)
        study = studies.get(header.study_uid)
        if study is None:
            study = repo.create_study(
                session,
                _study_values(ds, header, entry.study_json, patient_fk, hospital, now, zone),
            )
            studies[header.study_uid] = study
            if created_out is not None:
                created_out.append(study)
        if study.patient_fk != patient_fk:
            raise InstanceConflictError(
                f"study {header.study_uid} is already held for another patient; "
                "correct the PatientID or the StudyInstanceUID and send again",
                code="study-patient-conflict",
            )
        found = series.get(header.series_uid)
        new_series = False
        if found is None:
            found, new_series = repo.create_series(
                session, _series_values(ds, header, entry.series_json, study.id, now)
            )
            series[header.series_uid] = found
            if new_series:
                created_series.add(header.series_uid)
        elif found.study_fk != study.id:
            raise InstanceConflictError(
                f"series {header.series_uid} already belongs to another study",
                code="series-study-conflict",
            )
        values = _instance_values(entry, ds, found.id, study.id, hospital, now)
        values["_new_series"] = new_series
        existing = current.get(header.sop_instance_uid)
        if existing is None:
            new_rows.append(values)
            outcomes.append("stored")
            continue
        if existing.series_fk != found.id or existing.hospital_id != hospital:
            raise InstanceConflictError(
                f"SOP Instance {header.sop_instance_uid} is already stored with different "
                "content from another sender or in another series; a SOP Instance UID must "
                "be unique",
            )
        repo.replace_instance(session, existing, values, now=now)
        outcomes.append("replaced")
    repo.add_instances(session, new_rows)
    return outcomes


def _held_reason(entry: _Prepared, study: Any, existing: Any, hospital: int,
                 foreign_series_study: int | None = None) -> tuple[str, int | None]:
    """Why this object must wait in the reconciliation queue ("" when it need not), and
    the other hospital's study it clashes with."""
    if entry.header.held_reason:
        return entry.header.held_reason, None
    if study is not None and study.hospital_id != hospital:
        return "study-clash", int(study.id)
    if existing is not None and existing.hospital_id != hospital:
        return "study-clash", int(existing.study_fk)
    if foreign_series_study is not None:  # a new study UID over another hospital's series
        return "series-clash", foreign_series_study
    return "", None


def _hold(session: Any, entry: _Prepared, hospital: int, reason: str, clash_fk: int | None,
          door: str, now: datetime) -> bool:
    """Queue one object for reconciliation (its blob is written like any other); False when
    this hospital sent these bytes before (a resend changes nothing)."""
    header, ds = entry.header, entry.header.parsed.dataset
    warnings: list[str] = []
    summary = {
        "patient_name": header.patient["patient_name"],
        "patient_id": header.patient["patient_id"],
        "birth_date": header.patient["birth_date"], "sex": header.patient["sex"],
        "study_date": _s(ds, "StudyDate", 8), "modality": _s(ds, "Modality", 16),
        "accession_number": _s(ds, "AccessionNumber", 64),
        "study_description": _decoded_text(ds, 0x00081030, warnings)[:256],
    }
    return reconcile_repository.hold(session, {
        "hospital_id": hospital, "reason": reason, "state": "open",
        "sop_class_uid": header.sop_class_uid, "sop_instance_uid": header.sop_instance_uid,
        "study_instance_uid": header.study_uid, "series_instance_uid": header.series_uid,
        "clash_study_fk": clash_fk, "blob_key": entry.key, "sha256": entry.sha256,
        "size_bytes": header.parsed.size,
        "transfer_syntax_uid": header.parsed.transfer_syntax_uid, "door": door[:16],
        "summary_json": orjson.dumps(summary).decode(), "received_at": now,
        "resolved_at": None, "resolved_by": "", "result_json": "{}",
    })


def _held_entry(sender: Sender, entry: _Prepared, reason: str) -> AuditEntry:
    actor = Actor(kind="hospital", subject=sender.hospital_code,
                  hospital_code=sender.hospital_code, display=sender.hospital_name,
                  address=sender.remote)
    return AuditEntry(actor, "archive.held", "success", resource_type="instance",
                      resource_uid=entry.header.sop_instance_uid, reason=reason,
                      detail={"door": sender.door, "study": entry.header.study_uid})


def _instance_values(
    entry: _Prepared, ds: Dataset, series_fk: int, study_fk: int, hospital: int, now: datetime
) -> dict[str, Any]:
    header = entry.header
    return {
        "sop_instance_uid": header.sop_instance_uid,
        "series_fk": series_fk,
        "study_fk": study_fk,
        "hospital_id": hospital,
        "sop_class_uid": header.sop_class_uid,
        "instance_number": _int(_get(ds, "InstanceNumber")),
        "number_of_frames": _int(_get(ds, "NumberOfFrames")),
        "rows": _int(_get(ds, "Rows")),
        "columns": _int(_get(ds, "Columns")),
        "transfer_syntax_uid": header.parsed.transfer_syntax_uid,
        "blob_key": entry.key,
        "size_bytes": header.parsed.size,
        "sha256": entry.sha256,
        "received_at": now,
        "warnings": "\n".join(header.warnings),
        "original_transfer_syntax_uid": "",
        "metadata_json": entry.metadata_json,
    }


def _read_and_validate(path: Path) -> _Header:
    try:
        parsed = read_header(path)
    except Part10Error as exc:
        raise InvalidInstanceError(str(exc)) from exc
    try:
        return _validated(parsed)
    except _CORRUPT_ELEMENT as exc:
        # pydicom converts elements lazily and raises these on corrupt ones (found by
        # tests/integration/fuzz): the object is invalid, not the archive broken.
        raise InvalidInstanceError(f"the header cannot be read: {exc}") from exc


# What pydicom raises converting a corrupt element (unknown VR, bad length, bad number).
_CORRUPT_ELEMENT = (NotImplementedError, ValueError, TypeError, KeyError, OverflowError,
                    UnicodeError)


def _validated(parsed: ParsedHeader) -> _Header:
    ds = parsed.dataset
    uids = {}
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = str(_value(ds, keyword) or "").strip()
        if not value:
            raise InvalidInstanceError(f"{keyword} is missing; the archive needs it to file the "
                                       "object", code="missing-uid")
        if not is_valid_uid(value):
            raise InvalidInstanceError(f"{keyword} {value[:80]!r} is not a valid UID (PS3.5 9.1)",
                                       code="invalid-uid")
        uids[keyword] = value
    _check_storage_class(uids["SOPClassUID"])
    warnings: list[str] = []
    patient = _patient_values(ds, warnings)
    held = "no-patient-id" if not patient["patient_id"] else ""
    return _Header(
        parsed=parsed,
        sop_class_uid=uids["SOPClassUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        patient=patient,
        warnings=warnings,
        held_reason=held,
    )


@lru_cache(maxsize=512)
def _check_storage_class(uid: str) -> None:
    name = UID(uid).name
    if name != uid and "Storage" not in name and "Key Object" not in name:
        raise UnsupportedSOPClassError(
            f"SOP Class {uid} ({name}) is not a storage SOP class; the archive stores "
            "composite objects only"
        )


def _patient_values(ds: Dataset, warnings: list[str]) -> dict[str, Any]:
    # An empty PatientID is not refused: the object is held for reconciliation (the
    # caller sees patient_id == ""), as Orthanc and dcm4chee store such objects too.
    patient_id = str(_value(ds, "PatientID") or "").strip()
    if len(patient_id) > 64 or any(ord(c) < 32 or c == "\\" for c in patient_id):
        raise InvalidInstanceError(f"PatientID {patient_id[:80]!r} is not a valid LO value "
                                   "(at most 64 characters, no backslash or control characters)",
                                   code="invalid-patient-id")
    name = _decoded_text(ds, 0x00100010, warnings)
    return {
        "patient_id": patient_id,
        "issuer_of_patient_id": _s(ds, "IssuerOfPatientID", 64),
        "patient_name": name[:324],
        # Padded with spaces so that whole components match as LIKE '% WORD %'.
        # Characters and pinyin (services/identity/names.py): `王小东` or `wang` both match.
        "name_search": f" {names.search_keys(name)[:396]} ",
        "birth_date": _s(ds, "PatientBirthDate", 8),
        "sex": _s(ds, "PatientSex", 16),
    }


def _decoded_text(ds: Dataset, tag: int, warnings: list[str]) -> str:
    """Decode a text element ourselves from its raw bytes, recording a warning when unsure."""
    elem = ds.get_item(tag)
    if elem is None or elem.value is None:
        return ""
    raw = elem.value
    try:
        if not isinstance(raw, bytes):
            return str(ds[tag].value or "").replace("\x00", "")
        specific = ds.get("SpecificCharacterSet")
    except _CORRUPT_ELEMENT as exc:
        warnings.append(f"({tag >> 16:04X},{tag & 0xFFFF:04X}): not readable: {exc}")
        return ""
    vr = "PN" if tag in (0x00100010, 0x00080090) else None
    text, problems = charset.decode_text(raw, specific, vr=vr)
    warnings.extend(f"({tag >> 16:04X},{tag & 0xFFFF:04X}): {p}" for p in problems)
    # Some senders pad with NUL; PostgreSQL refuses NUL in text (a 500 found by the fuzz
    # tests), and no DICOM text VR allows it.
    return text.replace("\x00", "").strip()


def _study_values(
    ds: Dataset, header: _Header, attributes_json: str, patient_fk: int, hospital: int,
    now: datetime, zone: tzinfo,
) -> dict[str, Any]:
    warnings: list[str] = []
    return {
        "exam_at": exam_time(_s(ds, "StudyDate", 8), _s(ds, "StudyTime", 16), zone),
        "study_instance_uid": header.study_uid,
        "patient_fk": patient_fk,
        "hospital_id": hospital,
        "study_date": _s(ds, "StudyDate", 8),
        "study_time": _s(ds, "StudyTime", 16),
        "accession_number": _s(ds, "AccessionNumber", 64),
        "referring_physician_name": _decoded_text(ds, 0x00080090, warnings)[:324],
        "study_description": _decoded_text(ds, 0x00081030, warnings)[:256],
        "study_id": _s(ds, "StudyID", 16),
        "institution_name": _decoded_text(ds, 0x00080080, warnings)[:256],
        "received_at": now,
        "updated_at": now,
        "attributes_json": attributes_json,
    }


def _series_values(
    ds: Dataset, header: _Header, attributes_json: str, study_fk: int, now: datetime
) -> dict[str, Any]:
    warnings: list[str] = []
    return {
        "series_instance_uid": header.series_uid,
        "study_fk": study_fk,
        "modality": _s(ds, "Modality", 16),
        "series_number": _int(_get(ds, "SeriesNumber")),
        "series_description": _decoded_text(ds, 0x0008103E, warnings)[:256],
        "body_part_examined": _s(ds, "BodyPartExamined", 64),
        "performed_procedure_step_start_date": _s(ds, "PerformedProcedureStepStartDate", 8),
        "performed_procedure_step_start_time": _s(ds, "PerformedProcedureStepStartTime", 16),
        "received_at": now,
        "updated_at": now,
        "attributes_json": attributes_json,
    }


def _subset_json(full: dict[str, Any], tags: frozenset[str], group: str | None = None) -> str:
    subset = {k: v for k, v in full.items() if k in tags or (group and k.startswith(group))}
    return orjson.dumps(subset).decode()


def _s(ds: Dataset, keyword: str, limit: int) -> str:
    try:
        value = _value(ds, keyword)
    except Exception:
        return ""
    return str(value or "").replace("\x00", "").strip()[:limit]


def _get(ds: Dataset, keyword: str) -> Any:
    """``ds.get(keyword)``, None when the element is corrupt (pydicom converts lazily)."""
    value = _raw_value(ds, keyword)
    if value is not _CONVERT:
        return value
    try:
        return ds.get(keyword)
    except _CORRUPT_ELEMENT:
        return None


def _value(ds: Dataset, keyword: str) -> Any:
    """``ds.get(keyword, "")``, read from the raw bytes where :func:`_raw_value` can."""
    value = _raw_value(ds, keyword)
    return ds.get(keyword, "") if value is _CONVERT else value


# "Ask pydicom": the raw value is not one _raw_value reads the way pydicom would.
_CONVERT: Any = object()
_ESC = 0x1B


@lru_cache(maxsize=256)
def _tag(keyword: str) -> BaseTag:
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return BaseTag(tag)


def _raw_value(ds: Dataset, keyword: str) -> Any:
    """The value pydicom would give for a single-valued ASCII string or a US element, read
    from the raw bytes without building a DataElement (about a third of the validation's
    CPU was pydicom converting the ~15 elements ingest reads; profiled); ``_CONVERT`` for
    anything else (multi-valued, non-ASCII or ISO 2022 text, implicit VR, converted)."""
    elem = ds._dict.get(_tag(keyword))
    if elem is None:
        return None
    if type(elem) is not RawDataElement or elem.value is None or elem.is_buffered:
        return _CONVERT
    value = elem.value
    vr = elem.VR
    if vr == "US":
        if len(value) != 2:
            return _CONVERT
        return int.from_bytes(value, "little" if elem.is_little_endian else "big")
    if vr not in _RAW_STRING_VRS or not value.isascii() or 0x5C in value or _ESC in value:
        return _CONVERT  # 0x5C: a backslash separates values
    text = value.decode("ascii").rstrip(" \x00")
    if vr == "IS":
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            return _CONVERT
    return text


# Explicit VRs whose single ASCII value pydicom gives as the text less trailing spaces
# and NULs (IS: as the integer).
_RAW_STRING_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "IS", "LO", "SH", "TM", "UI"})


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _result(entry: _Prepared, outcome: Outcome) -> StoredInstance:
    header = entry.header
    warnings = tuple(header.warnings)
    if outcome == "held":
        reason = entry.held or header.held_reason or "study-clash"
        warnings = (HELD_REASONS[reason], *warnings)
    return StoredInstance(
        sop_class_uid=header.sop_class_uid,
        sop_instance_uid=header.sop_instance_uid,
        study_instance_uid=header.study_uid,
        series_instance_uid=header.series_uid,
        outcome=outcome,
        size=header.parsed.size,
        sha256=entry.sha256,
        warnings=warnings,
    )
