"""The one policy decision point: may this actor do this, to this study or report?

Every exit door reaches it through the services (``QueryService.search``,
``RetrieveService.locate/metadata/frames/rendered/bulkdata``, ``ReportService``), which call
it themselves, so no door (QIDO, WADO-RS/URI, C-FIND, C-MOVE, C-GET, REST, a portal) can
forget it.

Two questions, one after the other:

1. Does one of the actor's roles grant the :class:`~cloudfilm.services.kernel.Permission`
   (``ROLE_PERMISSIONS`` in ``services.kernel.actor``)? :meth:`AccessPolicy.require`
   answers it for permissions without a resource (manage hospitals, read the audit
   trail, read the SMS outbox...).
2. For patient data: is this study or report in the actor's scope (own hospital, own
   records, granted)? The rules live in ``services.access.rules``, which yields both the
   single decision (:meth:`AccessPolicy.decide`) and the search restriction
   (:meth:`AccessPolicy.filter`, :meth:`AccessPolicy.report_filter`) from one scope.

:meth:`AccessPolicy.enforce` decides, commits the audit record and raises
:class:`~cloudfilm.services.errors.NotAuthorizedError` on a refusal. A refused request does
not say whether the study exists ("absent" and "not yours" are the same refusal; the audit
record keeps the difference).
"""

from __future__ import annotations

import functools
import importlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import ColumnElement

from cloudfilm.infrastructure.db import access_repository as repo
from cloudfilm.infrastructure.db import ai_repository
from cloudfilm.services.access.rules import Facts, Grants, Scope, scope_of
from cloudfilm.services.errors import NotAuthorizedError
from cloudfilm.services.kernel.actor import Actor, Permission, Role

if TYPE_CHECKING:
    from cloudfilm.services.access.audit import AuditService

logger = logging.getLogger(__name__)

ResourceType = Literal["study", "series", "instance"]
Scopes = Grants
ScopeLookup = Callable[..., Grants]
"""``(conn, *, doctor_account_id, resident_ids, now) -> {resident_id: UIDs or None}``."""

PRIVILEGED = frozenset({"operator", "admin"})
"""Kept for callers of the old API; decisions use ``Permission.READ_ANY_PATIENT``."""


