"""The one policy decision point: may this actor see this study?

Every exit door reaches it through the archive services (``QueryService.search``,
``RetrieveService.locate/metadata/frames/rendered/bulkdata``), which call it themselves, so
no door (QIDO, WADO-RS/URI, C-FIND, C-MOVE, C-GET, a portal) can forget it.

Rules (a study is the unit; its series and instances follow it):

- ``operator`` (the embedded platform's local operator) and ``admin`` see everything;
  every access is audited like anyone else's.
- ``hospital`` (an API credential or a registered AE title) sees the studies it produced
  (``study.hospital_id``). Retrieving another hospital's study as a *system* needs a grant
  to a system, which does not exist yet: hospital systems are kept to their own studies.
- ``doctor`` sees the studies of his own hospital and, of other hospitals, only those an
  active, unexpired, unrevoked grant of the patient (or break-glass) covers
  (``grant_repository.active_scopes``).
- ``resident`` sees the studies of patient records linked to ``actor.resident_ids``
  (themself and family members they may act for).
- Anything else, or a study that is not linked to anybody (for person actors), is refused:
  unknown means no.

A refused single-resource request does not say whether the study exists: the services
raise :class:`~cloudfilm.services.errors.NotAuthorizedError` both for "absent" and for
"not yours" (HTTP 403 / DIMSE 0x0124), and the audit record keeps the difference.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement

from cloudfilm.infrastructure.db import access_repository as repo
from cloudfilm.services.access.actor import Actor

logger = logging.getLogger(__name__)

ResourceType = Literal["study", "series", "instance"]
Scopes = Mapping[int, frozenset[str] | None]
ScopeLookup = Callable[..., Scopes]
"""``(conn, *, doctor_account_id, resident_ids, now) -> {resident_id: UIDs or None}``."""

PRIVILEGED = frozenset({"operator", "admin"})


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

    ``exists`` is False when no such study is stored; for a non-privileged actor that is
    a refusal like any other (``reason="absent"``), so that guessing UIDs reveals nothing.
    """

    allowed: bool
    reason: str
    exists: bool
    resident_id: int | None = None
    study_hospital_id: int | None = None


def _no_grants(conn: Any, *, doctor_account_id: int, resident_ids: Sequence[int] | None,
               now: datetime) -> Scopes:
    return {}


