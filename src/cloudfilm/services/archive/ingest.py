"""The one ingest pipeline. Every entry door (STOW-RS, C-STORE, folder import) calls it.

Order of work, so that a success is only ever reported for a durable, indexed object:

1. parse the header (pixels are never decoded) and validate what the archive needs;
2. hash the bytes; if the SOP Instance UID is known with the same hash, it is a resend:
   answer success without storing anything;
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
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import orjson
from pydicom.dataset import Dataset
from pydicom.uid import UID
from sqlalchemy.exc import IntegrityError

from cloudfilm.infrastructure.db import archive_repository as repo
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError
from cloudfilm.infrastructure.dicom import charset, json_model
from cloudfilm.infrastructure.dicom.part10 import ParsedHeader, Part10Error, read_header
from cloudfilm.infrastructure.dicom.uids import is_valid_uid
from cloudfilm.infrastructure.storage.base import BlobStore, BlobStoreError, blob_key
from cloudfilm.services.errors import (
    InstanceConflictError,
    InvalidInstanceError,
    ResourceUnavailableError,
    UnsupportedSOPClassError,
)

logger = logging.getLogger(__name__)

Outcome = Literal["stored", "duplicate", "replaced"]

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
class Sender:
    """Who delivered an object: the hospital it is recorded for, and through which door."""

    hospital_code: str = "LOCAL"
    hospital_name: str = "Local uploads"
    door: str = "import"
    remote: str = ""


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


class IngestService:
    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self._db = db
        self._blobs = blobs

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
        started = time.perf_counter()
        header = _read_and_validate(path)
        if expected_study_uid is not None and header.study_uid != expected_study_uid:
            raise InvalidInstanceError(
                f"StudyInstanceUID {header.study_uid} does not match the study "
                f"{expected_study_uid} in the request URL",
                code="study-mismatch",
            )
        sha256 = _sha256(path)
        size = header.parsed.size
        key = blob_key(sha256)

        with self._db.read() as session:
            current = repo.instance_by_uid(session, header.sop_instance_uid)
            if current is not None and current.sha256 == sha256:
                return _result(header, "duplicate", size, sha256)

        try:
            self._blobs.put_file(key, path, move=move)
        except BlobStoreError as exc:
            raise ResourceUnavailableError(f"cannot store the object: {exc}") from exc

        try:
            outcome = self._index(header, key=key, sha256=sha256, size=size, sender=sender)
        except BaseException:
            self._forget_blob(key)
            raise
        logger.info(
            "cloudfilm.archive.instance_stored",
            extra={
                "sop_instance_uid": header.sop_instance_uid,
                "outcome": outcome,
                "hospital": sender.hospital_code,
                "door": sender.door,
                "ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
        return _result(header, outcome, size, sha256)

    def _index(
        self, header: _Header, *, key: str, sha256: str, size: int, sender: Sender
    ) -> Outcome:
        for attempt in range(3):
            try:
                with self._db.write() as session:
                    return _index_in(session, header, key, sha256, size, sender)
            except IntegrityError:
                # A concurrent ingest created the same study/series/instance first: retry
                # and find it (or find ourselves a duplicate).
                if attempt == 2:
                    raise
            except DatabaseUnavailableError as exc:
                raise ResourceUnavailableError(str(exc)) from exc
        raise AssertionError("unreachable")

    def _forget_blob(self, key: str) -> None:
        try:
            with self._db.read() as session:
                if repo.blob_is_referenced(session, key):
                    return
            self._blobs.delete(key)
        except Exception:  # the sweeper removes it later; the original error matters more
            logger.warning("cloudfilm.archive.blob_cleanup_failed", extra={"key": key})


def _index_in(
    session: Any, header: _Header, key: str, sha256: str, size: int, sender: Sender
) -> Outcome:
    now = datetime.now(UTC)
    ds = header.parsed.dataset
    hospital = repo.hospital_id(session, sender.hospital_code, name=sender.hospital_name, now=now)
    current = repo.instance_by_uid(session, header.sop_instance_uid)
    if current is not None and current.sha256 == sha256:
        return "duplicate"

    patient_fk = repo.upsert_patient(
        session, hospital_id=hospital, values={**header.patient, "updated_at": now}
    )
    full_json = json_model.dataset_to_json_dict(
        ds,
        bulk_base=f"{BULK_BASE}/studies/{header.study_uid}/series/{header.series_uid}"
        f"/instances/{header.sop_instance_uid}",
        has_pixel_data=header.parsed.has_pixel_data,
    )
    full_json["00083002"] = {"vr": "UI", "Value": [header.parsed.transfer_syntax_uid]}

    study = repo.study_by_uid(session, header.study_uid)
    if study is None:
        study = repo.create_study(session, _study_values(ds, header, full_json, patient_fk,
                                                         hospital, now))
    elif study.patient_fk != patient_fk:
        raise InstanceConflictError(
            f"study {header.study_uid} is already held for another patient; "
            "correct the PatientID or the StudyInstanceUID and send again",
            code="study-patient-conflict",
        )
    series = repo.series_by_uid(session, header.series_uid)
    new_series = series is None
    if series is None:
        series = repo.create_series(session, _series_values(ds, header, full_json, study.id, now))
    elif series.study_fk != study.id:
        raise InstanceConflictError(
            f"series {header.series_uid} already belongs to another study",
            code="series-study-conflict",
        )

    values = {
        "sop_instance_uid": header.sop_instance_uid,
        "series_fk": series.id,
        "study_fk": study.id,
        "hospital_id": hospital,
        "sop_class_uid": header.sop_class_uid,
        "instance_number": _int(ds.get("InstanceNumber")),
        "number_of_frames": _int(ds.get("NumberOfFrames")),
        "rows": _int(ds.get("Rows")),
        "columns": _int(ds.get("Columns")),
        "transfer_syntax_uid": header.parsed.transfer_syntax_uid,
        "blob_key": key,
        "size_bytes": size,
        "sha256": sha256,
        "received_at": now,
        "warnings": "\n".join(header.warnings),
        "metadata_json": orjson.dumps(full_json).decode(),
    }
    if current is None:
        repo.add_instance(session, values, new_series=new_series)
        return "stored"
    if current.series_fk != series.id or current.hospital_id != hospital:
        raise InstanceConflictError(
            f"SOP Instance {header.sop_instance_uid} is already stored with different content "
            "from another sender or in another series; a SOP Instance UID must be unique",
        )
    repo.replace_instance(session, current, values, now=now)
    return "replaced"


def _read_and_validate(path: Path) -> _Header:
    try:
        parsed = read_header(path)
    except Part10Error as exc:
        raise InvalidInstanceError(str(exc)) from exc
    ds = parsed.dataset
    uids = {}
    for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        value = str(ds.get(keyword, "") or "").strip()
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
    return _Header(
        parsed=parsed,
        sop_class_uid=uids["SOPClassUID"],
        sop_instance_uid=uids["SOPInstanceUID"],
        study_uid=uids["StudyInstanceUID"],
        series_uid=uids["SeriesInstanceUID"],
        patient=patient,
        warnings=warnings,
    )


def _check_storage_class(uid: str) -> None:
    name = UID(uid).name
    if name != uid and "Storage" not in name and "Key Object" not in name:
        raise UnsupportedSOPClassError(
            f"SOP Class {uid} ({name}) is not a storage SOP class; the archive stores "
            "composite objects only"
        )


def _patient_values(ds: Dataset, warnings: list[str]) -> dict[str, Any]:
    patient_id = str(ds.get("PatientID", "") or "").strip()
    if not patient_id:
        raise InvalidInstanceError("PatientID is missing or empty; the archive files every "
                                   "object under its patient", code="missing-patient-id")
    if len(patient_id) > 64 or any(ord(c) < 32 or c == "\\" for c in patient_id):
        raise InvalidInstanceError(f"PatientID {patient_id[:80]!r} is not a valid LO value "
                                   "(at most 64 characters, no backslash or control characters)",
                                   code="invalid-patient-id")
    name = _decoded_text(ds, 0x00100010, warnings)
    return {
        "patient_id": patient_id,
        "issuer_of_patient_id": str(ds.get("IssuerOfPatientID", "") or "")[:64],
        "patient_name": name[:324],
        # Padded with spaces so that whole components match as LIKE '% WORD %'.
        "name_search": f" {charset.name_search_keys(name)[:396]} ",
        "birth_date": str(ds.get("PatientBirthDate", "") or "")[:8],
        "sex": str(ds.get("PatientSex", "") or "")[:16],
    }


def _decoded_text(ds: Dataset, tag: int, warnings: list[str]) -> str:
    """Decode a text element ourselves from its raw bytes, recording a warning when unsure."""
    elem = ds.get_item(tag)
    if elem is None or elem.value is None:
        return ""
    raw = elem.value
    if not isinstance(raw, bytes):
        return str(ds[tag].value or "")
    text, problems = charset.decode_text(raw, ds.get("SpecificCharacterSet"))
    warnings.extend(f"({tag >> 16:04X},{tag & 0xFFFF:04X}): {p}" for p in problems)
    return text.strip()


def _study_values(
    ds: Dataset, header: _Header, full_json: dict[str, Any], patient_fk: int, hospital: int,
    now: datetime,
) -> dict[str, Any]:
    warnings: list[str] = []
    return {
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
        "attributes_json": _subset_json(full_json, _STUDY_GROUP_TAGS, group="0010"),
    }


def _series_values(
    ds: Dataset, header: _Header, full_json: dict[str, Any], study_fk: int, now: datetime
) -> dict[str, Any]:
    warnings: list[str] = []
    return {
        "series_instance_uid": header.series_uid,
        "study_fk": study_fk,
        "modality": _s(ds, "Modality", 16),
        "series_number": _int(ds.get("SeriesNumber")),
        "series_description": _decoded_text(ds, 0x0008103E, warnings)[:256],
        "body_part_examined": _s(ds, "BodyPartExamined", 64),
        "performed_procedure_step_start_date": _s(ds, "PerformedProcedureStepStartDate", 8),
        "performed_procedure_step_start_time": _s(ds, "PerformedProcedureStepStartTime", 16),
        "received_at": now,
        "updated_at": now,
        "attributes_json": _subset_json(full_json, _SERIES_TAGS),
    }


def _subset_json(full: dict[str, Any], tags: frozenset[str], group: str | None = None) -> str:
    subset = {k: v for k, v in full.items() if k in tags or (group and k.startswith(group))}
    return orjson.dumps(subset).decode()


def _s(ds: Dataset, keyword: str, limit: int) -> str:
    try:
        value = ds.get(keyword, "")
    except Exception:
        return ""
    return str(value or "").strip()[:limit]


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _result(header: _Header, outcome: Outcome, size: int, sha256: str) -> StoredInstance:
    return StoredInstance(
        sop_class_uid=header.sop_class_uid,
        sop_instance_uid=header.sop_instance_uid,
        study_instance_uid=header.study_uid,
        series_instance_uid=header.series_uid,
        outcome=outcome,
        size=size,
        sha256=sha256,
        warnings=tuple(header.warnings),
    )
