"""Diagnostic reports: receive them over REST (FHIR R4, HL7 v2 ORU^R01), read, render,
search, and measure upload timeliness.

Reports that come as DICOM objects (SR, Encapsulated PDF) enter through ingest instead
(``services.reports.intake``); both paths record versions with ``recording``.

Every read decides with the one access policy and commits its audit record before
returning anything: a linked report follows its study's rule, a held one
``AccessPolicy.authorize_held_report``. A refusal does not say whether the report exists.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any

from pydicom import dcmread
from sqlalchemy.exc import IntegrityError

from cloudfilm.infrastructure.db import access_repository, archive_repository, report_repository
from cloudfilm.infrastructure.db import retrieve_repository as rr
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError, as_utc
from cloudfilm.infrastructure.reports import fhir, hl7v2, render, search
from cloudfilm.infrastructure.reports.document import ReportDocument, ReportFormatError
from cloudfilm.infrastructure.storage.base import BlobStore, BlobStoreError, blob_key
from cloudfilm.services.access.audit import AuditService, per_resident
from cloudfilm.services.access.policy import AccessPolicy, Decision, Resource
from cloudfilm.services.access.rules import Facts
from cloudfilm.services.errors import (
    InvalidInputError,
    InvalidReportError,
    NotFoundError,
    ResourceUnavailableError,
)
from cloudfilm.services.kernel.actor import Actor, Permission
from cloudfilm.services.kernel.sender import Sender
from cloudfilm.services.reports.recording import Recorded, record_version


@dataclass(frozen=True, slots=True)
class ReportSettings:
    zone: tzinfo
    deadline_hours: int = 12
    max_bytes: int = 25 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReportSummary:
    """A report as lists and searches show it (the current version)."""

    report_id: str
    status: str
    version: int
    versions: int
    link_state: str
    study_instance_uid: str
    accession_number: str
    hospital_code: str
    hospital_name: str
    source: str
    title: str
    modality: str
    findings: str
    impression: str
    author: str
    verifier: str
    exam_at: datetime | None
    issued_at: datetime | None
    received_at: datetime


@dataclass(frozen=True, slots=True)
class ReportVersionInfo:
    version: int
    status: str
    source_status: str
    source: str
    door: str
    title: str
    findings: str
    impression: str
    author: str
    verifier: str
    effective_at: datetime | None
    issued_at: datetime | None
    received_at: datetime
    has_pdf: bool
    sop_instance_uid: str
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ReportDetail:
    summary: ReportSummary
    versions: list[ReportVersionInfo] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class HospitalTimeliness:
    """One hospital's upload figures for exams in a period (the 12-hour rule)."""

    hospital_code: str
    hospital_name: str
    studies: int
    studies_on_time: int
    studies_late: int
    studies_max_delay_s: float | None
    studies_without_report: int
    studies_without_exam_time: int
    reports: int
    reports_on_time: int
    reports_late: int
    reports_max_delay_s: float | None


