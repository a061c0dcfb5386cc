"""Research projects: proposal, approval by a platform administrator, cohort counts under a
k-threshold, residents' refusal, and a streamed, audited, de-identified export.

Who may do what is decided in :func:`_require` alone, so that the platform's permission
model (services/access/policy.py) can take it over in one place. Every exported object is
an audited access naming its resident ("their de-identified data went to project X"); the
pseudonym is never written to the trail. Refusals are re-read while the export runs.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import pydicom

from cloudfilm.infrastructure.db import research_repository as repo
from cloudfilm.infrastructure.db.models import ResearchProject
from cloudfilm.infrastructure.db.research_repository import CohortFilter, CohortRow
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError
from cloudfilm.infrastructure.deid import (
    DeidOptions,
    Pseudonymiser,
    Region,
    deidentify,
    deidentify_text,
    residual_risk,
)
from cloudfilm.infrastructure.storage.base import BlobStore, BlobStoreError
from cloudfilm.services.access.audit import AuditEntry, AuditService
from cloudfilm.services.errors import (
    InvalidInputError,
    NotAuthorizedError,
    NotFoundError,
    ResourceUnavailableError,
)
from cloudfilm.services.identity.protection import IdProtector
from cloudfilm.services.kernel.actor import Actor, Permission, Role
from cloudfilm.services.research.zipstream import ZipStream

Step = Literal["propose", "approve", "export", "count"]
_STEP_PERMISSION: dict[str, Permission] = {
    "propose": Permission.PROPOSE_RESEARCH, "count": Permission.PROPOSE_RESEARCH,
    "approve": Permission.APPROVE_RESEARCH, "export": Permission.EXPORT_RESEARCH}
_KEY_KIND = "research-project-key"
_BATCH = 20  # objects de-identified and audited before their bytes leave


def _require(actor: Actor, step: Step) -> None:
    """The one permission check of research (platform administrators approve and export;
    the embedded platform's local operator acts as its administrator; doctors propose)."""
    if not actor.can(_STEP_PERMISSION[step]):
        raise NotAuthorizedError(f"research: a {actor.kind} may not {step}")


@dataclass(frozen=True, slots=True)
class Cohort:
    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    date_from: str = ""
    date_to: str = ""
    age_min: int | None = None
    age_max: int | None = None
    sex: str = ""
    hospital_levels: tuple[str, ...] = ()
    report_terms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProjectInput:
    title: str
    principal_investigator: str
    institution: str
    ethics_reference: str
    ethics_expires: date
    options: dict[str, Any] = field(default_factory=dict)
    cohort: Cohort = field(default_factory=Cohort)


@dataclass(frozen=True, slots=True)
class ProjectView:
    id: str
    title: str
    principal_investigator: str
    institution: str
    ethics_reference: str
    ethics_expires: date
    status: str
    options: dict[str, Any]
    cohort: dict[str, Any]
    approved_by: str


@dataclass(frozen=True, slots=True)
class Counts:
    """Exact counts, or ``"< k"`` strings where a count is below k before approval."""

    studies: int | str
    patients: int | str
    instances: int | str
    refused_patients: int | str


@dataclass
class ExportSummary:
    exported: int = 0
    excluded: int = 0
    refused: int = 0
    manifest_sha256: str = ""
    # Object-store exports: objects put by this run, and found there from an earlier one.
    sent: int = 0
    already_sent: int = 0


@dataclass(frozen=True, slots=True)
class _Run:
    """One export, checked and recorded, ready to stream."""

    actor: Actor
    view: ProjectView
    options: DeidOptions
    rows: list[CohortRow]
    dictionary: dict[str, str]
    pseudo: Pseudonymiser
    export_id: int


_OPTION_FIELDS = {f.name for f in dataclasses.fields(DeidOptions)}


def _options(raw: dict[str, Any]) -> DeidOptions:
    unknown = set(raw) - _OPTION_FIELDS
    if unknown:
        raise InvalidInputError(f"unknown de-identification options: {sorted(unknown)}")
    values = dict(raw)
    if "safe_private" in values:
        values["safe_private"] = frozenset((str(c), int(g), int(e))
                                           for c, g, e in values["safe_private"])
    if "blackout_regions" in values:
        values["blackout_regions"] = {str(m).upper(): tuple(Region(*r) for r in regions)
                                      for m, regions in values["blackout_regions"].items()}
    try:
        return DeidOptions(**values)
    except TypeError as exc:
        raise InvalidInputError(str(exc)) from exc


def _age(birth: str, at: str) -> int | None:
    try:
        b = datetime.strptime(birth[:8], "%Y%m%d").date()
        a = datetime.strptime(at[:8], "%Y%m%d").date()
    except ValueError:
        return None
    return a.year - b.year - ((a.month, a.day) < (b.month, b.day))


def _in_age(row: CohortRow, cohort: Cohort) -> bool:
    if cohort.age_min is None and cohort.age_max is None:
        return True
    age = _age(row.birth_date, row.study_date)
    if age is None:
        return False
    return ((cohort.age_min is None or age >= cohort.age_min)
            and (cohort.age_max is None or age <= cohort.age_max))


def _cohort_from(raw: dict[str, Any]) -> Cohort:
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return Cohort(**values)


def _filter(cohort: Cohort) -> CohortFilter:
    return CohortFilter(modalities=cohort.modalities, body_parts=cohort.body_parts,
                        date_from=cohort.date_from, date_to=cohort.date_to, sex=cohort.sex,
                        hospital_levels=cohort.hospital_levels,
                        report_terms=cohort.report_terms)


def _view(row: ResearchProject) -> ProjectView:
    return ProjectView(id=row.public_id, title=row.title,
                       principal_investigator=row.principal_investigator,
                       institution=row.institution, ethics_reference=row.ethics_reference,
                       ethics_expires=row.ethics_expires.date(), status=row.status,
                       options=json.loads(row.options_json),
                       cohort=json.loads(row.cohort_json), approved_by=row.approved_by)


class ResearchService:
    def __init__(self, db: Database, blobs: BlobStore, audit: AuditService,
                 protector: IdProtector, *, k: int = 10) -> None:
        self._db = db
        self._blobs = blobs
        self._audit = audit
        self._protector = protector
        self._k = max(1, k)

    # -- projects ------------------------------------------------------------------------
    def propose(self, actor: Actor, data: ProjectInput) -> ProjectView:
        _require(actor, "propose")
        _options(data.options)  # reject unknown options now, not at export
        for name in ("title", "principal_investigator", "institution", "ethics_reference"):
            if not str(getattr(data, name)).strip():
                raise InvalidInputError(f"{name} is required")
        now = datetime.now(UTC)
        expires = datetime.combine(data.ethics_expires, datetime.min.time(), tzinfo=UTC)
        try:
            with self._db.write() as s:
                row = repo.insert_project(
                    s, public_id=secrets.token_hex(8), title=data.title.strip(),
                    principal_investigator=data.principal_investigator.strip(),
                    institution=data.institution.strip(),
                    ethics_reference=data.ethics_reference.strip(), ethics_expires=expires,
                    options_json=json.dumps(data.options, sort_keys=True),
                    cohort_json=json.dumps(dataclasses.asdict(data.cohort), sort_keys=True),
                    status="proposed",
                    key_enc=self._protector.encrypt(_KEY_KIND, secrets.token_hex(32)),
                    created_by=actor.subject, created_at=now, approved_by="")
                self._audit.record(s, actor=actor, action="research.propose",
                                   outcome="success", resource_type="research_project",
                                   resource_uid=row.public_id)
                return _view(row)
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc

    def approve(self, actor: Actor, project_id: str) -> ProjectView:
        _require(actor, "approve")
        with self._db.write() as s:
            row = repo.project(s, project_id, lock=True)
            if row is None:
                raise NotFoundError("no such research project")
            if row.status != "proposed":
                raise InvalidInputError(f"the project is {row.status}, not proposed")
            if row.created_by == actor.subject and actor.has(Role.ADMIN):
                raise NotAuthorizedError("a project is approved by another administrator "
                                         "than the one who proposed it")
            row.status = "approved"
            row.approved_by = actor.subject
            row.approved_at = datetime.now(UTC)
            self._audit.record(s, actor=actor, action="research.approve", outcome="success",
                               resource_type="research_project", resource_uid=project_id)
            return _view(row)

    def get(self, actor: Actor, project_id: str) -> ProjectView:
        _require(actor, "count")
        with self._db.read() as s:
            row = repo.project(s, project_id)
            if row is None:
                raise NotFoundError("no such research project")
            return _view(row)

    def projects(self, actor: Actor) -> list[ProjectView]:
        _require(actor, "count")
        with self._db.read() as s:
            return [_view(r) for r in repo.projects(s)]

    # -- counts --------------------------------------------------------------------------
    def counts(self, actor: Actor, project_id: str) -> Counts:
        """Cohort size; before approval every count below k reads ``"< k"``."""
        _require(actor, "count")
        with self._db.read() as s:
            row = repo.project(s, project_id)
            if row is None:
                raise NotFoundError("no such research project")
            cohort = _cohort_from(json.loads(row.cohort_json))
            studies: set[int] = set()
            patients: set[int] = set()
            refused: set[int] = set()
            instances = 0
            for r in repo.cohort(s, _filter(cohort)):
                if not _in_age(r, cohort):
                    continue
                if r.refused:
                    refused.add(r.patient_fk)
                    continue
                instances += 1
                studies.add(r.study_fk)
                patients.add(r.patient_fk)
            approved = row.status == "approved"

        def shown(n: int) -> int | str:
            return n if approved or n >= self._k else f"< {self._k}"

        return Counts(shown(len(studies)), shown(len(patients)), shown(instances),
                      shown(len(refused)))

    # -- residents -----------------------------------------------------------------------
    def set_refusal(self, actor: Actor, refused: bool, resident_id: int | None = None) -> bool:
        """A resident refuses (or allows again) research use of their data, or of a family
        member's they may act for."""
        if not actor.can(Permission.SET_RESEARCH_CHOICE) or not actor.resident_ids:
            raise NotAuthorizedError("only a signed-in resident sets their research choice")
        if resident_id is None:
            if len(actor.resident_ids) != 1:
                raise InvalidInputError("say for which family member (resident_id)")
            [resident_id] = actor.resident_ids
        if resident_id not in actor.resident_ids:
            raise NotAuthorizedError("not a resident you may act for")
        with self._db.write() as s:
            repo.set_refusal(s, resident_id, refused)
            self._audit.record(s, actor=actor, action="research.refusal", outcome="success",
                               resource_type="resident", resident_id=resident_id,
                               detail={"refused": refused})
        return refused

    def refusal(self, actor: Actor, resident_id: int | None = None) -> bool:
        if not actor.can(Permission.SET_RESEARCH_CHOICE) or not actor.resident_ids:
            raise NotAuthorizedError("only a signed-in resident reads their research choice")
        rid = resident_id if resident_id is not None else min(actor.resident_ids)
        if rid not in actor.resident_ids:
            raise NotAuthorizedError("not a resident you may act for")
        with self._db.read() as s:
            return bool(repo.refused(s, rid))

    # -- export --------------------------------------------------------------------------
    def export(self, actor: Actor, project_id: str, summary: ExportSummary | None = None,
               *, resume_after: str = "") -> Iterator[bytes]:
        """Check everything, then return the zip as a stream of chunks.

        The checks run before the first chunk, so a door can still answer with an error.
        Each object is audited (naming its resident and the project, never the pseudonym)
        before its bytes are yielded. ``summary`` is filled in as the stream runs.
        ``resume_after`` is the (pseudonymous) SOP Instance UID of the last object the
        researcher received: an interrupted export goes on after it, in a new archive with
        its own manifest and hash.
        """
        return self._zip(self._begin(actor, project_id, resume_after),
                         summary if summary is not None else ExportSummary())

    def _begin(self, actor: Actor, project_id: str, resume_after: str) -> _Run:
        """Every check of an export, the cohort, and the export's record."""
        _require(actor, "export")
        with self._db.read() as s:
            row = repo.project(s, project_id)
            if row is None:
                raise NotFoundError("no such research project")
            if row.status != "approved":
                raise NotAuthorizedError("the project is not approved: counts only")
            if row.ethics_expires.replace(tzinfo=row.ethics_expires.tzinfo or UTC) \
                    <= datetime.now(UTC):
                raise NotAuthorizedError("the project's ethics approval has expired")
            view = _view(row)
            key = bytes.fromhex(self._protector.decrypt(_KEY_KIND, row.key_enc))
            project_pk = row.id
        options = _options(view.options)
        cohort = _cohort_from(view.cohort)
        pseudo = Pseudonymiser(key)
        with self._db.read() as s:
            rows = [r for r in repo.cohort(s, _filter(cohort)) if _in_age(r, cohort)]
            dictionary = repo.dictionary_terms(s, sorted({r.study_fk for r in rows}))
        if resume_after:
            done = next((i for i, r in enumerate(rows) if (options.retain_uids
                         and r.sop_instance_uid == resume_after)
                         or pseudo.uid(r.sop_instance_uid) == resume_after), None)
            if done is None:
                raise InvalidInputError("resume_after is not an object of this export")
            rows = rows[done + 1:]
        with self._db.write() as s:
            export_id = repo.start_export(s, project_pk, datetime.now(UTC), actor.subject).id
        return _Run(actor, view, options, rows, dictionary, pseudo, export_id)

    def export_to_store(self, actor: Actor, project_id: str, store: BlobStore,
                        summary: ExportSummary | None = None) -> ExportSummary:
        """Export into an object-store prefix (``store``: e.g. ``s3://bucket/project-x``)
        instead of a zip: one object per file, then ``manifest.csv``, ``reports.csv`` and
        ``manifest.sha256`` (the hash for the ethics board).

        Resumable by running it again: the names are pseudonymous and deterministic, so a
        file already under the prefix is not sent (nor audited) again, while the manifest
        still lists it. Each file sent is audited (naming its resident) before it is put.
        """
        summary = summary if summary is not None else ExportSummary()
        for name, data in self._files(self._begin(actor, project_id, ""), summary,
                                      present=store.exists):
            _put(store, name, data)
            if name.endswith(".dcm"):
                summary.sent += 1
        return summary

    def _zip(self, run: _Run, summary: ExportSummary) -> Iterator[bytes]:
        zs = ZipStream()
        for name, data in self._files(run, summary):
            yield from zs.add(name, data)
        yield from zs.close()

    def _files(self, run: _Run, summary: ExportSummary,
               present: Callable[[str], bool] | None = None
               ) -> Iterator[tuple[str, bytes]]:
        """The export's files in order, each object audited before it is yielded; names
        for which ``present`` says True are listed in the manifest but neither audited
        nor yielded (a resumed export to an object store)."""
        actor, view, options, rows = run.actor, run.view, run.options, run.rows
        dictionary, pseudo, export_id = run.dictionary, run.pseudo, run.export_id
        manifest = io.StringIO()
        writer = csv.writer(manifest, lineterminator="\n")
        writer.writerow(["file", "pseudo_patient_id", "study_uid", "series_uid", "sop_uid",
                         "modality", "burned_in", "reason", "sha256"])
        reports = io.StringIO()
        rwriter = csv.writer(reports, lineterminator="\n")
        rwriter.writerow(["file", "pseudo_patient_id", "study_uid", "residual_risk"])
        # The resident's log shows the project's title as who received the data.
        shown_as = dataclasses.replace(actor, display=f"research project «{view.title}»")
        done_studies: set[int] = set()
        for start in range(0, len(rows), _BATCH):
            batch = rows[start:start + _BATCH]
            ready: list[tuple[str, bytes]] = []
            entries: list[AuditEntry] = []
            with self._db.read() as s:
                for r in batch:
                    if r.refused or (r.resident_id is not None
                                     and not repo.still_allowed(s, r.resident_id)):
                        summary.refused += 1
                        continue
                    ready_item = self._one(r, options, pseudo, dictionary, writer, summary)
                    if ready_item is None:
                        continue
                    if present is not None and present(ready_item[0]):
                        summary.already_sent += 1  # left in an earlier run: audited then
                        continue
                    ready.append(ready_item)
                    entries.append(AuditEntry(
                        shown_as, "research.export", "success",
                        resource_type="research_project", resource_uid=view.id,
                        resident_id=r.resident_id,
                        detail={"sop_instance_uid": r.sop_instance_uid}))
                    if r.study_fk not in done_studies:
                        done_studies.add(r.study_fk)
                        for pid, text in repo.report_texts(s, r.study_fk):
                            cleaned = deidentify_text(text, dictionary).text
                            name = f"reports/{pseudo.token('report', pid, 16)}.txt"
                            if present is None or not present(name):
                                ready.append((name, cleaned.encode()))
                            rwriter.writerow([name, pseudo.patient_id(r.key()),
                                              pseudo.uid(r.study_instance_uid),
                                              len(residual_risk(cleaned, dictionary))])
            if entries:
                self._audit.write(entries)
            yield from ready
        manifest_bytes = manifest.getvalue().encode()
        summary.manifest_sha256 = hashlib.sha256(manifest_bytes).hexdigest()
        yield "manifest.csv", manifest_bytes
        yield "reports.csv", reports.getvalue().encode()
        yield "manifest.sha256", f"{summary.manifest_sha256}  manifest.csv\n".encode()
        with self._db.write() as s:
            repo.finish_export(s, export_id, finished_at=datetime.now(UTC),
                               exported=summary.exported, excluded=summary.excluded,
                               refused=summary.refused,
                               manifest_sha256=summary.manifest_sha256)
            self._audit.record(s, actor=actor, action="research.export.finished",
                               outcome="success", resource_type="research_project",
                               resource_uid=view.id,
                               detail={"exported": summary.exported,
                                       "excluded": summary.excluded,
                                       "refused": summary.refused,
                                       "manifest_sha256": summary.manifest_sha256})

    def _one(self, r: CohortRow, options: DeidOptions, pseudo: Pseudonymiser,
             dictionary: dict[str, str], writer: Any,
             summary: ExportSummary) -> tuple[str, bytes] | None:
        try:
            with self._blobs.open(r.blob_key) as fh:
                ds = pydicom.dcmread(fh)
        except (BlobStoreError, OSError) as exc:
            raise ResourceUnavailableError(f"an object could not be read: {exc}") from exc
        try:
            result = deidentify(ds, options, pseudo, patient_key=r.key(),
                                dictionary=dictionary)
            if result.dataset is not None:
                buf = io.BytesIO()
                result.dataset.save_as(buf, enforce_file_format=True)
        except Exception as exc:  # one odd object must not break the whole archive
            # Left out, and said so in the manifest; nothing of it leaves.
            summary.excluded += 1
            writer.writerow(["", pseudo.patient_id(r.key()), "", "", "", "", "",
                             f"de-identification failed: {type(exc).__name__}", ""])
            return None
        if result.dataset is None:
            summary.excluded += 1
            writer.writerow(["", result.pseudo_patient_id, "", "", "",
                             str(ds.get("Modality", "")), result.burned_in.value,
                             result.reason, ""])
            return None
        out = result.dataset
        data = buf.getvalue()
        name = f"{out.PatientID}/{out.StudyInstanceUID}/{out.SOPInstanceUID}.dcm"
        writer.writerow([name, out.PatientID, out.StudyInstanceUID, out.SeriesInstanceUID,
                         out.SOPInstanceUID, str(out.get("Modality", "")),
                         result.burned_in.value, result.reason,
                         hashlib.sha256(data).hexdigest()])
        summary.exported += 1
        return name, data


def _put(store: BlobStore, name: str, data: bytes) -> None:
    """Put one file durably (the store's ``put_file`` takes a path)."""
    fd, tmp = tempfile.mkstemp(prefix="cloudfilm-export-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        store.put_file(name, Path(tmp), move=True)
    except BlobStoreError as exc:
        raise ResourceUnavailableError(f"the export target refused {name}: {exc}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
