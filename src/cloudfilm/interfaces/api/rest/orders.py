"""The order feed of exam mutual recognition: a hospital's order entry sends each new
imaging order, and is answered with the recognition check's result.

- HL7 v2 ORM^O01 / OMG^O19 at ``POST /api/v1/hl7`` (the HL7 door dispatches orders here,
  reports to the report intake; the gateway's MLLP listener forwards to the same door),
  answered with ORR^O02 / ORG^O20: the prompt in an NTE and one ZRC per prior.
- FHIR R4 ``ServiceRequest`` at ``POST /api/v1/fhir/ServiceRequest``, answered with a
  ``Bundle`` (collection): an ``OperationOutcome`` saying the decision id, and one
  ``DetectedIssue`` per comparable prior (the FHIR resource for "this order duplicates
  something already done").

A new order (HL7 ``NW``, FHIR ``active``/``draft``) runs the check (audited, scoped to the
credential's hospital: a hospital's own patient ID only, exactly as
``POST /api/v1/recognition/check``); a completed one (HL7 ``SC`` + ``CM``, FHIR
``completed``) marks the check of that order number performed, so "accepted but repeated
anyway" shows in the figures; a cancelled one records nothing.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from cloudfilm.infrastructure.orders import fhir, hl7v2
from cloudfilm.infrastructure.orders.order import Order, OrderFormatError
from cloudfilm.interfaces.api.auth import authenticate
from cloudfilm.interfaces.api.errors import status_for
from cloudfilm.services.container import Services
from cloudfilm.services.errors import CloudfilmError, InvalidInputError
from cloudfilm.services.kernel.actor import Actor
from cloudfilm.services.recognition.service import CheckRequest, CheckResult

router = APIRouter()
MAX_BYTES = 256 * 1024  # an order is a few hundred bytes
ER7 = "x-application/hl7-v2+er7; charset=utf-8"
FHIR_JSON = "application/fhir+json"
_FHIR_ISSUE = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found",
               409: "conflict", 503: "transient"}


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


async def _body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BYTES:
            raise InvalidInputError(f"the order is larger than {MAX_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _apply(services: Services, actor: Actor, order: Order) -> CheckResult | str | None:
    """Run one order: the check's result, the decision id marked performed, or None."""
    svc = services.recognition
    if order.action == "check":
        return svc.check(actor, CheckRequest(
            patient_id=order.patient_id or None, national_id=order.national_id or None,
            item_code=order.item_code or None, procedure_code=order.procedure_code or None,
            department=order.department, order_ref=order.order_ref))
    if order.action == "performed":
        return svc.performed_order(actor, order.order_ref,
                                   at=order.performed_at)
    return None


def _prompt_text(result: CheckResult) -> str:
    if not result.priors:
        return (f"{result.item_name_zh}: {result.window_days}天内无可互认的既往检查 / "
                f"no comparable exam within {result.window_days} days")
    first = result.priors[0]
    return (f"{result.item_name_zh} {first.days_ago}天前已在{first.hospital_name}检查"
            f"(报告{first.report_status}), 可互认, 请考虑是否重复检查 / {result.item_name_en}"
            f" done {first.days_ago} day(s) ago at {first.hospital_name}, recognisable; "
            f"decision {result.decision_id}")


async def receive_hl7_order(request: Request, body: bytes) -> Response:
    """An ORM^O01 / OMG^O19 message (the HL7 door's order branch), answered in HL7."""
    try:
        actor = await authenticate(request)
        orders = hl7v2.read_orders(body)
        services = _services(request)
        prompts = []
        for order in orders:
            done = await run_in_threadpool(_apply, services, actor, order)
            if isinstance(done, CheckResult):
                prompts.append(hl7v2.Prompt(
                    order.order_ref, done.decision_id, done.item_code, _prompt_text(done),
                    [(p.study_instance_uid, p.study_date, p.days_ago, p.hospital_code,
                      p.hospital_name, p.hospital_level, p.report_status)
                     for p in done.priors]))
    except (CloudfilmError, OrderFormatError) as exc:
        status = status_for(exc) if isinstance(exc, CloudfilmError) else 400
        text = exc.message if isinstance(exc, CloudfilmError) else str(exc)
        try:
            answer = hl7v2.answer(body, "AE" if status != 403 else "AR", text=text)
        except (OrderFormatError, ValueError):
            return JSONResponse({"error": "invalid-hl7", "message": text}, status_code=400)
        return Response(answer, status_code=status, media_type=ER7)
    return Response(hl7v2.answer(body, "AA", prompts=prompts), media_type=ER7)