@dataclass(frozen=True, slots=True)
class Resource:
    """A study, series or instance named by its UIDs (the study UID is always known)."""

    type: ResourceType
    study_uid: str
    series_uid: str | None = None
    sop_uid: str | None = None

    @property
    def uid(self) -> str:
        """The most specific UID (what the audit trail records)."""
        return self.sop_uid or self.series_uid or self.study_uid

    @classmethod
    def of(cls, study_uid: str, series_uid: str | None = None,
           sop_uid: str | None = None) -> Resource:
        kind: ResourceType = ("instance" if sop_uid is not None
                              else "series" if series_uid is not None else "study")
        return cls(kind, study_uid, series_uid, sop_uid)


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer for one resource.

    ``exists`` is False when no such study is stored; for an actor without
    ``READ_ANY_PATIENT`` that is a refusal like any other (``reason="absent"``), so that
    guessing UIDs reveals nothing.
    """

    allowed: bool
    reason: str
    exists: bool
    resident_id: int | None = None
    study_hospital_id: int | None = None


def _no_grants(conn: Any, *, doctor_account_id: int, resident_ids: Sequence[int] | None,
               now: datetime) -> Grants:
    return {}


class AccessPolicy:
    """Decides (:meth:`decide`, :meth:`enforce`, :meth:`require`) and restricts searches
    (:meth:`filter`, :meth:`report_filter`).

    Parameters
    ----------
    scopes
        The grant look-up; default ``infrastructure.db.grant_repository.active_scopes``
        (imported on first use; while it does not exist, doctors have no grants).
    clock
        Returns the current time (UTC); tests pass a fixed one.
    audit
        Where :meth:`enforce` and :meth:`require` record; set by the composition root
        (``bind_audit``) because the audit service is built beside the policy.
    """

    def __init__(self, *, scopes: ScopeLookup | None = None,
                 clock: Callable[[], datetime] | None = None,
                 audit: AuditService | None = None) -> None:
        self._scopes = scopes
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._audit = audit

    def bind_audit(self, audit: AuditService) -> None:
        self._audit = audit

    # -- grants ---------------------------------------------------------------------------

    def _scope_lookup(self) -> ScopeLookup:
        if self._scopes is None:
            with self._lock:
                if self._scopes is None:
                    self._scopes = _default_scopes()
        return self._scopes

    def grants(self, conn: Any, actor: Actor,
               resident_ids: Sequence[int] | None = None) -> Grants:
        """Active grants of a doctor (resident id -> UIDs or None), ``{}`` for anyone else."""
        if not actor.has(Role.DOCTOR) or actor.account_id is None:
            return {}
        return self._scope_lookup()(conn, doctor_account_id=actor.account_id,
                                    resident_ids=resident_ids, now=self._clock())

    def scope(self, conn: Any, actor: Actor) -> Scope:
        """The actor's whole scope (with all its active grants)."""
        return scope_of(actor, self.grants(conn, actor))

    # -- decisions ------------------------------------------------------------------------

    def decide(self, conn: Any, actor: Actor, permission: Permission,
               resource: Resource | Facts | None) -> Decision:
        """Decide whether ``actor`` may use ``permission`` on ``resource``.

        ``resource`` is a study, series or instance (its facts are looked up: one indexed
        query, plus the grant look-up for a doctor and another hospital's study), the
        :class:`Facts` of a report (:meth:`held_report_facts` for one waiting for its
        study), or None for something the caller looked up and did not find. Never raises
        for a refusal.
        """
        facts: Facts | None = resource if isinstance(resource, Facts) else None
        if isinstance(resource, Resource):
            found = repo.study_facts(conn, resource.study_uid)
            if found is not None:
                _, hospital_id, hospital_code, resident_id = found
                facts = Facts(hospital_id, hospital_code, resident_id, resource.study_uid)
        if facts is None:
            if actor.can(Permission.READ_ANY_PATIENT) and actor.can(permission):
                return Decision(True, actor.kind, exists=False)
            return Decision(False, "absent", exists=False)
        if not actor.can(permission):
            reason = "not-permitted" if actor.roles else "unknown-actor"
            return Decision(False, reason, True, facts.resident_id, facts.hospital_id)
        allowed, reason = scope_of(actor).admits(facts)
        if not allowed and actor.has(Role.DOCTOR) and facts.resident_id is not None:
            # Grants only matter past the own-hospital rule: one look-up, for this resident.
            grants = self.grants(conn, actor, [facts.resident_id])
            allowed, reason = scope_of(actor, grants).admits(facts)
        if not allowed and actor.has(Role.AI_ALGORITHM):
            allowed, reason = self._ai_admits(conn, actor, facts)
        return Decision(allowed, reason, True, facts.resident_id, facts.hospital_id)

    @staticmethod
    def _ai_admits(conn: Any, actor: Actor, facts: Facts) -> tuple[bool, str]:
        """An AI algorithm reads a study only through a workitem it holds IN PROGRESS, while
        approved and enabled by the study's hospital, and while the resident has not
        refused research/AI use (read per request, like a doctor's grants)."""
        if facts.study_uid and actor.algorithm_id and ai_repository.covers(
                conn, actor.algorithm_id, facts.study_uid):
            return True, "ai-workitem"
        return False, "no-ai-workitem"

    def enforce(self, conn: Any, actor: Actor, permission: Permission,
                resource: Resource | Facts | None, *, action: str,
                audit_type: str | None = None, audit_uid: str | None = None,
                detail: dict[str, Any] | Callable[[Decision], dict[str, Any]] | None = None,
                refusal: str = "") -> Decision:
        """Decide, commit the audit record (the decision's transaction on PostgreSQL, see
        ``AuditService.write``), and raise on a refusal.

        ``detail`` is the record's detail, or a function of the decision that returns it:
        it runs between the decision and the record, on the same connection, so a read
        path can fetch what it will return (when allowed) and record how much it was. A
        decision that allows reading something absent (``exists`` False: only with
        ``READ_ANY_PATIENT``) is recorded as allowed and returned; the caller answers "not
        found".

        Raises
        ------
        NotAuthorizedError
            The actor may not; the message does not say whether the resource exists.
        ResourceUnavailableError
            The record could not be written, so nothing may be returned.
        """
        from cloudfilm.services.access.audit import AuditEntry

        decision = self.decide(conn, actor, permission, resource)
        rtype = audit_type or (resource.type if isinstance(resource, Resource) else "report")
        uid = audit_uid if audit_uid is not None else (
            resource.uid if isinstance(resource, Resource)
            else resource.study_uid or "" if resource is not None else "")
        extra = detail(decision) if callable(detail) else detail
        self._require_audit().write(conn=conn, entries=[AuditEntry(
            actor, action, "allowed" if decision.allowed else "denied", rtype, uid,
            resident_id=decision.resident_id, reason=decision.reason, detail=extra or {})])
        if not decision.allowed:
            raise NotAuthorizedError(refusal or f"{rtype} {uid} is not in the archive or you "
                                     "are not authorised to see it")
        return decision

    def require(self, actor: Actor, permission: Permission, *, action: str,
                message: str = "", conn: Any = None) -> None:
        """Refuse (audited) unless one of the actor's roles grants ``permission``.

        For permissions without a resource; the permitted action records itself where it
        is worth a record (reading the audit trail does). A refusal is recorded on
        ``conn`` when given (the caller's write transaction), else in its own.

        Raises
        ------
        NotAuthorizedError
            With ``message`` (or a generic one naming the permission).
        """
        if actor.can(permission):
            return
        from cloudfilm.services.access.audit import AuditEntry

        entry = AuditEntry(actor, action[:32], "denied", reason="not-permitted",
                           detail={"permission": permission.value})
        audit = self._require_audit()
        if conn is not None:
            audit.record_many(conn, [entry])
        else:
            audit.write([entry])
        raise NotAuthorizedError(message or f"you may not do this ({permission.value})")

    def _require_audit(self) -> AuditService:
        if self._audit is None:
            raise RuntimeError("AccessPolicy has no audit service (call bind_audit)")
        return self._audit

    # -- the old entry points (same rules) --------------------------------------------------

    def authorize(self, conn: Any, actor: Actor, action: str, resource: Resource) -> Decision:
        """May ``actor`` see ``resource``? (``decide`` with ``READ_STUDY``; ``action`` is
        what the caller records.)"""
        return self.decide(conn, actor, Permission.READ_STUDY, resource)

    def authorize_held_report(self, conn: Any, actor: Actor, *, hospital_id: int,
                              hospital_code: str, patient_fk: int | None) -> Decision:
        """Decide on a report that waits for its study (no study to decide on yet): its own
        hospital, the resident it is linked to, a doctor with a grant to *all* of that
        resident's records, and the privileged see it."""
        return self.decide(conn, actor, Permission.READ_REPORT, self.held_report_facts(
            conn, hospital_id=hospital_id, hospital_code=hospital_code,
            patient_fk=patient_fk))

    @staticmethod
    def held_report_facts(conn: Any, *, hospital_id: int, hospital_code: str,
                          patient_fk: int | None) -> Facts:
        """The facts of a report that waits for its study (one look-up: its resident)."""
        return Facts(hospital_id, hospital_code, repo.patient_resident(conn, patient_fk), None)

    # -- searches -------------------------------------------------------------------------

    def report_filter(self, conn: Any, actor: Actor) -> ColumnElement[bool] | None:
        """The SQL restriction on ``report`` for a report search by ``actor``; None:
        everything."""
        if not actor.can(Permission.READ_REPORT):
            return repo.visible_reports()
        return self.scope(conn, actor).predicate(repo.visible_reports)

    def filter(self, conn: Any, actor: Actor) -> ColumnElement[bool] | None:
        """The SQL restriction on ``study`` for a search by ``actor``; None: everything.

        Applied inside the search statement, so LIMIT/OFFSET count visible rows only and
        the cost is one indexed predicate (plus one grant look-up for a doctor).
        """
        if not actor.can(Permission.READ_STUDY):
            return repo.visible_studies()
        if actor.has(Role.AI_ALGORITHM):
            # The studies of its workitems in progress (same rule as _ai_admits).
            return (ai_repository.covered_studies(actor.algorithm_id) if actor.algorithm_id
                    else repo.visible_studies())
        scope = self.scope(conn, actor)
        people = sorted({*scope.residents, *scope.granted_all, *scope.named})
        if not people:
            return scope.predicate(repo.visible_studies)
        # The linked records as values (one look-up): the search then reads only the
        # visible studies' index entries instead of filtering a whole date range.
        patients = repo.linked_patient_ids(conn, people)
        return scope.predicate(functools.partial(repo.visible_studies, patients=patients))


def _default_scopes() -> ScopeLookup:
    try:
        module = importlib.import_module("cloudfilm.infrastructure.db.grant_repository")
        found: ScopeLookup = module.active_scopes
        return found
    except (ImportError, AttributeError):
        logger.warning("cloudfilm.access.no_grant_repository",
                       extra={"effect": "doctors see only their own hospital's studies"})
        return _no_grants
