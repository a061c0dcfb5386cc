"""REST API of exam mutual recognition (``/api/v1/recognition``).

The check and the decisions are for a hospital system (its credential) or a doctor (his
session); rules are changed by platform administrators; figures are an administrator's
(all hospitals) or a hospital's own. The service decides who may; routes are ``def`` (the
thread pool) because the service is synchronous.
"""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from cloudfilm.interfaces.api.auth import CurrentActor
from cloudfilm.services.container import Services
from cloudfilm.services.recognition.service import (
    REPEAT_REASONS,
    CheckRequest,
    require_rules_admin,
)

PREFIX = "/api/v1/recognition"
router = APIRouter()


def _svc(request: Request) -> Any:
    services: Services = request.app.state.services
    return services.recognition


class CheckIn(BaseModel):
    """The order being placed: the patient (national or local ID), the planned item or
    the hospital's own procedure code, and the ordering department."""

    national_id: str | None = Field(None, max_length=32)
    patient_id: str | None = Field(None, max_length=64)
    item_code: str | None = Field(None, max_length=32)
    procedure_code: str | None = Field(None, max_length=64)
    department: str = Field("", max_length=128)
    hospital_code: str | None = Field(None, max_length=64, description=(
        "Only for the local operator or an administrator acting for a hospital"))


class PriorOut(BaseModel):
    study_instance_uid: str
    study_date: str
    days_ago: int
    hospital_code: str
    hospital_name: str
    hospital_level: str
    item_code: str
    item_name_zh: str
    item_name_en: str
    report_status: str
    reason: str


class CheckOut(BaseModel):
    decision_id: str
    item_code: str
    item_name_zh: str
    item_name_en: str
    window_days: int
    priors: list[PriorOut]
    not_offered: dict[str, int]


class DecisionIn(BaseModel):
    decision: Literal["accepted", "repeat"]
    reason: Literal["", *REPEAT_REASONS] = ""  # type: ignore[valid-type]
    text: str = Field("", max_length=256)


class PerformedIn(BaseModel):
    performed_at: datetime | None = None


class ItemIn(BaseModel):
    name_zh: str | None = Field(None, max_length=128)
    name_en: str | None = Field(None, max_length=128)
    modality: str | None = Field(None, max_length=16)
    body_region: str | None = Field(None, max_length=32)
    procedure: Literal["plain", "contrast", "any"] | None = None
    window_days: int | None = Field(None, ge=1, le=3650)
    accept_levels: dict[str, list[str]] | None = None
    require_final_report: bool | None = None
    require_complete: bool | None = None
    require_qc: bool | None = None
    typical_dose_msv: float | None = Field(None, ge=0, le=100)
    active: bool | None = None


class TermIn(BaseModel):
    field: Literal["body_part", "description", "procedure_code", "modality", "technique"]
    pattern: str = Field(max_length=128)
    value: str = Field(max_length=32)
    match: Literal["exact", "contains"] = "exact"


class CodeMapIn(BaseModel):
    item_code: str = Field(max_length=32)


class PriceIn(BaseModel):
    price_yuan: float = Field(ge=0, le=1_000_000)


class QcIn(BaseModel):
    qc: Literal["", "passed", "failed"]


@router.post("/check", response_model=CheckOut,
             summary="Comparable recent exams of the patient this hospital should recognise")
def check(body: CheckIn, request: Request, actor: CurrentActor) -> Any:
    result = _svc(request).check(actor, CheckRequest(**body.model_dump()))
    return asdict(result)


@router.post("/decisions/{decision_id}", status_code=204,
             summary="Record the doctor's decision: prior accepted, or repeat with a reason")
def decide(decision_id: str, body: DecisionIn, request: Request,
           actor: CurrentActor) -> Response:
    _svc(request).decide(actor, decision_id, body.decision, reason=body.reason, text=body.text)
    return Response(status_code=204)


@router.post("/decisions/{decision_id}/performed", status_code=204,
             summary="Order feed: the exam of this check was performed")
def performed(decision_id: str, body: PerformedIn, request: Request,
              actor: CurrentActor) -> Response:
    _svc(request).performed(actor, decision_id, at=body.performed_at)
    return Response(status_code=204)


@router.get("/items", summary="The catalogue of recognisable items")
def items(request: Request, actor: CurrentActor) -> list[dict[str, Any]]:
    return [asdict(i) for i in _svc(request).items()]


@router.put("/items/{code}", summary="Create or change a catalogue item (administrators)")
def put_item(code: str, body: ItemIn, request: Request, actor: CurrentActor) -> dict[str, Any]:
    values = {k: v for k, v in body.model_dump().items() if v is not None}
    return asdict(_svc(request).put_item(actor, {**values, "code": code}))


