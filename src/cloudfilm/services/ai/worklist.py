"""The UPS worklist (PS3.4 Annex CC) of AI work, the in-process runner and the results.

Life of a workitem: ingest writes the study into the outbox (``ai_pending_study``) in its
own transaction and goes on; once the study has been quiet for ``settle_seconds``,
:meth:`AiWork.schedule_due` makes one SCHEDULED workitem per approved algorithm that the
study's hospital enabled and whose modality/body-part filters match, unless the resident
refused research/AI use. An engine claims it (IN PROGRESS with a Transaction UID of its
own), reads the study over WADO-RS as itself (the access policy admits exactly the studies
of the workitems it holds in progress, and audits each read naming the resident), sends
its findings, and completes it (COMPLETED) or gives up (CANCELED). In-process plug-ins go
through the same steps, run by the background job system (huey) through :meth:`relay`.

Findings become a DICOM SR (TID 1500, highdicom) built here, stored through the ordinary
ingest as a new series of the study (so it inherits the study's access policy) and listed
in ``ai_result`` for doctors to confirm or reject.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.ai.plugin import Finding, load
from cloudfilm.infrastructure.ai.seg import segmentation
from cloudfilm.infrastructure.ai.sr import AlgorithmInfo, measurement_report
from cloudfilm.infrastructure.db import ai_repository as repo
from cloudfilm.infrastructure.db.models import AiAlgorithm, AiResult, AiWorkitem, Hospital
from cloudfilm.infrastructure.db.session import Database
from cloudfilm.infrastructure.deid import DeidOptions, Pseudonymiser, deidentify
from cloudfilm.infrastructure.storage.base import BlobStore
from cloudfilm.services.access.audit import AuditEntry, AuditService
from cloudfilm.services.access.policy import AccessPolicy, Resource
from cloudfilm.services.ai.registry import KEY_KIND, AlgorithmRegistry, actor_of
from cloudfilm.services.archive.ingest import IngestItem, IngestService
from cloudfilm.services.archive.retrieve import RetrieveService, StoredObject
from cloudfilm.services.errors import (
    CloudfilmError,
    InvalidInputError,
    NotAuthorizedError,
    NotFoundError,
    WorkitemStateError,
)
from cloudfilm.services.identity.protection import IdProtector
from cloudfilm.services.kernel.actor import Actor, Permission
from cloudfilm.services.kernel.sender import Sender

logger = logging.getLogger(__name__)

SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED = "SCHEDULED", "IN PROGRESS", "COMPLETED", \
    "CANCELED"
STATES = (SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED)
_MAX_ATTEMPTS = 3
# What the performer of an IN PROGRESS workitem may set through N-SET / Update Workitem
# (PS3.4 Table CC.2.5-3): its progress (0074,1002) and what it performed (0074,1216).
# Everything else of our workitems is fixed by the scheduler or by the state changes.
UPDATABLE = {"00741002": "ProcedureStepProgressInformationSequence",
             "00741216": "UnifiedProcedureStepPerformedProcedureSequence"}
_MAX_UPDATES = 64 * 1024
_ANY_TTL = 30.0


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


class _RefusedError(NotAuthorizedError):
    """Not this actor's workitem (the message is the audit reason)."""


class AiQueue(Protocol):
    """Where in-process workitems go to be run (huey in production, inline in tests)."""

    def enqueue_ai(self, workitem_uid: str) -> None: ...


@dataclass(frozen=True, slots=True)
class WorkitemView:
    uid: str
    algorithm_id: str
    algorithm: str
    study_instance_uid: str
    state: str
    reason: str
    created_at: datetime
    updated_at: datetime
    updates: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Attributes the engine set through Update Workitem (DICOM JSON by tag)."""


@dataclass(frozen=True, slots=True)
class ResultView:
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str
    sop_class_uid: str
    algorithm_id: str
    algorithm: str
    version: str
    intended_use: str
    findings: list[dict[str, Any]]
    created_at: datetime
    review: str
    """"" (not reviewed), "confirmed" or "rejected" by a doctor."""
    reviewed_by: str
    ai_generated: bool = True
    result_version: int = 1
    """Which run of the algorithm on the study these results come from (1, 2, ...)."""
    superseded: bool = False
    """A later run's results replaced these (kept, reachable, not current)."""
    reviewer_name: str = ""
    reviewed_at: datetime | None = None
    workitem_uid: str = ""