class AccessPolicy:
    """Decides single resources (:meth:`authorize`) and restricts searches (:meth:`filter`).

    Parameters
    ----------
    scopes
        The grant look-up; default ``infrastructure.db.grant_repository.active_scopes``
        (imported on first use; while it does not exist, doctors have no grants).
    clock
        Returns the current time (UTC); tests pass a fixed one.
    """

    def __init__(self, *, scopes: ScopeLookup | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._scopes = scopes
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()

    # -- grants ---------------------------------------------------------------------------

    def _scope_lookup(self) -> ScopeLookup:
        if self._scopes is None:
            with self._lock:
                if self._scopes is None:
                    self._scopes = _default_scopes()
        return self._scopes

    def grants(self, conn: Any, actor: Actor,
               resident_ids: Sequence[int] | None = None) -> Scopes:
        """Active grants of a doctor (resident id -> UIDs or None), ``{}`` for anyone else."""
        if actor.kind != "doctor" or actor.account_id is None:
            return {}
        return self._scope_lookup()(conn, doctor_account_id=actor.account_id,
                                    resident_ids=resident_ids, now=self._clock())

    # -- decisions ------------------------------------------------------------------------

    def authorize(self, conn: Any, actor: Actor, action: str, resource: Resource) -> Decision:
        """Decide whether ``actor`` may perform ``action`` on ``resource``.

        Parameters
        ----------
        conn
            A Core connection or Session (reads only: one indexed look-up, plus the grant
            look-up for a doctor and another hospital's study).
        actor
            Who asks, as the door authenticated it.
        action
            What for (``retrieve``, ``metadata``, ``render``, ...); recorded, not used by the
            rules yet (every rule is "may see").
        resource
            The study, series or instance.

        Returns
        -------
        Decision
            Never raises for a refusal; the caller audits, then raises.
        """
        facts = repo.study_facts(conn, resource.study_uid)
        if facts is None:
            allowed = actor.kind in PRIVILEGED
            return Decision(allowed, actor.kind if allowed else "absent", exists=False)
        _, hospital_id, hospital_code, resident_id = facts
        allowed, reason = self._rule(conn, actor, resource.study_uid, hospital_id,
                                     hospital_code, resident_id)
        return Decision(allowed, reason, exists=True, resident_id=resident_id,
                        study_hospital_id=hospital_id)

    def _rule(self, conn: Any, actor: Actor, study_uid: str, hospital_id: int,
              hospital_code: str, resident_id: int | None) -> tuple[bool, str]:
        if actor.kind in PRIVILEGED:
            return True, actor.kind
        own_hospital = (hospital_id == actor.hospital_id if actor.hospital_id is not None
                        else bool(actor.hospital_code) and hospital_code == actor.hospital_code)
        if actor.kind == "hospital":
            return (True, "own-hospital") if own_hospital else (False, "other-hospital")
        if actor.kind == "resident":
            if resident_id is not None and resident_id in actor.resident_ids:
                return True, "own-record"
            return False, "not-own-record"
        if actor.kind == "doctor":
            if own_hospital:
                return True, "own-hospital"
            if resident_id is None:
                return False, "unlinked"
            scope = self.grants(conn, actor, [resident_id])
            if resident_id not in scope:
                return False, "no-grant"
            granted = scope[resident_id]
            if granted is None or study_uid in granted:
                return True, "grant"
            return False, "not-in-grant"
        return False, "unknown-actor"

    def authorize_held_report(self, conn: Any, actor: Actor, *, hospital_id: int,
                              hospital_code: str, patient_fk: int | None) -> Decision:
        """Decide on a report that waits for its study (no study to decide on yet).

        Its own hospital (systems and doctors) and the privileged see it; the resident its
        patient record is linked to sees it; another hospital's doctor needs a grant to
        *all* of that resident's records.
        """
        resident_id = repo.patient_resident(conn, patient_fk)
        if actor.kind in PRIVILEGED:
            return Decision(True, actor.kind, True, resident_id, hospital_id)
        own_hospital = (hospital_id == actor.hospital_id if actor.hospital_id is not None
                        else bool(actor.hospital_code) and hospital_code == actor.hospital_code)
        allowed, reason = False, "unknown-actor"
        if actor.kind in ("hospital", "doctor") and own_hospital:
            allowed, reason = True, "own-hospital"
        elif actor.kind == "hospital":
            reason = "other-hospital"
        elif actor.kind == "resident":
            allowed = resident_id is not None and resident_id in actor.resident_ids
            reason = "own-record" if allowed else "not-own-record"
        elif actor.kind == "doctor":
            if resident_id is None:
                reason = "unlinked"
            else:
                scope = self.grants(conn, actor, [resident_id])
                allowed = resident_id in scope and scope[resident_id] is None
                reason = ("grant" if allowed else
                          "not-in-grant" if resident_id in scope else "no-grant")
        return Decision(allowed, reason, True, resident_id, hospital_id)

    def report_filter(self, conn: Any, actor: Actor) -> ColumnElement[bool] | None:
        """The SQL restriction on ``report`` for a report search by ``actor``; None:
        everything. Same rules as :meth:`filter` and :meth:`authorize_held_report`."""
        return self._restriction(conn, actor, repo.visible_reports)

    def filter(self, conn: Any, actor: Actor) -> ColumnElement[bool] | None:
        """The SQL restriction on ``study`` for a search by ``actor``; None: everything.

        Applied inside the search statement, so LIMIT/OFFSET count visible rows only and
        the cost is one indexed predicate (plus one grant look-up for a doctor).
        """
        return self._restriction(conn, actor, repo.visible_studies)

    def _restriction(self, conn: Any, actor: Actor,
                     visible: Callable[..., ColumnElement[bool]]
                     ) -> ColumnElement[bool] | None:
        if actor.kind in PRIVILEGED:
            return None
        if actor.kind == "hospital":
            return visible(hospital_id=actor.hospital_id, hospital_code=actor.hospital_code)
        if actor.kind == "resident":
            return visible(resident_ids=sorted(actor.resident_ids))
        if actor.kind == "doctor":
            return visible(hospital_id=actor.hospital_id, hospital_code=actor.hospital_code,
                           granted=self.grants(conn, actor))
        return visible()  # unknown means no


def _default_scopes() -> ScopeLookup:
    try:
        module = importlib.import_module("cloudfilm.infrastructure.db.grant_repository")
        found: ScopeLookup = module.active_scopes
        return found
    except (ImportError, AttributeError):
        logger.warning("cloudfilm.access.no_grant_repository",
                       extra={"effect": "doctors see only their own hospital's studies"})
        return _no_grants