@router.get("/terms", summary="The normalisation table")
def terms(request: Request, actor: CurrentActor,
          field: str | None = Query(None)) -> list[dict[str, str]]:
    return _svc(request).terms(field_name=field)  # type: ignore[no-any-return]


@router.put("/terms", status_code=204, summary="Add or change a normalisation entry")
def put_term(body: TermIn, request: Request, actor: CurrentActor) -> Response:
    _svc(request).put_term(actor, body.field, body.pattern, body.value, body.match)
    return Response(status_code=204)


@router.delete("/terms", status_code=204, summary="Remove a normalisation entry")
def delete_term(request: Request, actor: CurrentActor, field: str = Query(),
                pattern: str = Query()) -> Response:
    _svc(request).put_term(actor, field, pattern, None)
    return Response(status_code=204)


@router.get("/code-maps/{hospital_code}", summary="A hospital's procedure codes mapped")
def code_maps(hospital_code: str, request: Request,
              actor: CurrentActor) -> list[dict[str, str]]:
    require_rules_admin(actor)
    return _svc(request).code_maps(hospital_code)  # type: ignore[no-any-return]


@router.put("/code-maps/{hospital_code}/{procedure_code}", status_code=204,
            summary="Map a hospital's procedure code to a catalogue item")
def put_code_map(hospital_code: str, procedure_code: str, body: CodeMapIn, request: Request,
                 actor: CurrentActor) -> Response:
    _svc(request).put_code_map(actor, hospital_code, procedure_code, body.item_code)
    return Response(status_code=204)


@router.delete("/code-maps/{hospital_code}/{procedure_code}", status_code=204,
               summary="Unmap a hospital's procedure code")
def delete_code_map(hospital_code: str, procedure_code: str, request: Request,
                    actor: CurrentActor) -> Response:
    _svc(request).put_code_map(actor, hospital_code, procedure_code, None)
    return Response(status_code=204)


@router.get("/prices", summary="Price table per item and hospital level (yuan)")
def prices(request: Request, actor: CurrentActor) -> list[dict[str, Any]]:
    return _svc(request).prices()  # type: ignore[no-any-return]


@router.put("/prices/{item_code}/{level}", status_code=204, summary="Set a price")
def put_price(item_code: str, level: str, body: PriceIn, request: Request,
              actor: CurrentActor) -> Response:
    _svc(request).put_price(actor, item_code, level, body.price_yuan)
    return Response(status_code=204)


@router.get("/history", summary="Who changed which rule, when (append-only)")
def history(request: Request, actor: CurrentActor, entity: str | None = Query(None),
            limit: int = Query(100, ge=1, le=1000)) -> list[dict[str, Any]]:
    require_rules_admin(actor)
    return _svc(request).history(entity=entity, limit=limit)  # type: ignore[no-any-return]


@router.get("/unmapped", summary="Values normalisation could not map, for an administrator")
def unmapped(request: Request, actor: CurrentActor, field: str | None = Query(None),
             limit: int = Query(200, ge=1, le=1000)) -> list[dict[str, Any]]:
    require_rules_admin(actor)
    return _svc(request).unmapped(field_name=field, limit=limit)  # type: ignore[no-any-return]


@router.put("/studies/{study_uid}/qc", status_code=204,
            summary="Set a study's quality-control flag")
def put_qc(study_uid: str, body: QcIn, request: Request, actor: CurrentActor) -> Response:
    _svc(request).set_qc(actor, study_uid, body.qc)
    return Response(status_code=204)


@router.get("/savings", summary="Checks, prompts, decisions and what they saved, per month",
            responses={200: {"content": {"text/csv": {}}}})
def savings(request: Request, actor: CurrentActor, month: list[str] = Query([]),
            hospital_code: str | None = Query(None),
            format: Literal["json", "csv"] = Query("json")) -> Any:
    found = [asdict(r) for r in _svc(request).savings(actor, months=month,
                                                       hospital_code=hospital_code)]
    if format == "json":
        return found
    out = io.StringIO()
    columns = ["month", "hospital_code", "department", "item_code", "checks", "prompts",
               "accepted", "accepted_then_performed", "undecided", "cost_avoided_yuan",
               "dose_avoided_msv", *[f"repeat_{r}" for r in REPEAT_REASONS]]
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in found:
        repeats = row.pop("repeats")
        writer.writerow([*(row[c] for c in columns[:11]),
                         *(repeats.get(r, 0) for r in REPEAT_REASONS)])
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8")
