"""CDS Hooks 2.0 door of exam mutual recognition: ``order-select`` and ``order-sign``.

A HIS that speaks CDS Hooks needs no custom code: discovery at ``GET /cds-services``, the
hook at ``POST /cds-services/{id}``, and the feedback endpoint at
``POST /cds-services/{id}/feedback`` turns the clinician's choice into the decision
(accepted suggestion "use the prior", or an override with one of our reasons).

The models below are written from the specification (https://cds-hooks.hl7.org/2.0/:
"HTTP Request", "CDS Service Response", "Card Attributes", "Suggestion", "Action",
"Link", "Feedback", hooks/order-select and hooks/order-sign); extra attributes are
allowed where the specification allows extensions.

Deviations, on purpose: the CDS client authenticates with a hospital credential (Bearer)
rather than the specification's JWT signed by the EHR; ``context.patientId`` is the
hospital's *local* patient ID; a ServiceRequest's coding with system
``urn:cloudfilm:recognition-item`` names a catalogue item, any other coding is the
hospital's own procedure code (mapped by the per-hospital table).
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from cloudfilm.interfaces.api.auth import CurrentActor
from cloudfilm.services.container import Services
from cloudfilm.services.errors import InvalidInputError, NotFoundError
from cloudfilm.services.recognition.service import REPEAT_REASONS, CheckRequest, CheckResult

router = APIRouter()

ITEM_SYSTEM = "urn:cloudfilm:recognition-item"
REASON_SYSTEM = "urn:cloudfilm:recognition-repeat-reason"
SERVICES = {"cloudfilm-recognition-select": "order-select",
            "cloudfilm-recognition-sign": "order-sign"}
_NS = uuid.UUID("2f0c4e55-9f1e-4c3e-8a57-2c1d3c7f6a10")
_REASON_TEXT = {
    "emergency": "Emergency / 急诊", "condition_changed": "Condition changed / 病情变化",
    "prior_quality_insufficient": "Prior quality insufficient / 原检查质量不足",
    "different_protocol": "Different protocol needed / 需不同检查方案",
    "patient_request": "Patient request / 患者要求", "other": "Other / 其他",
}


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


# --- request (HTTP Request; hooks order-select / order-sign) -----------------------------


class FhirAuthorization(_Open):
    access_token: str
    token_type: Literal["Bearer"]
    expires_in: int
    scope: str
    subject: str
    patient: str | None = None


class OrderContext(_Open):
    userId: str
    patientId: str
    encounterId: str | None = None
    selections: list[str] | None = None  # required for order-select
    draftOrders: dict[str, Any]


class HookRequest(_Open):
    hook: str
    hookInstance: str
    fhirServer: str | None = None
    fhirAuthorization: FhirAuthorization | None = None
    context: OrderContext
    prefetch: dict[str, Any] | None = None


# --- response (CDS Service Response, Card, Suggestion, Action, Link) ----------------------


class Coding(_Open):
    code: str
    system: str | None = None
    display: str | None = None


class Source(_Open):
    label: str
    url: str | None = None
    icon: str | None = None
    topic: Coding | None = None


class Action(_Open):
    type: Literal["create", "update", "delete"]
    description: str
    resource: dict[str, Any] | None = None
    resourceId: str | None = None


class Suggestion(_Open):
    label: str
    uuid: str | None = None
    isRecommended: bool | None = None
    actions: list[Action] | None = None


class Link(_Open):
    label: str
    url: str
    type: Literal["absolute", "smart"]
    appContext: str | None = None


class Card(_Open):
    uuid: str | None = None
    summary: str = Field(max_length=140)
    detail: str | None = None
    indicator: Literal["info", "warning", "critical"]
    source: Source
    suggestions: list[Suggestion] | None = None
    selectionBehavior: Literal["at-most-one", "any"] | None = None
    overrideReasons: list[Coding] | None = None
    links: list[Link] | None = None


class CdsResponse(_Open):
    cards: list[Card]
    systemActions: list[Action] | None = None


class ServiceDefinition(_Open):
    hook: str
    title: str | None = None
    description: str
    id: str
    prefetch: dict[str, str] | None = None
    usageRequirements: str | None = None


class Discovery(_Open):
    services: list[ServiceDefinition]


# --- feedback ----------------------------------------------------------------------------


class AcceptedSuggestion(_Open):
    id: str


class OverrideReason(_Open):
    reason: Coding | None = None
    userComment: str | None = None


class Feedback(_Open):
    card: str
    outcome: Literal["accepted", "overridden"]
    acceptedSuggestions: list[AcceptedSuggestion] | None = None
    overrideReason: OverrideReason | None = None
    outcomeTimestamp: str


class FeedbackRequest(_Open):
    feedback: list[Feedback]


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def _suggestion_id(decision_id: str, what: str) -> str:
    return str(uuid.uuid5(_NS, f"{decision_id}:{what}"))


@router.get("/cds-services", response_model=Discovery, response_model_exclude_none=True,
            summary="CDS Hooks discovery")
def discovery() -> Discovery:
    text = ("Says when the patient already has a comparable recent exam that this hospital "
            "should recognise (检查检验结果互认), so that the scan is not repeated.")
    return Discovery(services=[
        ServiceDefinition(hook=hook, id=sid, title="Exam mutual recognition", description=text)
        for sid, hook in SERVICES.items()])


def _orders(body: HookRequest) -> list[tuple[str, str | None, str | None]]:
    """(ServiceRequest reference, item code, procedure code) of the orders to check."""
    bundle = body.context.draftOrders
    if bundle.get("resourceType") != "Bundle":
        raise InvalidInputError("context.draftOrders must be a FHIR Bundle")
    wanted = set(body.context.selections or []) if body.hook == "order-select" else None
    found = []
    for entry in bundle.get("entry") or []:
        resource = (entry or {}).get("resource") or {}
        if resource.get("resourceType") != "ServiceRequest":
            continue
        ref = f"ServiceRequest/{resource.get('id', '')}"
        if wanted is not None and ref not in wanted:
            continue
        item = proc = None
        for coding in (resource.get("code") or {}).get("coding") or []:
            if coding.get("system") == ITEM_SYSTEM and coding.get("code"):
                item = str(coding["code"])
            elif coding.get("code") and proc is None:
                proc = str(coding["code"])
        if item or proc:
            found.append((ref, item, proc))
    return found


def _card(result: CheckResult, ref: str, base: str) -> Card:
    first = result.priors[0]
    summary = (f"{result.item_name_zh} {first.days_ago}天前已做({first.hospital_name}), "
               f"可互认 / comparable exam {first.days_ago} days ago")[:140]
    lines = [f"- {p.study_date} {p.hospital_name} ({p.hospital_level}), "
             f"{p.item_name_zh} / {p.item_name_en}, report {p.report_status}: {p.reason}"
             for p in result.priors]
    accept, repeat = (_suggestion_id(result.decision_id, w) for w in ("accept", "repeat"))
    return Card(
        uuid=result.decision_id, summary=summary, indicator="warning",
        detail="\n".join(lines),
        source=Source(label="cloudfilm 检查检验结果互认 (exam mutual recognition)"),
        suggestions=[
            Suggestion(label="Use the prior exam (remove this order) / 采用既往检查",
                       uuid=accept, isRecommended=True,
                       actions=[Action(type="delete", description="Remove the draft order",
                                       resourceId=ref)]),
            Suggestion(label="Repeat anyway / 仍需重新检查", uuid=repeat, isRecommended=False),
        ],
        selectionBehavior="at-most-one",
        overrideReasons=[Coding(code=r, system=REASON_SYSTEM, display=_REASON_TEXT[r])
                         for r in REPEAT_REASONS],
        links=[Link(label=f"View prior {p.study_date} ({p.hospital_name})", type="absolute",
                    url=f"{base}/workstation/recognition/{result.decision_id}"
                        f"?study={p.study_instance_uid}")
               for p in result.priors[:3]])


@router.post("/cds-services/{service_id}", response_model=CdsResponse,
             response_model_exclude_none=True, summary="CDS Hooks order-select / order-sign")
def call_service(service_id: str, body: HookRequest, request: Request,
                 actor: CurrentActor) -> CdsResponse:
    hook = SERVICES.get(service_id)
    if hook is None:
        raise NotFoundError(f"no CDS service {service_id!r}; see GET /cds-services")
    if body.hook != hook:
        raise InvalidInputError(f"service {service_id} answers the {hook} hook, not {body.hook}")
    if hook == "order-select" and body.context.selections is None:
        raise InvalidInputError("context.selections is required by order-select")
    svc = _services(request).recognition
    base = str(request.base_url).rstrip("/")
    cards = []
    for ref, item, proc in _orders(body):
        try:
            result = svc.check(actor, CheckRequest(patient_id=body.context.patientId,
                                                   item_code=item, procedure_code=proc))
        except InvalidInputError:
            continue  # an unmapped order code is listed for the administrator; no card
        if result.priors:
            cards.append(_card(result, ref, base))
    return CdsResponse(cards=cards)


@router.post("/cds-services/{service_id}/feedback", status_code=200,
             summary="CDS Hooks feedback: the clinician's choice becomes the decision")
def feedback(service_id: str, body: FeedbackRequest, request: Request,
             actor: CurrentActor) -> dict[str, Any]:
    if service_id not in SERVICES:
        raise NotFoundError(f"no CDS service {service_id!r}")
    svc = _services(request).recognition
    for fb in body.feedback:
        accepted = {s.id for s in fb.acceptedSuggestions or []}
        if fb.outcome == "accepted" and _suggestion_id(fb.card, "accept") in accepted:
            svc.decide(actor, fb.card, "accepted")
            continue
        reason, text = "other", "repeat anyway (no reason given)"
        override = fb.overrideReason
        if override is not None:
            if override.reason is not None and override.reason.code in REPEAT_REASONS:
                reason = override.reason.code
            text = override.userComment or (text if reason == "other" else "")
        svc.decide(actor, fb.card, "repeat", reason=reason, text=text)
    return {}
