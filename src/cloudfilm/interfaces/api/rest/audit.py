"""REST API of the audit trail (``/api/v1``): a resident's "who looked at my data", the
administrators' view, and its FHIR AuditEvent export. Routes are ``def`` (thread pool); the
service decides who may read what."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Request

from cloudfilm.interfaces.api.auth import CurrentActor
from cloudfilm.services.container import Services

PREFIX = "/api/v1"
router = APIRouter()


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


@router.get("/me/access-log", summary="Who looked at my data (and my family members')")
def my_access_log(request: Request, actor: CurrentActor,
                  limit: int = Query(100, ge=1, le=500),
                  before: int | None = None) -> list[dict[str, Any]]:
    entries = _services(request).audit.access_log(actor, limit=limit, before=before)
    return [{**asdict(e), "at": e.at.isoformat()} for e in entries]


def _filters(actor_subject: str | None, action: str | None,
             outcome: Literal["allowed", "denied", "success", "failure"] | None,
             resource_uid: str | None, resident_id: int | None, since: datetime | None,
             until: datetime | None) -> dict[str, Any]:
    return {"actor_subject": actor_subject, "action": action, "outcome": outcome,
            "resource_uid": resource_uid, "resident_id": resident_id, "since": since,
            "until": until}


@router.get("/audit", summary="Audit records, newest first (administrators)")
def audit_events(request: Request, actor: CurrentActor, actor_subject: str | None = None,
                 action: str | None = None,
                 outcome: Literal["allowed", "denied", "success", "failure"] | None = None,
                 resource_uid: str | None = None, resident_id: int | None = None,
                 since: datetime | None = None, until: datetime | None = None,
                 limit: int = Query(100, ge=1, le=1000),
                 before: int | None = None) -> list[dict[str, Any]]:
    return _services(request).audit.events(
        actor, limit=limit, before=before,
        **_filters(actor_subject, action, outcome, resource_uid, resident_id, since, until))


@router.get("/audit/fhir", summary="Audit records as a FHIR R4 Bundle of AuditEvent")
def audit_fhir(request: Request, actor: CurrentActor, actor_subject: str | None = None,
               action: str | None = None,
               outcome: Literal["allowed", "denied", "success", "failure"] | None = None,
               resource_uid: str | None = None, resident_id: int | None = None,
               since: datetime | None = None, until: datetime | None = None,
               limit: int = Query(100, ge=1, le=1000),
               before: int | None = None) -> dict[str, Any]:
    return _services(request).audit.fhir_bundle(
        actor, limit=limit, before=before,
        **_filters(actor_subject, action, outcome, resource_uid, resident_id, since, until))
