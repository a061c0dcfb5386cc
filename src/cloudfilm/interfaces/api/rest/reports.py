"""REST API of diagnostic reports (``/api/v1``).

Hospitals send reports here as FHIR R4 DiagnosticReport (``POST /fhir/DiagnosticReport``)
or as HL7 v2 ORU^R01 (``POST /hl7``, answered with an HL7 ACK); DICOM SR and Encapsulated
PDF come through the DICOM doors instead. Everyone reads through the same service, which
asks the access policy and audits every read. Routes are ``def`` (thread pool): the
services are synchronous (WeasyPrint takes ~0.1-0.3 s for a PDF).
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse

from cloudfilm.infrastructure.orders import hl7v2 as hl7_orders
from cloudfilm.infrastructure.reports import hl7v2
from cloudfilm.infrastructure.reports.render import negotiate_language
from cloudfilm.interfaces.api.auth import CurrentActor, authenticate
from cloudfilm.interfaces.api.errors import status_for
from cloudfilm.interfaces.api.rest import orders
from cloudfilm.services.container import Services
from cloudfilm.services.errors import CloudfilmError, InvalidReportError

PREFIX = "/api/v1"
router = APIRouter()

StatusFilter = Literal["preliminary", "final", "amended", "cancelled"]
_FHIR_ISSUE = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found",
               409: "conflict", 503: "transient"}


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


async def _body(request: Request, limit: int, what: str) -> bytes:
    """The request body, refused (before reading on) once it passes ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise InvalidReportError(f"the body is {declared} bytes; at most {limit} are accepted",
                                 field=what, code="report-too-large")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InvalidReportError(f"the body is larger than {limit} bytes", field=what,
                                     code="report-too-large")
        chunks.append(chunk)
    return b"".join(chunks)


def _operation_outcome(exc: CloudfilmError) -> JSONResponse:
    """A FHIR client expects an OperationOutcome naming the bad element (``expression``)."""
    status = status_for(exc)
    issue: dict[str, Any] = {"severity": "error", "code": _FHIR_ISSUE.get(status, "processing"),
                             "diagnostics": exc.message,
                             "details": {"text": exc.code}}
    field = getattr(exc, "field", "")
    if field:
        issue["expression"] = [field]
    return JSONResponse({"resourceType": "OperationOutcome", "issue": [issue]},
                        status_code=status, media_type="application/fhir+json")


@router.post("/fhir/DiagnosticReport", status_code=201,
             summary="Receive a FHIR R4 DiagnosticReport (a hospital's report of a study)",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "application/fhir+json": {"schema": {
                     "type": "object", "description": "FHIR R4 DiagnosticReport naming its "
                     "study by imagingStudy identifier (urn:dicom:uid) or ACSN accession"}}}}})
async def receive_fhir(request: Request) -> Response:
    svc = _services(request)
    try:
        actor = await authenticate(request)
        body = await _body(request, svc.reports.max_bytes, "DiagnosticReport")
        recorded = await run_in_threadpool(svc.reports.receive_fhir, body, actor=actor)
    except CloudfilmError as exc:
        return _operation_outcome(exc)
    return JSONResponse(asdict(recorded),
                        status_code=200 if recorded.outcome == "duplicate" else 201,
                        headers={"Location": f"{PREFIX}/reports/{recorded.report_id}"})


@router.post("/hl7", summary="Receive an HL7 v2 message: ORU^R01 reports (answered with an "
             "ACK), ORM^O01/OMG^O19 orders (the recognition check, ORR^O02/ORG^O20)",
             openapi_extra={"requestBody": {"required": True, "content": {
                 "x-application/hl7-v2+er7": {"schema": {"type": "string"}}}}})