class ReportService:
    def __init__(self, db: Database, blobs: BlobStore, policy: AccessPolicy,
                 audit: AuditService, settings: ReportSettings, work_dir: Path,
                 sender_for: Callable[..., Sender],
                 clock: Callable[[], datetime] | None = None) -> None:
        self._db = db
        # Who an upload is recorded for: the same rule as for DICOM objects
        # (``IngestService.sender_for``: hospital systems as themselves, the operator as
        # LOCAL, anyone else refused and audited).
        self._sender_for = sender_for
        # Scratch space on the blob store's filesystem (inline PDFs before they are stored).
        self._work_dir = work_dir
        self._blobs = blobs
        self._policy = policy
        self._audit = audit
        self._settings = settings
        self._clock = clock or (lambda: datetime.now(UTC))

    @property
    def max_bytes(self) -> int:
        """The largest FHIR or HL7 body accepted."""
        return self._settings.max_bytes

    @property
    def deadline_hours(self) -> int:
        return self._settings.deadline_hours

    # -- receiving ------------------------------------------------------------------------

    def receive_fhir(self, body: bytes, *, actor: Actor) -> Recorded:
        """Record one FHIR R4 DiagnosticReport sent by a hospital system.

        Raises
        ------
        NotAuthorizedError
            Not a sender (audited), or the report names another hospital's study.
        InvalidReportError
            Malformed resource (``field`` names where), or too large.
        ReportConflictError
            An amendment naming another study than its report's.
        """
        return self._receive(body, lambda b: [fhir.read_diagnostic_report(b)],
                             "DiagnosticReport", actor=actor, door="fhir")[0]

    def receive_hl7(self, message: bytes, *, actor: Actor) -> list[Recorded]:
        """Record the reports (one per OBR group) of an HL7 v2 ORU^R01 message, all or
        none (one transaction). Raises like :meth:`receive_fhir`."""
        return self._receive(message, hl7v2.read_oru_r01, "MSH", actor=actor, door="hl7")

    def _receive(self, body: bytes, read: Callable[[bytes], list[ReportDocument]],
                 where: str, *, actor: Actor, door: str) -> list[Recorded]:
        # Who may send is decided first (and a refusal audited), as for DICOM objects.
        sender = self._sender_for(actor, door=door)
        if len(body) > self._settings.max_bytes:
            raise InvalidReportError(
                f"the report is {len(body)} bytes; at most {self._settings.max_bytes} are "
                "accepted (send large PDFs as DICOM Encapsulated PDF through STOW-RS)",
                field=where, code="report-too-large")
        try:
            docs = read(body)
        except ReportFormatError as exc:
            raise InvalidReportError(str(exc), field=exc.field) from exc
        return self._record_all(docs, sender=sender, door=door)

    def _record_all(self, docs: list[ReportDocument], *, sender: Sender,
                    door: str) -> list[Recorded]:
        pdfs = [self._store_pdf(doc) for doc in docs]
        for attempt in range(3):
            now = self._clock()
            try:
                with self._db.write() as session:
                    hospital = archive_repository.hospital_id(
                        session, sender.hospital_code, name=sender.hospital_name, now=now)
                    report_repository.lock_link_keys(session, [
                        k for d in docs for k in report_repository.link_keys(
                            hospital, d.study_instance_uid, d.accession_number)])
                    return [record_version(session, doc, hospital_id=hospital, door=door,
                                           now=now, zone=self._settings.zone,
                                           pdf_blob_key=key, pdf_sha256=sha)
                            for doc, (key, sha) in zip(docs, pdfs, strict=True)]
            except DatabaseUnavailableError as exc:
                raise ResourceUnavailableError(str(exc)) from exc
            except IntegrityError:
                # Another request recorded the same report (or version number) first;
                # the next attempt sees it and appends after it, or finds a duplicate.
                if attempt == 2:
                    raise ResourceUnavailableError(
                        "the report kept changing under concurrent updates; send it again"
                    ) from None
        raise AssertionError("unreachable")

    def _store_pdf(self, doc: ReportDocument) -> tuple[str, str]:
        """A PDF that came inline goes to the blob store (durably) before the index
        transaction, like an object: content-addressed, so a resend writes the same bytes.

        Written even when the key exists: a name without an index row may be a crash's
        leftover whose data never reached the disk (the local store links a new blob into
        place before its fsync), and ``put_file`` replaces it only with synced data."""
        if not doc.pdf_bytes:
            return "", ""
        sha = hashlib.sha256(doc.pdf_bytes).hexdigest()
        key = blob_key(sha, ".pdf")
        try:
            fd, name = tempfile.mkstemp(prefix="report-", suffix=".pdf", dir=self._work_dir)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(doc.pdf_bytes)
                self._blobs.put_file(key, Path(name), move=True)
            finally:
                Path(name).unlink(missing_ok=True)
        except BlobStoreError as exc:
            raise ResourceUnavailableError(f"cannot store the report's PDF: {exc}") from exc
        return key, sha

    # -- reading --------------------------------------------------------------------------

    def _load(self, conn: Any, public_id: str, actor: Actor, action: str) -> Any:
        """The report row, once ``policy.enforce`` allowed it and committed the record.

        A report linked to a study is decided on that study; one waiting for its study on
        its own facts (hospital, linked resident)."""
        public_id = public_id[:64]
        row = report_repository.report_by_public_id(conn, public_id)
        resource: Resource | Facts | None = None
        if row is not None and row.study_fk is not None:
            resource = Resource.of(row.linked_study_uid)
        elif row is not None:
            resource = self._policy.held_report_facts(
                conn, hospital_id=row.hospital_id, hospital_code=row.hospital_code,
                patient_fk=row.patient_fk)
        self._policy.enforce(
            conn, actor, Permission.READ_REPORT, resource, action=action,
            audit_type="report", audit_uid=public_id,
            detail={"study": row.linked_study_uid or ""} if row is not None else {},
            refusal=f"report {public_id} is not in the archive or you are not authorised to "
                    "see it (a doctor needs the patient's grant for another hospital's "
                    "reports)")
        if row is None:
            raise NotFoundError(f"report {public_id} is not in the archive")
        return row

    def get(self, public_id: str, *, actor: Actor) -> ReportDetail:
        """A report with all its versions (oldest first)."""
        try:
            with self._db.reading() as conn:
                row = self._load(conn, public_id, actor, "report")
                versions = report_repository.versions(conn, row.id)
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        return ReportDetail(_summary(row), [_version(v) for v in versions])

    def study_reports(self, study_uid: str, *, actor: Actor) -> list[ReportSummary]:
        """The reports linked to a study (newest first), decided on the study."""
        resource = Resource.of(study_uid[:64])
        try:
            with self._db.reading() as conn:
                rows: list[Any] = []

                def counted(decision: Decision) -> dict[str, Any]:
                    if decision.allowed:
                        rows.extend(report_repository.reports_of_study(conn, study_uid))
                    return {"reports": len(rows)}

                self._policy.enforce(
                    conn, actor, Permission.READ_REPORT, resource, action="report",
                    detail=counted,
                    refusal=f"study {study_uid[:64]} is not in the archive or you are not "
                            "authorised to see it (a doctor needs the patient's grant for "
                            "another hospital's studies)")
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        return [_summary(r) for r in rows]

    def _rendering(self, public_id: str, *, actor: Actor, version: int | None,
                   action: str) -> tuple[render.ReportView, Any]:
        """One decision and one audit record, then what the renderings show (the current
        or a given version) and that version's row (its PDF, if the sender sent one)."""
        try:
            with self._db.reading() as conn:
                row = self._load(conn, public_id, actor, action)
                versions = report_repository.versions(conn, row.id)
                patient = report_repository.patient_of(conn, row.patient_fk)
                study = report_repository.study_summary(conn, row.study_fk)
                number = version if version is not None else row.current_version
                shown = next((v for v in versions if v.version == number), None)
                located = (rr.instances(conn, row.linked_study_uid, None,
                                        shown.sop_instance_uid)
                           if shown is not None and shown.has_pdf and shown.sop_instance_uid
                           and row.linked_study_uid else [])
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        if shown is None:
            raise NotFoundError(f"report {public_id[:64]} has no version {number}")
        view = render.ReportView(
            report_id=row.public_id, title=shown.title, status=shown.status,
            version=shown.version,
            versions=tuple(render.VersionLine(v.version, v.status, _utc(v.issued_at),
                                              _utc(v.received_at) or self._clock())
                           for v in versions),
            hospital_name=row.hospital_name or row.hospital_code,
            patient_name=patient.patient_name if patient is not None else "",
            patient_sex=patient.sex if patient is not None else "",
            patient_birth_date=patient.birth_date if patient is not None else "",
            patient_id=(patient.patient_id if patient is not None else row.patient_id),
            study_date=study.study_date if study is not None else "",
            exam_at=_utc(row.exam_at), modality=row.modality,
            accession_number=row.accession_number,
            study_description=study.study_description if study is not None else "",
            findings=shown.findings, impression=shown.impression, author=shown.author,
            verifier=shown.verifier, issued_at=_utc(shown.issued_at),
            received_at=_utc(shown.received_at) or self._clock(), source=shown.source,
            linked=row.study_fk is not None)
        pdf_key = shown.pdf_blob_key or (located[0].blob_key if located else "")
        return view, (pdf_key, bool(shown.pdf_blob_key))

    def view(self, public_id: str, *, actor: Actor, version: int | None = None,
             action: str = "render") -> render.ReportView:
        """What the HTML and PDF renderings show (the current or a given version)."""
        return self._rendering(public_id, actor=actor, version=version, action=action)[0]

    def html(self, public_id: str, *, actor: Actor, lang: str = "zh-CN",
             version: int | None = None, pdf_url: str | None = None,
             images_url: str | None = None) -> str:
        view = self.view(public_id, actor=actor, version=version, action="render")
        return render.render_html(view, lang=lang, tz=self._zone_name(), pdf_url=pdf_url,
                                  images_url=images_url if view.linked else None)

    def pdf(self, public_id: str, *, actor: Actor, lang: str = "zh-CN",
            version: int | None = None) -> bytes:
        """The report as PDF: the sender's own PDF when it sent one (Encapsulated PDF,
        FHIR presentedForm), else rendered from the text."""
        view, (key, bare) = self._rendering(public_id, actor=actor, version=version,
                                            action="download")
        original = self._stored_pdf(key, bare) if key else None
        if original is not None:
            return original
        return render.render_pdf(view, lang=lang, tz=self._zone_name())

    def _stored_pdf(self, key: str, bare: bool) -> bytes | None:
        """A PDF blob as sent (``bare``), or the document inside an Encapsulated PDF."""
        try:
            with self._blobs.open(key) as fh:
                if bare:
                    return fh.read()
                ds = dcmread(fh, force=True)
        except BlobStoreError as exc:
            raise ResourceUnavailableError(f"cannot read the report's PDF: {exc}") from exc
        data = ds.get("EncapsulatedDocument")
        # The value is padded to even length; a PDF ends at %%EOF.
        return bytes(data).rstrip(b"\x00") if data else None

    def _zone_name(self) -> str:
        return str(getattr(self._settings.zone, "key", "Asia/Shanghai"))

    # -- search ---------------------------------------------------------------------------

    def search(self, query: str = "", *, actor: Actor, hospital_code: str | None = None,
               status: str | None = None, link_state: str | None = None,
               since: datetime | None = None,
               until: datetime | None = None, limit: int = 50,
               offset: int = 0) -> list[ReportSummary]:
        """Reports the actor may see whose title, findings or impression contain every
        term of ``query`` (Chinese or not), newest exam first. The search is audited.

        ``link_state="held"`` lists reports still waiting for their images: what a
        hospital's IT engineer checks for studies that never arrived.
        """
        if status is not None and status not in ("preliminary", "final", "amended",
                                                 "cancelled"):
            raise InvalidInputError(f"status {status!r} is not one of preliminary, final, "
                                    "amended, cancelled")
        if query and not search.query_terms(query):
            raise InvalidInputError("q has no searchable characters")
        try:
            with self._db.reading() as conn:
                visible = self._policy.report_filter(conn, actor)
                rows = report_repository.search(
                    conn, visible=visible, tsquery=search.tsquery_literal(query),
                    like_patterns=search.like_patterns(query), hospital_code=hospital_code,
                    status=status, link_state=link_state, since=since, until=until,
                    limit=limit, offset=offset)
                residents = access_repository.patient_residents(
                    conn, [r.patient_fk for r in rows if r.patient_fk is not None])
                owners = {r.public_id: (residents.get(r.patient_fk)
                                        if r.patient_fk is not None else None) for r in rows}
                # One record naming every resident whose reports are in the answer.
                self._audit.write(conn=conn, entries=per_resident(
                    actor, "search", "report", "", owners, key="reports", reason=actor.kind,
                    detail={"matches": len(rows), "offset": offset, "query": bool(query)}))
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        return [_summary(r) for r in rows]

    # -- timeliness -----------------------------------------------------------------------

    def timeliness(self, *, actor: Actor, since: datetime, until: datetime,
                   hospital_code: str | None = None) -> list[HospitalTimeliness]:
        """Upload timeliness per hospital for exams in ``[since, until)``.

        Administrators and the operator see every hospital; a hospital system or doctor
        its own hospital only; residents nothing.
        """
        self._policy.require(actor, Permission.READ_TIMELINESS, action="timeliness",
                             message="upload figures are for hospitals and administrators")
        if until <= since or until - since > timedelta(days=366):
            raise InvalidInputError("since must be before until, at most a year apart")
        try:
            with self._db.reading() as conn:
                own: int | None = None
                if not actor.can(Permission.READ_ALL_TIMELINESS):
                    own = actor.hospital_id if actor.hospital_id is not None else \
                        report_repository.hospital_by_code(conn, actor.hospital_code or "")
                    if own is None:
                        return []
                elif hospital_code:
                    own = report_repository.hospital_by_code(conn, hospital_code)
                    if own is None:
                        raise NotFoundError(f"hospital {hospital_code} is not registered")
                figures = report_repository.timeliness(
                    conn, since=since, until=until, hospital_id=own,
                    deadline_seconds=self._settings.deadline_hours * 3600)
                names = access_repository.hospital_names(conn, sorted(figures))
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        return sorted((HospitalTimeliness(hospital_code=names.get(h, ("", ""))[0],
                                          hospital_name=names.get(h, ("", ""))[1], **f)
                       for h, f in figures.items()), key=lambda t: t.hospital_code)