def _outcome(status: int, message: str, field: str = "") -> JSONResponse:
    issue: dict[str, Any] = {"severity": "error", "code": _FHIR_ISSUE.get(status, "processing"),
                             "diagnostics": message}
    if field:
        issue["expression"] = [field]
    return JSONResponse({"resourceType": "OperationOutcome", "issue": [issue]},
                        status_code=status, media_type=FHIR_JSON)


def _bundle(order: Order, result: CheckResult) -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    patient = ({"reference": f"Patient/{order.patient_id}"} if order.patient_id else
               {"identifier": {"system": "urn:oid:2.16.156.10011.1.3",
                               "value": order.national_id}})
    outcome = {"resourceType": "OperationOutcome", "issue": [{
        "severity": "warning" if result.priors else "information",
        "code": "informational",
        "diagnostics": _prompt_text(result),
        "details": {"coding": [{"system": "urn:cloudfilm:recognition-decision",
                                "code": result.decision_id}],
                    "text": f"decision {result.decision_id}"}}]}
    entries: list[dict[str, Any]] = [{"resource": outcome}]
    for p in result.priors:
        entries.append({"resource": {
            "resourceType": "DetectedIssue",
            "identifier": [{"system": "urn:ietf:rfc:3986",
                            "value": f"urn:uuid:{result.decision_id}"}],
            "status": "preliminary",
            "code": {"coding": [{"system": "urn:cloudfilm:recognition",
                                 "code": "comparable-prior",
                                 "display": "检查结果互认: 可互认的既往检查"}],
                     "text": f"{p.item_name_zh} / {p.item_name_en}"},
            "severity": "moderate", "patient": patient, "identifiedDateTime": now,
            "implicated": [{"identifier": {"system": "urn:dicom:uid",
                                           "value": f"urn:oid:{p.study_instance_uid}"},
                            "display": f"{p.study_date} {p.hospital_name}"},
                           {"identifier": {"value": order.order_ref},
                            "type": "ServiceRequest"}],
            "detail": p.reason,
            "extension": [{"url": "urn:cloudfilm:recognition-prior", "extension": [
                {"url": "studyDate", "valueString": p.study_date},
                {"url": "daysAgo", "valueInteger": p.days_ago},
                {"url": "hospital", "valueString": p.hospital_code},
                {"url": "hospitalLevel", "valueString": p.hospital_level},
                {"url": "reportStatus", "valueString": p.report_status}]}]}})
    return {"resourceType": "Bundle", "type": "collection", "timestamp": now,
            "entry": entries}


@router.post("/api/v1/fhir/ServiceRequest",
             summary="Order feed: a FHIR R4 ServiceRequest, answered with the recognition "
                     "check (Bundle of OperationOutcome and DetectedIssue)",
             openapi_extra={"requestBody": {"required": True, "content": {
                 FHIR_JSON: {"schema": {"type": "object"}}}}})
async def receive_service_request(request: Request) -> Response:
    try:
        actor = await authenticate(request)
        order = fhir.read_service_request(await _body(request))
        done = await run_in_threadpool(_apply, _services(request), actor, order)
    except OrderFormatError as exc:
        return _outcome(400, exc.message, exc.field)
    except CloudfilmError as exc:
        return _outcome(status_for(exc), exc.message)
    if isinstance(done, CheckResult):
        return JSONResponse(_bundle(order, done), media_type=FHIR_JSON)
    text = (f"order {order.order_ref} performed (decision {done})" if done
            else f"order {order.order_ref} cancelled; nothing recorded")
    return JSONResponse({"resourceType": "OperationOutcome", "issue": [{
        "severity": "information", "code": "informational", "diagnostics": text}]},
        media_type=FHIR_JSON)
