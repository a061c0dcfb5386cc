"""AI results as the people beside the images see them: finding sets by version for the
doctor's viewer (the current one, earlier ones reachable), the SEG's mask for its overlay,
and for the patient's portal only the sets a doctor confirmed.

A finding set is the output of one run (one workitem) of an algorithm on a study: an SR
(TID 1500) and, with findings, a SEG. Every read goes through the access policy like any
read of the study and leaves an audit record naming the resident.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pydicom

from cloudfilm.infrastructure.ai.seg import mask_runs
from cloudfilm.infrastructure.db import ai_repository as repo
from cloudfilm.infrastructure.db.session import Database
from cloudfilm.services.access.policy import AccessPolicy, Resource
from cloudfilm.services.archive.retrieve import RetrieveService
from cloudfilm.services.errors import NotFoundError
from cloudfilm.services.kernel.actor import Actor, Permission

SR_CLASS = "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


@dataclass(frozen=True, slots=True)
class FindingSet:
    """One run's results. ``current``: the newest version of this algorithm's results on
    the study; the others are kept, superseded."""

    workitem_uid: str
    algorithm: str
    algorithm_version: str
    vendor: str
    intended_use: str
    version: int
    current: bool
    created_at: datetime
    review: str
    """"" (not reviewed yet), "confirmed" or "rejected"."""
    reviewer_name: str
    reviewed_at: datetime | None
    sr_sop_instance_uid: str
    seg_sop_instance_uid: str
    seg_series_instance_uid: str
    findings: list[dict[str, Any]] = field(default_factory=list)
    ai_generated: bool = True


class AiResults:
    def __init__(self, db: Database, policy: AccessPolicy, retrieve: RetrieveService) -> None:
        self._db = db
        self._policy = policy
        self._retrieve = retrieve

    def _sets(self, study_uid: str) -> list[FindingSet]:
        by_run: dict[str, dict[str, Any]] = {}
        with self._db.read() as s:
            for r, a, w in repo.results(s, study_uid):
                entry = by_run.setdefault(w.uid, {
                    "workitem_uid": w.uid, "algorithm": a.name,
                    "algorithm_version": a.version, "vendor": a.vendor,
                    "intended_use": a.intended_use, "version": r.version,
                    "current": r.superseded_at is None, "created_at": r.created_at,
                    "review": r.review, "reviewer_name": r.reviewer_name,
                    "reviewed_at": r.reviewed_at, "sr_sop_instance_uid": "",
                    "seg_sop_instance_uid": "", "seg_series_instance_uid": "",
                    "findings": repo_findings(r.findings_json)})
                if r.sop_class_uid == SEG_CLASS:
                    entry["seg_sop_instance_uid"] = r.sop_instance_uid
                    entry["seg_series_instance_uid"] = r.series_instance_uid
                else:
                    entry["sr_sop_instance_uid"] = r.sop_instance_uid
        return [FindingSet(**e) for e in by_run.values()]

    def sets(self, actor: Actor, study_uid: str) -> list[FindingSet]:
        """Every finding set of a study, newest version first, for whoever may read the
        study (one decision, audited ``ai.results`` naming the resident)."""
        with self._db.reading() as conn:
            self._policy.enforce(conn, actor, Permission.READ_STUDY,
                                 Resource.of(study_uid[:64]), action="ai.results")
        return self._sets(study_uid)

    def for_portal(self, actor: Actor, study_uid: str) -> tuple[list[FindingSet], set[str]]:
        """What the patient's portal shows: only the sets a doctor confirmed (nothing
        before), and the AI series it never lists as images. Decided for the resident
        like the study page (audited ``ai.results``)."""
        with self._db.reading() as conn:
            self._policy.enforce(conn, actor, Permission.READ_STUDY,
                                 Resource.of(study_uid[:64]), action="ai.results",
                                 detail={"view": "portal"})
            hidden = repo.ai_series(conn, study_uid)
        return [s for s in self._sets(study_uid) if s.review == "confirmed"], hidden

    def hidden_series(self, study_uid: str) -> set[str]:
        """The series of a study that hold AI results: the patient's pages never offer
        them as images or downloads (only confirmed findings, as text). UIDs only, to
        filter what the caller's own policy decision already allowed."""
        with self._db.reading() as conn:
            return repo.ai_series(conn, study_uid)

    def mask(self, actor: Actor, study_uid: str, seg_sop_uid: str) -> list[dict[str, object]]:
        """The SEG of a finding set as runs per source image and segment (for the viewer's
        labelmap); read like any instance of the study (decided and audited by
        ``RetrieveService.locate``, action ``ai.segmentation``)."""
        with self._db.read() as s:
            row = repo.result(s, seg_sop_uid)
            known = (row is not None and row.sop_class_uid == SEG_CLASS
                     and row.study_instance_uid == study_uid)
            series_uid = row.series_instance_uid if row is not None else ""
        if not known:
            # Decided (and recorded) on the study all the same: a guess learns nothing.
            self._retrieve.locate(study_uid[:64], actor=actor, action="ai.segmentation")
            raise NotFoundError("no such AI segmentation in this study")
        [obj] = self._retrieve.locate(study_uid, series_uid, seg_sop_uid, actor=actor,
                                      action="ai.segmentation")
        data = b"".join(self._retrieve.object_chunks(obj))
        return mask_runs(pydicom.dcmread(io.BytesIO(data)))


def repo_findings(text: str) -> list[dict[str, Any]]:
    """The stored findings, each with its finding site (the SR's: the sample plug-in's
    findings are all coded SCT Lung)."""
    found = json.loads(text)
    return [dict(f, site="lung") for f in found] if isinstance(found, list) else []
