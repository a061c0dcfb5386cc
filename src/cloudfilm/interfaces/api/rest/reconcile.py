"""REST API of the reconciliation queue (``/api/v1/reconciliation``): objects stored but
held out of the index (no PatientID, or a study UID another hospital holds). A hospital
(credential, hospital administrator) sees and settles its own items, platform
administrators every hospital's; the service decides and audits."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from cloudfilm.interfaces.api.auth import CurrentActor
from cloudfilm.services.archive.reconcile import ReconciliationService
from cloudfilm.services.container import Services
from cloudfilm.services.errors import ResourceUnavailableError

PREFIX = "/api/v1/reconciliation"
router = APIRouter()

State = Literal["open", "assigned", "copy", "own-study", "all"]


class Assignment(BaseModel):
    """Whose object it is: the hospital's local patient ID (with its issuer, if any), or a
    national ID the patient index links to a record of that hospital."""

    patient_id: str = Field("", max_length=64)
    issuer: str = Field("", max_length=64)
    national_id: str = Field("", max_length=32)


def _queue(request: Request) -> ReconciliationService:
    services: Services = request.app.state.services
    if services.reconcile is None:
        raise ResourceUnavailableError("the reconciliation queue is not configured")
    return services.reconcile


@router.get("", summary="Held objects the caller may settle (own hospital; administrators: "
            "any)")
def list_items(request: Request, actor: CurrentActor, state: State = "open",
               hospital: str | None = None, after: int = Query(0, ge=0),
               limit: int = Query(100, ge=1, le=500)) -> list[dict[str, Any]]:
    items = _queue(request).list(actor=actor, state=None if state == "all" else state,
                                 hospital_code=hospital, limit=limit, after_id=after)
    return [i.as_json() for i in items]


@router.get("/{item_id}", summary="One held object")
def get_item(request: Request, actor: CurrentActor, item_id: int) -> dict[str, Any]:
    return _queue(request).get(item_id, actor=actor).as_json()


@router.post("/{item_id}/assign", summary="File an object without PatientID under a patient")
def assign(request: Request, actor: CurrentActor, item_id: int,
           body: Assignment) -> dict[str, Any]:
    return _queue(request).assign(item_id, actor=actor, patient_id=body.patient_id,
                                  issuer=body.issuer, national_id=body.national_id).as_json()


@router.post("/{item_id}/copy", summary="Close a study-UID clash as a genuine copy of the "
             "other hospital's study (nothing is added; no access is given)")
def mark_copy(request: Request, actor: CurrentActor, item_id: int) -> dict[str, Any]:
    return _queue(request).mark_copy(item_id, actor=actor).as_json()


@router.post("/{item_id}/keep", summary="File a study-UID clash as the hospital's own study "
             "under new UIDs")
def keep_own(request: Request, actor: CurrentActor, item_id: int) -> dict[str, Any]:
    return _queue(request).keep_own(item_id, actor=actor).as_json()
