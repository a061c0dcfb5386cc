"""Recording report versions and linking reports to their studies, inside the caller's
transaction (the REST door's own, or ingest's for reports that come as DICOM objects), so
that a report is never half-written and a held report is linked in the same commit as the
study it waited for.

Rules:

- A version belongs to the report with the same ``report_key`` at the same hospital; a DICOM
  version naming a predecessor object belongs to that object's report. Otherwise it starts
  a new report.
- The same content again (SHA-256 of what a reader sees) is a duplicate: nothing changes.
- Every other version is appended; none is ever updated or deleted. The report row shows
  the version issued last (a late-arriving older version is kept but does not take over).
- Link: the study named by StudyInstanceUID, else the one study of the sender with that
  accession number. Another hospital's study is refused. No study yet: the report is
  *held* and :func:`link_held` links it when ingest creates the study.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal

import orjson

from cloudfilm.infrastructure.db import archive_repository
from cloudfilm.infrastructure.db import report_repository as repo
from cloudfilm.infrastructure.db.session import as_utc
from cloudfilm.infrastructure.reports import search
from cloudfilm.infrastructure.reports.document import ReportDocument
from cloudfilm.services.errors import NotAuthorizedError, ReportConflictError

RecordOutcome = Literal["created", "new-version", "duplicate"]


@dataclass(frozen=True, slots=True)
class Recorded:
    """What happened to one received report version."""

    report_id: str
    version: int
    outcome: RecordOutcome
    link_state: Literal["held", "linked"]
    status: str
    study_instance_uid: str
    warnings: tuple[str, ...] = ()


def content_sha256(doc: ReportDocument, pdf_sha256: str = "") -> str:
    """The identity of a version's content: what a reader would see, nothing else."""
    fields = [doc.source, doc.status, doc.source_status, doc.title, doc.findings,
              doc.impression, doc.author, doc.verifier, _iso(doc.effective_at),
              _iso(doc.issued_at), doc.sop_instance_uid, pdf_sha256]
    return hashlib.sha256(orjson.dumps(fields)).hexdigest()


def record_version(conn: Any, doc: ReportDocument, *, hospital_id: int, door: str,
                   now: datetime, zone: tzinfo, pdf_blob_key: str = "",
                   pdf_sha256: str = "", study: Any = None,
                   new_report: bool = False) -> Recorded:
    """Append ``doc`` as a version of its report (creating or linking the report).

    ``study`` (the row of the study it names, when the caller just created it) and
    ``new_report`` (no report can have this key yet: a DICOM object the archive did not
    hold) save look-ups on ingest's hot path.

    Raises
    ------
    NotAuthorizedError
        The report names another hospital's study.
    ReportConflictError
        Its report is linked to another study than the one this version names.
    """
    report = None if new_report else repo.report_by_key(conn, hospital_id, doc.report_key)
    for key in doc.predecessor_keys:
        if report is not None:
            break
        if key.startswith("sop:"):
            report = repo.report_by_version_sop(conn, hospital_id, key[4:])
    if study is None or study.hospital_id != hospital_id:
        study = _study_of(conn, doc, hospital_id)
    if report is not None and report.study_fk is not None and (
            (study is not None and study.id != report.study_fk)
            or (doc.study_instance_uid and doc.study_instance_uid != report.study_instance_uid)):
        raise ReportConflictError(
            f"report {doc.report_key} is filed with study {report.study_instance_uid}, not "
            f"{doc.study_instance_uid or doc.accession_number}; send the amendment for the "
            "same study, or cancel the report and send a new one",
            code="report-study-changed")
    sha = content_sha256(doc, pdf_sha256)
    if report is not None and repo.has_version(conn, report.id, sha):
        return Recorded(report.public_id, report.current_version, "duplicate",
                        "linked" if report.study_fk is not None else "held", report.status,
                        report.study_instance_uid, doc.warnings)
    issued = _aware(doc.issued_at, zone)
    effective = _aware(doc.effective_at, zone)
    number = 1 if report is None else report.version_count + 1
    current_issued = (as_utc(report.issued_at) if report is not None and report.issued_at
                      else None)
    becomes_current = (issued is None or current_issued is None or issued >= current_issued)
    current_fields = {
        "status": doc.status, "source": doc.source, "title": doc.title[:256],
        "modality": doc.modality[:16], "findings": doc.findings,
        "impression": doc.impression, "author": doc.author[:128],
        "verifier": doc.verifier[:128], "issued_at": issued,
    }
    searched = " ".join((doc.title, doc.findings, doc.impression))
    vector = search.tsvector_literal(searched) if becomes_current else None
    text = search.normalize(searched)
    # Link fields only while the report is not linked yet (a linked one keeps its study).
    link = (_link_fields(conn, doc, hospital_id, study, effective, now,
                         report.received_at if report is not None else now)
            if report is None or report.study_fk is None else {})
    if report is None:
        public_id = uuid.uuid4().hex
        report_id = repo.insert_report(conn, {
            "public_id": public_id, "hospital_id": hospital_id,
            "report_key": doc.report_key[:256], "current_version": 1, "version_count": 1,
            "received_at": now, "updated_at": now, "search_text": text,
            **current_fields, **link,
        }, vector=vector or "")  # a first version is always current
    else:
        report_id, public_id = report.id, report.public_id
        values: dict[str, Any] = {"version_count": number, "updated_at": now}
        values.update(link)
        if becomes_current:
            values.update(current_fields, current_version=number, search_text=text)
        repo.update_report(conn, report_id, values, vector=vector)
    repo.insert_version(conn, {
        "report_fk": report_id, "version": number, "status": doc.status,
        "source_status": doc.source_status[:32], "source": doc.source, "door": door[:16],
        "content_sha256": sha, "sop_instance_uid": doc.sop_instance_uid,
        "title": doc.title[:256], "findings": doc.findings, "impression": doc.impression,
        "author": doc.author[:128], "verifier": doc.verifier[:128],
        "effective_at": effective, "issued_at": issued, "received_at": now,
        "has_pdf": doc.has_pdf, "pdf_blob_key": pdf_blob_key,
        "warnings": "\n".join(doc.warnings),
        "original_json": orjson.dumps(doc.original, default=str).decode(),
    })
    state: Literal["held", "linked"] = (
        "linked" if (study is not None or (report is not None and report.study_fk is not None))
        else "held")
    status = doc.status if becomes_current else report.status  # type: ignore[union-attr]
    return Recorded(public_id, number, "created" if report is None else "new-version", state,
                    status, study.study_instance_uid if study is not None
                    else (report.study_instance_uid if report is not None else
                          doc.study_instance_uid), doc.warnings)