@dataclass(frozen=True, slots=True)
class _Algo:
    """What the runner needs of an algorithm once its session is closed."""

    id: int
    public_id: str
    name: str
    version: str
    vendor: str
    intended_use: str
    kind: str
    plugin: str
    modalities: str
    input: str
    key_enc: str


def _snap(a: AiAlgorithm) -> _Algo:
    return _Algo(a.id, a.public_id, a.name, a.version, a.vendor, a.intended_use, a.kind,
                 a.plugin, a.modalities, a.input, a.key_enc)


def _largest_series(pairs: Sequence[tuple[Dataset, Dataset]], modalities: set[str]
                    ) -> list[tuple[Dataset, Dataset]]:
    """The (original, as read) pairs of the largest image series of the wanted modalities."""
    by_series: dict[str, list[tuple[Dataset, Dataset]]] = {}
    for original, seen in pairs:
        if "PixelData" not in original:
            continue
        if modalities and str(original.get("Modality", "")).upper() not in modalities:
            continue
        by_series.setdefault(str(original.SeriesInstanceUID), []).append((original, seen))
    return max(by_series.values(), key=len, default=[])


def result_view(r: AiResult, a: AiAlgorithm, w: AiWorkitem) -> ResultView:
    return ResultView(r.sop_instance_uid, r.series_instance_uid, r.study_instance_uid,
                      r.sop_class_uid, a.public_id, a.name, a.version, a.intended_use,
                      json.loads(r.findings_json), r.created_at, r.review, r.reviewed_by,
                      result_version=r.version, superseded=r.superseded_at is not None,
                      reviewer_name=r.reviewer_name, reviewed_at=r.reviewed_at,
                      workitem_uid=w.uid)


def _wview(row: AiWorkitem, algo: AiAlgorithm) -> WorkitemView:
    return WorkitemView(uid=row.uid, algorithm_id=algo.public_id,
                        algorithm=f"{algo.name} {algo.version}",
                        study_instance_uid=row.study_instance_uid, state=row.state,
                        reason=row.reason, created_at=row.created_at,
                        updated_at=row.updated_at,
                        updates=json.loads(row.updates) if row.updates else {})


def _matches(algo: AiAlgorithm, modalities: set[str], body_parts: set[str]) -> bool:
    wanted_m, wanted_b = set(algo.modalities.split()), set(algo.body_parts.split())
    return ((not wanted_m or bool(wanted_m & modalities))
            and (not wanted_b or bool(wanted_b & body_parts)))


