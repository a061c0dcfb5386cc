"""A resident's imaging timeline: their studies (and those of the family members they act
for) across hospitals, newest first, one page at a time.

The access policy's SQL restriction is part of every statement (a resident sees only
studies of patient records linked to them), and each page leaves one audit record naming
the studies shown, like a QIDO search would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cloudfilm.infrastructure.db import timeline_repository as repo
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError
from cloudfilm.services.access.audit import AuditEntry, AuditService, per_resident
from cloudfilm.services.access.policy import AccessPolicy, Resource
from cloudfilm.services.errors import (
    InvalidInputError,
    NotAuthorizedError,
    NotFoundError,
    ResourceUnavailableError,
)
from cloudfilm.services.kernel.actor import Actor, Role

MAX_PAGE = 50
# Series without pixels to show (structured reports, key objects, presentation states,
# encapsulated documents): no thumbnail, no viewer.
NON_IMAGE = frozenset({"SR", "KO", "PR", "DOC"})
_REPORT_RANK = {"preliminary": 1, "final": 2, "amended": 3}


@dataclass(frozen=True, slots=True)
class SeriesItem:
    series_instance_uid: str
    modality: str
    body_part: str
    description: str
    number: int | None
    instances: int
    thumbnail_sop_uid: str | None = None


@dataclass(frozen=True, slots=True)
class TimelineStudy:
    study_instance_uid: str
    study_date: str
    """DICOM DA (``YYYYMMDD``) or ``""``."""
    description: str
    hospital_name: str
    hospital_code: str
    modalities: tuple[str, ...]
    body_parts: tuple[str, ...]
    series: int
    instances: int
    size_bytes: int
    report_status: str
    """``none``, ``preliminary``, ``final`` or ``amended`` (the most advanced report)."""
    report_id: str | None
    thumbnail: tuple[str, str] | None
    """(series UID, SOP instance UID) of a representative image, or None."""
    resident_id: int | None = None
    """Whose study it is (a family member's, when the resident acts for several)."""


@dataclass(frozen=True, slots=True)
class HospitalChoice:
    id: int
    name: str
    code: str


@dataclass(frozen=True, slots=True)
class TimelinePage:
    studies: list[TimelineStudy]
    has_more: bool
    years: list[str]
    hospitals: list[HospitalChoice]
    modalities: list[str]


class TimelineService:
    """Pages of a resident's studies with their facets.

    Parameters
    ----------
    db, policy, audit
        The index, the access policy (its study restriction) and the audit trail.
    """

    def __init__(self, db: Database, policy: AccessPolicy, audit: AuditService) -> None:
        self._db = db
        self._policy = policy
        self._audit = audit

    def page(self, actor: Actor, *, year: str | None = None, hospital_id: int | None = None,
             modality: str | None = None, limit: int = 20, offset: int = 0) -> TimelinePage:
        """One page of the actor's visible studies, newest first; recorded before return.

        Raises
        ------
        NotAuthorizedError
            The actor is not a signed-in resident.
        InvalidInputError
            A malformed filter (year not 4 digits, negative offset).
        ResourceUnavailableError
            The index or the audit trail is unavailable.
        """
        if not actor.has(Role.RESIDENT) or not actor.resident_ids:
            raise NotAuthorizedError("the timeline is a signed-in resident's own")
        if year is not None and not (len(year) == 4 and year.isdigit()):
            raise InvalidInputError("year must be 4 digits")
        if offset < 0:
            raise InvalidInputError("offset must be >= 0")
        if modality is not None:
            modality = modality[:16]
        limit = max(1, min(limit, MAX_PAGE))
        try:
            with self._db.reading() as conn:
                visible = self._policy.filter(conn, actor)
                rows = repo.studies(conn, visible, year=year, hospital_id=hospital_id,
                                    modality=modality, limit=limit + 1, offset=offset)
                shown = rows[:limit]
                ids = [r.id for r in shown]
                series = repo.series_of(conn, ids)
                reports = repo.reports_of(conn, ids)
                thumbs: dict[int, tuple[str, str]] = {}
                for s in series:
                    if s.study_fk in thumbs or not s.num_instances or s.modality in NON_IMAGE:
                        continue
                    sop = repo.middle_instance(conn, s.id, s.num_instances)
                    if sop is not None:
                        thumbs[s.study_fk] = (s.series_instance_uid, sop)
                years, hospitals, modalities = repo.facets(conn, visible)
                # One record naming every family member shown, every UID listed (issue
                # 11, finding 5): each sees this page in their own "who looked".
                self._audit.write(conn=conn, entries=per_resident(
                    actor, "search", "study", "",
                    {r.study_instance_uid: r.resident_id for r in shown}, key="studies",
                    reason="resident", detail={"view": "portal.timeline", "offset": offset}))
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        by_study: dict[int, list[Any]] = {}
        for s in series:
            by_study.setdefault(s.study_fk, []).append(s)
        report_of: dict[int, tuple[str, str]] = {}
        for r in reports:
            best = report_of.get(r.study_fk)
            if best is None or _REPORT_RANK.get(r.status, 0) >= _REPORT_RANK.get(best[1], 0):
                report_of[r.study_fk] = (r.public_id, r.status)
        out = []
        for r in shown:
            mine = by_study.get(r.id, [])
            report = report_of.get(r.id)
            out.append(TimelineStudy(
                study_instance_uid=r.study_instance_uid, study_date=r.study_date or "",
                description=r.study_description or "", hospital_name=r.hospital_name or "",
                hospital_code=r.hospital_code,
                modalities=tuple(dict.fromkeys(s.modality for s in mine
                                               if s.modality)),
                body_parts=tuple(dict.fromkeys(
                    s.body_part_examined.upper() for s in mine
                    if s.body_part_examined)),
                series=r.num_series, instances=r.num_instances, size_bytes=r.size_bytes or 0,
                report_status=report[1] if report else "none",
                report_id=report[0] if report else None, thumbnail=thumbs.get(r.id),
                resident_id=r.resident_id))
        return TimelinePage(out, len(rows) > limit, years,
                            [HospitalChoice(h.id, h.name, h.code) for h in hospitals],
                            modalities)

    def study(self, actor: Actor, study_uid: str) -> tuple[TimelineStudy, list[SeriesItem]]:
        """One study as the study page shows it, with its series (each with a middle
        image for a thumbnail); decided by the policy and recorded before return.

        Raises
        ------
        NotAuthorizedError
            Not in the archive, or not the actor's to see (one answer for both).
        ResourceUnavailableError
            The index or the audit trail is unavailable.
        """
        resource = Resource.of(study_uid[:64])
        try:
            with self._db.reading() as conn:
                decision = self._policy.authorize(conn, actor, "metadata", resource)
                row = repo.study_by_uid(conn, study_uid) if decision.allowed else None
                series = repo.series_of(conn, [row.id]) if row is not None else []
                reports = repo.reports_of(conn, [row.id]) if row is not None else []
                items = [SeriesItem(
                    s.series_instance_uid, s.modality, (s.body_part_examined or "").upper(),
                    s.series_description or "", s.series_number, s.num_instances,
                    repo.middle_instance(conn, s.id, s.num_instances)
                    if s.modality not in NON_IMAGE else None) for s in series]
                self._audit.write(conn=conn, entries=[AuditEntry(
                    actor, "metadata", "allowed" if decision.allowed else "denied", "study",
                    resource.uid, resident_id=decision.resident_id, reason=decision.reason,
                    detail={"view": "portal.study"})])
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        if not decision.allowed:
            raise NotAuthorizedError(f"study {study_uid[:64]} is not in the archive or you "
                                     "are not authorised to see it")
        if row is None:
            raise NotFoundError(f"study {study_uid[:64]} is not in the archive")
        report = None
        for r in reports:
            if report is None or _REPORT_RANK.get(r.status, 0) >= _REPORT_RANK.get(report[1], 0):
                report = (r.public_id, r.status)
        first = next((i for i in items if i.thumbnail_sop_uid), None)
        summary = TimelineStudy(
            study_instance_uid=row.study_instance_uid, study_date=row.study_date or "",
            description=row.study_description or "", hospital_name=row.hospital_name or "",
            hospital_code=row.hospital_code,
            modalities=tuple(dict.fromkeys(i.modality for i in items if i.modality)),
            body_parts=tuple(dict.fromkeys(i.body_part for i in items if i.body_part)),
            series=row.num_series, instances=row.num_instances, size_bytes=row.size_bytes or 0,
            report_status=report[1] if report else "none",
            report_id=report[0] if report else None,
            thumbnail=(first.series_instance_uid, first.thumbnail_sop_uid)
            if first is not None and first.thumbnail_sop_uid else None)
        return summary, items