def _study_of(conn: Any, doc: ReportDocument, hospital_id: int) -> Any:
    """The study a report names (by UID, else by the sender's accession number)."""
    uid = doc.study_instance_uid
    study = archive_repository.studies_by_uid(conn, [uid]).get(uid) if uid else None
    if study is not None and study.hospital_id != hospital_id:
        raise NotAuthorizedError(
            f"study {doc.study_instance_uid} was sent by another hospital; a hospital files "
            "reports for its own studies only", code="other-hospital-study")
    if study is None and doc.accession_number and not doc.study_instance_uid:
        found = repo.studies_by_accession(conn, hospital_id, doc.accession_number)
        # Two studies under one accession number: ambiguous, so hold it rather than guess.
        study = found[0] if len(found) == 1 else None
    return study


def _link_fields(conn: Any, doc: ReportDocument, hospital_id: int, study: Any,
                 effective: datetime | None, now: datetime,
                 received: datetime) -> dict[str, Any]:
    if study is not None:
        exam = study.exam_at or effective
        return {"listed_at": exam or received, "study_fk": study.id,
                "patient_fk": study.patient_fk, "link_state": "linked",
                "linked_at": now, "study_instance_uid": study.study_instance_uid,
                "accession_number": (doc.accession_number or study.accession_number)[:64],
                "patient_id": doc.patient_id[:64],
                "exam_at": exam}
    patient_fk = (repo.patient_by_local_id(conn, hospital_id, doc.patient_id)
                  if doc.patient_id else None)
    return {"listed_at": effective or received,
            "study_fk": None, "patient_fk": patient_fk, "link_state": "held",
            "linked_at": None, "study_instance_uid": doc.study_instance_uid[:64],
            "accession_number": doc.accession_number[:64], "patient_id": doc.patient_id[:64],
            "exam_at": effective}


def link_held(conn: Any, *, hospital_id: int, studies: Sequence[Any], now: datetime) -> int:
    """Link the hospital's held reports that name one of ``studies`` (rows with ``id``,
    ``study_instance_uid``, ``patient_fk``, ``accession_number``, ``exam_at``), just created
    by ingest. Returns how many were linked. One indexed query when nothing is held."""
    if not studies:
        return 0
    by_uid = {s.study_instance_uid: s for s in studies}
    by_accession: dict[str, list[Any]] = {}
    for s in studies:
        if s.accession_number:
            by_accession.setdefault(s.accession_number, []).append(s)
    linked = 0
    for held in repo.held_reports(conn, hospital_id, list(by_uid), list(by_accession)):
        study = by_uid.get(held.study_instance_uid)
        if study is None and not held.study_instance_uid:
            matches = by_accession.get(held.accession_number, [])
            study = matches[0] if len(matches) == 1 else None
        if study is None:
            continue
        repo.update_report(conn, held.id, {
            "study_fk": study.id, "patient_fk": study.patient_fk, "link_state": "linked",
            "linked_at": now, "study_instance_uid": study.study_instance_uid,
            "exam_at": study.exam_at or held.exam_at,
            "listed_at": study.exam_at or held.exam_at or held.received_at})
        linked += 1
    return linked


def _aware(at: datetime | None, zone: tzinfo) -> datetime | None:
    """A sender's time in UTC; a naive one is the province's local time."""
    if at is None:
        return None
    return (at.replace(tzinfo=zone) if at.tzinfo is None else at).astimezone(UTC)


def _iso(at: datetime | None) -> str:
    return at.isoformat() if at is not None else ""