class AiWork:
    def __init__(self, db: Database, audit: AuditService, policy: AccessPolicy,
                 registry: AlgorithmRegistry, retrieve: RetrieveService,
                 ingest: IngestService, work_dir: Path, *, blobs: BlobStore,
                 protector: IdProtector, settle_seconds: float = 120.0) -> None:
        self._blobs = blobs
        self._protector = protector
        self._db = db
        self._audit = audit
        self._policy = policy
        self._registry = registry
        self._retrieve = retrieve
        self._ingest = ingest
        self._work_dir = work_dir
        self._settle = timedelta(seconds=settle_seconds)
        self._any: tuple[bool, float] = (False, 0.0)
        self._lock = threading.Lock()
        # Called with each workitem after a change commits (UPS event reports, in process).
        self.listeners: list[Callable[[WorkitemView], None]] = []

    def _emit(self, view: WorkitemView) -> WorkitemView:
        for listener in self.listeners:
            try:
                listener(view)
            except Exception:  # a subscriber's failure never undoes the change
                logger.exception("cloudfilm.ai.ups_event_failed")
        return view

    # -- the ingest outbox ---------------------------------------------------------------

    def _any_enabled(self, session: Session) -> bool:
        # Ingest pays nothing while no hospital runs any algorithm (read every 30 s).
        flag, until = self._any
        if time.monotonic() < until:
            return flag
        flag = repo.any_enabled(session)
        with self._lock:
            self._any = (flag, time.monotonic() + _ANY_TTL)
        return flag

    def forget_cache(self) -> None:
        self._any = (False, 0.0)

    def enqueue_in(self, session: Session, sop_uids: list[str]) -> None:
        """Called by ingest inside its transaction: the studies of these objects are
        matched once quiet. Never runs an algorithm (ingest must not wait)."""
        if sop_uids and self._any_enabled(session):
            repo.touch_studies(session, sop_uids, datetime.now(UTC) + self._settle)

    # -- scheduling ----------------------------------------------------------------------

    def schedule_due(self, *, limit: int = 500, now: datetime | None = None) -> int:
        """Make the workitems of the studies that are due; returns how many were made."""
        now = now or datetime.now(UTC)
        made: list[str] = []
        with self._db.write() as s:
            due = repo.take_due(s, now, limit)
            for study_uid in due:
                made += self._schedule(s, study_uid, now)
        if made and self.listeners:  # new workitems, for the global subscribers
            with self._db.read() as s:
                views = []
                for uid in made:
                    row = repo.workitem(s, uid)
                    algo = repo.algorithm_by_pk(s, row.algorithm_id) if row else None
                    if row is not None and algo is not None:
                        views.append(_wview(row, algo))
            for view in views:
                self._emit(view)
        return len(made)

    def _schedule(self, s: Session, study_uid: str, now: datetime,
                  only: AiAlgorithm | None = None, *, rerun: bool = False) -> list[str]:
        profile = repo.study_profile(s, study_uid)
        if profile is None:
            return []
        hospital_id, _resident, refused, modalities, body_parts = profile
        if refused:
            # Honoured: no workitem, so no algorithm ever reads this resident's study.
            return []
        made: list[str] = []
        for algo in repo.candidates(s, hospital_id):
            if only is not None and algo.id != only.id:
                continue
            if not _matches(algo, modalities, body_parts):
                continue
            run = 1
            if rerun:
                # A re-run: the next run number, once the earlier runs have ended (its
                # results become a new version; the earlier ones are kept, superseded).
                earlier = repo.runs(s, algo.id, study_uid)
                if any(w.state in (SCHEDULED, IN_PROGRESS) for w in earlier):
                    continue
                run = max((w.run for w in earlier), default=0) + 1
            uid = str(generate_uid())
            if repo.add_workitem(s, uid=uid, algorithm_id=algo.id, run=run,
                                 study_instance_uid=study_uid, hospital_id=hospital_id,
                                 state=SCHEDULED, transaction_uid="", queued=False,
                                 attempts=0, reason="", created_at=now, updated_at=now):
                made.append(uid)
        return made

    def create(self, actor: Actor, algorithm_id: str, study_uid: str) -> WorkitemView:
        """UPS-RS Create by an administrator: the same rules as automatic scheduling. For a
        study the algorithm already ran on, a re-run (its results become a new version)."""
        if not actor.can(Permission.MANAGE_AI):
            raise NotAuthorizedError("only a platform administrator creates AI workitems")
        now = datetime.now(UTC)
        with self._db.write() as s:
            algo = repo.algorithm(s, algorithm_id)
            if algo is None or algo.status != "approved":
                raise InvalidInputError("no approved AI algorithm with this id")
            made = self._schedule(s, study_uid, now, only=algo, rerun=True)
            if not made:
                raise InvalidInputError(
                    "no workitem: the study is absent, its hospital has not enabled the "
                    "algorithm, it does not match the algorithm's filters, the resident "
                    "refused research/AI use, or the algorithm has a workitem for it that "
                    "has not ended yet")
            row = repo.workitem(s, made[0])
            assert row is not None
            self._audit.record(s, actor=actor, action="ai.workitem.create",
                               outcome="success", resource_type="ups", resource_uid=row.uid,
                               detail={"study": study_uid, "algorithm": algorithm_id})
            view = _wview(row, algo)
        return self._emit(view)

    # -- the worklist (UPS-RS) -----------------------------------------------------------

    def _scope(self, actor: Actor) -> int | None:
        """The algorithm pk whose workitems the actor sees; None: all (administrators)."""
        if actor.can(Permission.MANAGE_AI):
            return None
        if actor.can(Permission.PERFORM_AI_WORK) and actor.algorithm_id:
            with self._db.read() as s:
                algo = repo.algorithm(s, actor.algorithm_id)
                if algo is not None:
                    return algo.id
        raise NotAuthorizedError("only an AI algorithm or a platform administrator sees "
                                 "the AI worklist")

    def search(self, actor: Actor, *, states: Sequence[str] = (), study_uid: str = "",
               limit: int = 100, offset: int = 0) -> list[WorkitemView]:
        bad = [st for st in states if st not in STATES]
        if bad:
            raise InvalidInputError(f"unknown Procedure Step State {bad}; one of {STATES}")
        scope = self._scope(actor)
        with self._db.read() as s:
            rows = repo.workitems(s, algorithm_pk=scope, states=states, study_uid=study_uid,
                                  limit=min(max(limit, 1), 1000), offset=max(offset, 0))
            algos = {a.id: a for a in repo.algorithms(s)}
            return [_wview(r, algos[r.algorithm_id]) for r in rows]

    def get(self, actor: Actor, uid: str) -> WorkitemView:
        scope = self._scope(actor)
        with self._db.read() as s:
            row = repo.workitem(s, uid)
            if row is None or (scope is not None and row.algorithm_id != scope):
                raise NotAuthorizedError("no such workitem for you")
            algo = repo.algorithm_by_pk(s, row.algorithm_id)
            assert algo is not None
            return _wview(row, algo)

    def _own(self, s: Session, actor: Actor, uid: str, *, lock: bool = True
             ) -> tuple[AiWorkitem, AiAlgorithm]:
        """The workitem if it belongs to the acting algorithm (refused, and audited,
        otherwise: claiming another algorithm's work is a refusal like a guessed UID)."""
        row = repo.workitem(s, uid, lock=lock)
        algo = repo.algorithm_by_pk(s, row.algorithm_id) if row is not None else None
        if (row is None or algo is None or not actor.can(Permission.PERFORM_AI_WORK)
                or algo.public_id != actor.algorithm_id):
            raise _RefusedError("not-yours" if row is not None else "absent")
        return row, algo

    @contextmanager
    def _audited(self, actor: Actor, uid: str) -> Iterator[None]:
        """Record a refusal of :meth:`_own` in its own transaction (the refused one rolls
        back), then refuse without saying whether the workitem exists."""
        try:
            yield
        except _RefusedError as exc:
            self._audit.write([AuditEntry(actor, "ai.workitem", "denied", "ups", uid[:64],
                                          reason=exc.message)])
            raise NotAuthorizedError("no such workitem for you") from None

    def claim(self, actor: Actor, uid: str, transaction_uid: str) -> WorkitemView:
        """SCHEDULED -> IN PROGRESS under the engine's Transaction UID (PS3.4 CC.2.1)."""
        if not transaction_uid or len(transaction_uid) > 64:
            raise InvalidInputError("a claim carries a Transaction UID (0008,1195)")
        with self._audited(actor, uid), self._db.write() as s:
                row, algo = self._own(s, actor, uid)
                if algo.status != "approved":
                    raise NotAuthorizedError("the algorithm is not approved")
                if row.state != SCHEDULED:
                    raise WorkitemStateError(f"the workitem is {row.state}, not SCHEDULED")
                profile = repo.study_profile(s, row.study_instance_uid)
                gone = profile is None or bool(profile[2]) or not any(
                    a.id == algo.id for a in repo.candidates(s, row.hospital_id))
                now = datetime.now(UTC)
                if gone:
                    # Refused since, or no longer enabled: the work is cancelled, not done.
                    row.state, row.reason, row.updated_at = CANCELED, "no longer allowed", now
                else:
                    row.state, row.transaction_uid, row.updated_at = \
                        IN_PROGRESS, transaction_uid, now
                self._audit.record(s, actor=actor, action="ai.workitem.claim",
                                   outcome="denied" if gone else "success",
                                   resource_type="ups", resource_uid=uid,
                                   resident_id=profile[1] if profile else None,
                                   reason="no-longer-allowed" if gone else "")
                view = _wview(row, algo)
        self._emit(view)
        if view.state == CANCELED:
            raise NotAuthorizedError("the study may no longer be read by this algorithm")
        return view

    def _in_progress(self, s: Session, actor: Actor, uid: str, transaction_uid: str, *,
                     lock: bool = True) -> tuple[AiWorkitem, AiAlgorithm]:
        row, algo = self._own(s, actor, uid, lock=lock)
        if row.state != IN_PROGRESS:
            raise WorkitemStateError(f"the workitem is {row.state}, not IN PROGRESS")
        if not transaction_uid or transaction_uid != row.transaction_uid:
            raise WorkitemStateError("the Transaction UID is not the one of the claim")
        return row, algo

    def update(self, actor: Actor, uid: str, transaction_uid: str,
               attributes: dict[str, Any]) -> WorkitemView:
        """Update Workitem (PS3.4 CC.2.6, PS3.18 11.6) by the engine holding it IN PROGRESS:
        the given attributes of :data:`UPDATABLE` replace the ones set before."""
        if not transaction_uid:
            raise InvalidInputError("the Transaction UID is missing")
        refused = sorted(set(attributes) - set(UPDATABLE))
        if refused:
            raise InvalidInputError("these attributes may not be updated: "
                                    + ", ".join(refused) + "; updatable are "
                                    + ", ".join(f"{t} ({n})" for t, n in UPDATABLE.items()))
        if not all(isinstance(v, dict) and v.get("vr") == "SQ" for v in attributes.values()):
            raise InvalidInputError("the updatable attributes are sequences (vr SQ)")
        with self._audited(actor, uid), self._db.write() as s:
            row, algo = self._in_progress(s, actor, uid, transaction_uid)
            merged = (json.loads(row.updates) if row.updates else {}) | attributes
            text = json.dumps(merged, separators=(",", ":"))
            if len(text) > _MAX_UPDATES:
                raise InvalidInputError(f"the updates exceed {_MAX_UPDATES} bytes")
            row.updates, row.updated_at = text, datetime.now(UTC)
            self._audit.record(s, actor=actor, action="ai.workitem.update",
                               outcome="success", resource_type="ups", resource_uid=uid)
            return _wview(row, algo)

    def complete(self, actor: Actor, uid: str, transaction_uid: str) -> WorkitemView:
        with self._audited(actor, uid), self._db.write() as s:
            row, algo = self._in_progress(s, actor, uid, transaction_uid)
            row.state, row.updated_at = COMPLETED, datetime.now(UTC)
            self._audit.record(s, actor=actor, action="ai.workitem.complete",
                               outcome="success", resource_type="ups", resource_uid=uid)
            view = _wview(row, algo)
        return self._emit(view)

    def cancel(self, actor: Actor, uid: str, *, transaction_uid: str = "",
               reason: str = "") -> WorkitemView:
        """A SCHEDULED workitem is cancelled by its algorithm or an administrator; one IN
        PROGRESS only by the algorithm holding it, with its Transaction UID."""
        with self._audited(actor, uid), self._db.write() as s:
            if actor.can(Permission.MANAGE_AI):
                row = repo.workitem(s, uid, lock=True)
                if row is None:
                    raise NotFoundError("no such workitem")
                algo = repo.algorithm_by_pk(s, row.algorithm_id)
                assert algo is not None
                if row.state != SCHEDULED:
                    raise WorkitemStateError(f"the workitem is {row.state}: only its "
                                             "performer cancels it now")
            else:
                row, algo = self._own(s, actor, uid)
                if row.state == IN_PROGRESS and transaction_uid != row.transaction_uid:
                    raise WorkitemStateError("the Transaction UID is not the one of the "
                                             "claim")
                if row.state not in (SCHEDULED, IN_PROGRESS):
                    raise WorkitemStateError(f"the workitem is {row.state}")
            row.state, row.reason, row.updated_at = CANCELED, reason[:1000], datetime.now(UTC)
            self._audit.record(s, actor=actor, action="ai.workitem.cancel",
                               outcome="success", resource_type="ups", resource_uid=uid,
                               detail={"reason": reason[:200]})
            view = _wview(row, algo)
        return self._emit(view)

    # -- results -------------------------------------------------------------------------

    def _read_series(self, actor: Actor, study_uid: str, modalities: set[str]
                     ) -> list[Dataset]:
        """The largest image series of the study (of the algorithm's modalities), read as
        the algorithm: one policy decision and one audit record naming the resident."""
        objects = self._retrieve.locate(study_uid, actor=actor, action="ai.read")
        by_series: dict[str, list[StoredObject]] = {}
        for obj in objects:
            by_series.setdefault(obj.series_instance_uid, []).append(obj)
        best: list[Dataset] = []
        for objs in by_series.values():
            datasets: list[Dataset] = []
            for obj in objs:
                data = b"".join(self._retrieve.object_chunks(obj, "*"))
                ds = pydicom.dcmread(io.BytesIO(data))
                if "PixelData" not in ds:
                    break
                if modalities and str(ds.get("Modality", "")).upper() not in modalities:
                    break
                datasets.append(ds)
            else:
                if len(datasets) > len(best):
                    best = datasets
        return best

    def _deidentified(self, actor: Actor, algo: _Algo, study_uid: str
                      ) -> list[tuple[Dataset, Dataset]]:
        """(original, de-identified) pairs of a study for an algorithm approved for
        de-identified input: the same rule as the policy's (a workitem in progress,
        approved, enabled, not refused), one audit record naming the resident, then the
        PS3.15 Annex E Basic Profile under the algorithm's own key (pseudonyms unlinkable
        to any research project's). Only the de-identified copies reach the algorithm."""
        with self._db.read() as s:
            allowed = repo.covers(s, algo.public_id, study_uid, deidentified=True)
            profile = repo.study_profile(s, study_uid)
            objects = repo.study_objects(s, study_uid) if allowed else []
        resident = profile[1] if profile is not None else None
        self._audit.write([AuditEntry(
            actor, "ai.read.deidentified", "allowed" if allowed else "denied", "study",
            study_uid, resident_id=resident, reason="ai-workitem" if allowed else
            "no-ai-workitem", detail={"objects": len(objects)})])
        if not allowed:
            raise NotAuthorizedError("no such workitem for you")
        pseudo = Pseudonymiser(bytes.fromhex(self._protector.decrypt(KEY_KIND,
                                                                     algo.key_enc)))
        pairs: list[tuple[Dataset, Dataset]] = []
        for _sop, key in objects:
            with self._blobs.open(key) as fh:
                original = pydicom.dcmread(fh)
            copy = pydicom.dcmread(io.BytesIO(_bytes(original)))
            result = deidentify(copy, DeidOptions(), pseudo,
                                patient_key=str(resident) if resident is not None else None)
            if result.dataset is not None:
                pairs.append((original, result.dataset))
        return pairs

    def deidentified_instances(self, actor: Actor, uid: str, transaction_uid: str
                               ) -> list[bytes]:
        """The de-identified objects of a workitem's study, for an external engine
        approved for de-identified input (Part 10 bytes)."""
        with self._audited(actor, uid), self._db.read() as s:
            row, live = self._in_progress(s, actor, uid, transaction_uid, lock=False)
            algo, study_uid = _snap(live), row.study_instance_uid
        if algo.input != "deidentified":
            raise InvalidInputError("this algorithm reads the original images over WADO-RS")
        return [_bytes(seen) for _, seen in self._deidentified(actor, algo, study_uid)]

    def submit_findings(self, actor: Actor, uid: str, transaction_uid: str,
                        findings: Sequence[Finding]) -> ResultView:
        """Store an engine's findings as a DICOM SR in the study (the workitem stays IN
        PROGRESS until completed)."""
        with self._audited(actor, uid), self._db.read() as s:
            row, live = self._in_progress(s, actor, uid, transaction_uid, lock=False)
            algo = _snap(live)
            study_uid, workitem_pk = row.study_instance_uid, row.id
            hospital = s.get(Hospital, row.hospital_id)
            assert hospital is not None
            sender = Sender(hospital.code, hospital.name, door="ai")
        if algo.input == "deidentified":
            # Findings name the pseudonymous images the engine got: back to the originals.
            pairs = self._deidentified(actor, algo, study_uid)
            back = {str(seen.SOPInstanceUID): str(orig.SOPInstanceUID) for orig, seen in pairs}
            findings = [dataclasses.replace(f, sop_instance_uid=back.get(
                f.sop_instance_uid, "?")) for f in findings]
            series = {str(o.SeriesInstanceUID) for o, _ in pairs
                      if str(o.SOPInstanceUID) in {f.sop_instance_uid for f in findings}}
            source = [o for o, _ in pairs if str(o.SeriesInstanceUID) in series]
        else:
            source = self._read_series(actor, study_uid, set(algo.modalities.split()))
        needed = {f.sop_instance_uid for f in findings}
        if not source or not needed <= {str(d.SOPInstanceUID) for d in source}:
            raise InvalidInputError("every finding names an image of the study's series "
                                    "the algorithm reads")
        return self._store(algo, workitem_pk, study_uid, sender, source, findings)

    def _store(self, algo: _Algo, workitem_pk: int, study_uid: str, sender: Sender,
               source: Sequence[Dataset], findings: Sequence[Finding]) -> ResultView:
        """Make the SR (and, with findings, the SEG), store them through ingest as new
        series of the study, and index them as AI results."""
        info = AlgorithmInfo(name=algo.name, version=algo.version, vendor=algo.vendor,
                             device_uid=str(generate_uid(entropy_srcs=["cloudfilm-ai",
                                                                       algo.public_id])))
        objects = [measurement_report(source, findings, info, series_uid=str(generate_uid()),
                                      sop_uid=str(generate_uid()))]
        if findings:
            try:
                objects.append(segmentation(source, findings, info,
                                            series_uid=str(generate_uid()),
                                            sop_uid=str(generate_uid())))
            except Exception as exc:  # e.g. not a regular volume: the SR alone, not nothing
                logger.info("cloudfilm.ai.no_segmentation", extra={"why": str(exc)})
        self._work_dir.mkdir(parents=True, exist_ok=True)
        items: list[IngestItem] = []
        for ds in objects:
            fd, name = tempfile.mkstemp(suffix=".dcm", dir=self._work_dir)
            os.close(fd)
            ds.save_as(name, enforce_file_format=True)
            items.append(IngestItem(Path(name), True, study_uid))
        stored = self._ingest.ingest_files(items, sender=sender)
        for item in items:
            item.path.unlink(missing_ok=True)  # moved into the store when it succeeded
        failed = [r for r in stored if isinstance(r, CloudfilmError)]
        if failed:
            raise failed[0]
        now = datetime.now(UTC)
        payload = [asdict(f) for f in findings]
        with self._db.write() as s:
            # A new version of this algorithm's results on the study; the current one (if
            # any) is kept and marked superseded in the same transaction.
            version = repo.next_version(s, algo.name, algo.vendor, study_uid)
            repo.supersede(s, algo.name, algo.vendor, study_uid, version, now)
            for ds in objects:
                repo.add_result(s, workitem_id=workitem_pk, study_instance_uid=study_uid,
                                series_instance_uid=str(ds.SeriesInstanceUID),
                                sop_instance_uid=str(ds.SOPInstanceUID),
                                sop_class_uid=str(ds.SOPClassUID),
                                findings_json=json.dumps(payload), created_at=now,
                                review="", reviewed_by="", version=version)
        sr = objects[0]
        return ResultView(str(sr.SOPInstanceUID), str(sr.SeriesInstanceUID), study_uid,
                          str(sr.SOPClassUID), algo.public_id, algo.name, algo.version,
                          algo.intended_use, payload, now, "", "",
                          result_version=version)

    def results(self, actor: Actor, study_uid: str) -> list[ResultView]:
        """The AI results of a study, for whoever may read the study (same decision, one
        audit record naming the resident)."""
        with self._db.reading() as conn:
            self._policy.enforce(conn, actor, Permission.READ_STUDY, Resource.of(study_uid),
                                 action="ai.results")
        with self._db.read() as s:
            return [result_view(r, a, w) for r, a, w in repo.results(s, study_uid)]

    def review(self, actor: Actor, sop_uid: str, confirmed: bool) -> str:
        """A doctor who may read the study confirms or rejects an AI finding set (the SR
        and SEG of one run, named by either), recorded with the doctor's name. Only the
        current version is reviewed: a superseded one is history."""
        if not actor.can(Permission.CONFIRM_AI_RESULT):
            raise NotAuthorizedError("only a doctor confirms AI results")
        with self._db.read() as s:
            found = repo.result(s, sop_uid)
            study_uid = found.study_instance_uid if found is not None else ""
        with self._db.reading() as conn:
            self._policy.enforce(conn, actor, Permission.READ_STUDY,
                                 Resource.of(study_uid or "absent"), action="ai.review")
        if not study_uid:
            raise NotFoundError("no such AI result")
        review = "confirmed" if confirmed else "rejected"
        now = datetime.now(UTC)
        with self._db.write() as s:
            row = repo.result(s, sop_uid, lock=True)
            assert row is not None
            if row.superseded_at is not None:
                raise WorkitemStateError("these AI results were superseded by a later run; "
                                         "review the current version")
            profile = repo.study_profile(s, row.study_instance_uid)
            for each in repo.results_of_workitem(s, row.workitem_id, lock=True):
                each.review, each.reviewed_by, each.reviewed_at = review, actor.subject, now
                each.reviewer_name = (actor.display or actor.subject)[:128]
            self._audit.record(s, actor=actor, action="ai.review", outcome="success",
                               resource_type="instance", resource_uid=sop_uid,
                               resident_id=profile[1] if profile else None,
                               detail={"review": review, "version": row.version})
        return review

    # -- in-process plug-ins (the background job system) ---------------------------------

    def relay(self, queue: AiQueue, *, limit: int = 200) -> int:
        """Schedule due studies and hand in-process workitems to the queue (huey)."""
        self.schedule_due()
        with self._db.write() as s:
            uids = repo.to_run(s, limit=limit)
        for uid in uids:
            queue.enqueue_ai(uid)
        return len(uids)

    def run_pending(self, *, now: datetime | None = None) -> dict[str, int]:
        """Schedule and run everything due, here (``cloudfilm ai run``, tests)."""
        self.schedule_due(now=now)
        with self._db.write() as s:
            uids = repo.to_run(s, limit=10_000)
        states: dict[str, int] = {}
        for uid in uids:
            state = self.run(uid)
            states[state] = states.get(state, 0) + 1
        return states

    def run(self, uid: str) -> str:
        """Run one in-process workitem as its algorithm: claim, read (audited), detect,
        store the SR, complete. A failure is retried by a later relay, then cancelled."""
        with self._db.read() as s:
            row = repo.workitem(s, uid)
            live = repo.algorithm_by_pk(s, row.algorithm_id) if row is not None else None
            if row is None or live is None or row.state != SCHEDULED or live.kind != "plugin":
                return row.state if row is not None else "gone"
            algo = _snap(live)
            workitem_pk, study_uid, hospital_pk = row.id, row.study_instance_uid, \
                row.hospital_id
        actor = actor_of(algo)
        transaction = str(generate_uid())
        try:
            self.claim(actor, uid, transaction)
        except (NotAuthorizedError, WorkitemStateError) as exc:
            logger.info("cloudfilm.ai.not_claimed", extra={"workitem": uid, "why": str(exc)})
            return CANCELED
        try:
            plugin = load(self._registry.plugin_spec(algo.plugin))
            with self._db.read() as s:
                hospital = s.get(Hospital, hospital_pk)
                assert hospital is not None
                sender = Sender(hospital.code, hospital.name, door="ai")
            if algo.input == "deidentified":
                pairs = _largest_series(self._deidentified(actor, algo, study_uid),
                                        set(algo.modalities.split()))
                source, seen = [o for o, _ in pairs], [d for _, d in pairs]
            else:
                source = seen = self._read_series(actor, study_uid,
                                                  set(algo.modalities.split()))
            if not source:
                self.cancel(actor, uid, transaction_uid=transaction,
                            reason="no series the algorithm can read")
                return CANCELED
            findings = plugin(seen)
            if algo.input == "deidentified":
                back = {str(d.SOPInstanceUID): str(o.SOPInstanceUID) for o, d in pairs}
                findings = [dataclasses.replace(f, sop_instance_uid=back[f.sop_instance_uid])
                            for f in findings]
            self._store(algo, workitem_pk, study_uid, sender, source, findings)
            self.complete(actor, uid, transaction)
            return COMPLETED
        except Exception as exc:
            logger.warning("cloudfilm.ai.run_failed", extra={"workitem": uid,
                                                             "error": repr(exc)[:300]})
            self._failed(uid, f"{type(exc).__name__}: {exc}"[:1000])
            return "failed"

    def _failed(self, uid: str, reason: str) -> None:
        with self._db.write() as s:
            row = repo.workitem(s, uid, lock=True)
            if row is None or row.state != IN_PROGRESS:
                return
            row.attempts += 1
            row.reason, row.updated_at = reason, datetime.now(UTC)
            if row.attempts >= _MAX_ATTEMPTS:
                row.state = CANCELED
            else:  # back to the worklist; the relay hands it over again
                row.state, row.transaction_uid, row.queued = SCHEDULED, "", False