def _utc(at: datetime | None) -> datetime | None:
    return as_utc(at) if at is not None else None


def _summary(row: Any) -> ReportSummary:
    return ReportSummary(
        report_id=row.public_id, status=row.status, version=row.current_version,
        versions=row.version_count, link_state=row.link_state,
        study_instance_uid=row.linked_study_uid or row.study_instance_uid,
        accession_number=row.accession_number, hospital_code=row.hospital_code,
        hospital_name=row.hospital_name, source=row.source, title=row.title,
        modality=row.modality, findings=row.findings, impression=row.impression,
        author=row.author, verifier=row.verifier, exam_at=_utc(row.exam_at),
        issued_at=_utc(row.issued_at), received_at=_utc(row.received_at) or row.received_at)


def _version(v: Any) -> ReportVersionInfo:
    return ReportVersionInfo(
        version=v.version, status=v.status, source_status=v.source_status, source=v.source,
        door=v.door, title=v.title, findings=v.findings, impression=v.impression,
        author=v.author, verifier=v.verifier, effective_at=_utc(v.effective_at),
        issued_at=_utc(v.issued_at), received_at=_utc(v.received_at) or v.received_at,
        has_pdf=v.has_pdf, sop_instance_uid=v.sop_instance_uid,
        warnings=tuple(w for w in v.warnings.split("\n") if w))