async def receive_hl7(request: Request) -> Response:
    """The REST form of the MLLP channel: the body is the ER7 message, the answer its ACK
    (``AA`` accepted, ``AE`` error with the reason in MSA-3 and ERR). Orders go to the
    recognition order feed (``rest/orders.py``)."""
    svc = _services(request)
    body = b""
    try:
        body = await _body(request, svc.reports.max_bytes, "MSH")
        if hl7_orders.is_order(body):  # ORM^O01 / OMG^O19: the recognition order feed
            return await orders.receive_hl7_order(request, body)
        actor = await authenticate(request)
        await run_in_threadpool(svc.reports.receive_hl7, body, actor=actor)
    except CloudfilmError as exc:
        try:
            answer = hl7v2.ack(body, "AE", exc.message)
        except ValueError:  # not even an MSH to answer to
            return JSONResponse({"error": exc.code, "message": exc.message,
                                 "field": getattr(exc, "field", "")},
                                status_code=status_for(exc))
        return Response(answer, status_code=status_for(exc),
                        media_type="x-application/hl7-v2+er7; charset=utf-8")
    return Response(hl7v2.ack(body, "AA"), media_type="x-application/hl7-v2+er7; charset=utf-8")


@router.get("/studies/{study_uid}/reports", summary="The reports of a study (current versions)")
def study_reports(request: Request, study_uid: str, actor: CurrentActor) -> list[dict[str, Any]]:
    return [asdict(r) for r in _services(request).reports.study_reports(
        study_uid, actor=actor)]


@router.get("/reports", summary="Search reports (Chinese or other text; newest exam first)")
def search_reports(request: Request, actor: CurrentActor,
                   q: str = Query("", max_length=200,
                                  description="every term must occur, e.g. 结节 or 右肺 结节"),
                   status: StatusFilter | None = None,
                   link_state: Literal["held", "linked"] | None = Query(
                       None, description="held: still waiting for the study's images"),
                   hospital: str | None = None,
                   since: datetime | None = None, until: datetime | None = None,
                   limit: int = Query(50, ge=1, le=500),
                   offset: int = Query(0, ge=0, le=100_000)) -> list[dict[str, Any]]:
    found = _services(request).reports.search(
        q, actor=actor, hospital_code=hospital, status=status, link_state=link_state,
        since=since, until=until,
        limit=limit, offset=offset)
    return [asdict(r) for r in found]


@router.get("/reports/{report_id}", summary="A report with all its versions")
def report(request: Request, report_id: str, actor: CurrentActor) -> dict[str, Any]:
    detail = _services(request).reports.get(report_id, actor=actor)
    return {**asdict(detail.summary), "history": [asdict(v) for v in detail.versions]}


@router.get("/reports/{report_id}/html", response_class=HTMLResponse,
            summary="A report as a web page (zh-CN or en)")
def report_html(request: Request, report_id: str, actor: CurrentActor,
                lang: str | None = None, version: int | None = Query(None, ge=1)) -> Response:
    language = negotiate_language(request.headers.get("accept-language"), lang)
    svc = _services(request)
    page = svc.reports.html(
        report_id, actor=actor, lang=language, version=version,
        pdf_url=f"{PREFIX}/reports/{quote(report_id)}/pdf?lang={language}"
        + (f"&version={version}" if version else ""))
    return HTMLResponse(page, headers={"Content-Language": language,
                                       "Cache-Control": "private, no-store"})


@router.get("/reports/{report_id}/pdf", summary="A report as PDF, for download")
def report_pdf(request: Request, report_id: str, actor: CurrentActor,
               lang: str | None = None, version: int | None = Query(None, ge=1)) -> Response:
    language = negotiate_language(request.headers.get("accept-language"), lang)
    data = _services(request).reports.pdf(report_id, actor=actor, lang=language,
                                          version=version)
    name = f"report-{report_id[:32]}" + (f"-v{version}" if version else "") + ".pdf"
    return Response(data, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}"',
                             "Cache-Control": "private, no-store"})


@router.get("/timeliness", summary="Upload timeliness per hospital (the 12-hour rule)")
def timeliness(request: Request, actor: CurrentActor, since: datetime | None = None,
               until: datetime | None = None,
               hospital: str | None = None) -> dict[str, Any]:
    end = until or datetime.now(UTC)
    start = since or end - timedelta(days=7)
    svc = _services(request)
    rows = svc.reports.timeliness(actor=actor, since=start, until=end, hospital_code=hospital)
    return {"since": start, "until": end, "deadline_hours": svc.reports.deadline_hours,
            "hospitals": [asdict(r) for r in rows]}
