"""UPS-RS (PS3.18 11): the worklist of AI work, the DICOM way.

- ``GET  /workitems`` search (``ProcedureStepState`` / ``00741000``, ``StudyInstanceUID``,
  ``limit``, ``offset``); an algorithm sees only its own workitems;
- ``GET  /workitems/{uid}`` retrieve;
- ``POST /workitems`` create (administrators; ``WorklistLabel`` (0074,1202) names the
  algorithm, ``StudyInstanceUID`` the study);
- ``PUT  /workitems/{uid}/state`` change state: ``ProcedureStepState`` IN PROGRESS with a
  new ``TransactionUID`` (0008,1195) claims it; COMPLETED or CANCELED with that UID ends it;
- ``POST /workitems/{uid}?transaction={TransactionUID}`` update (PS3.18 11.6) by the engine
  holding it IN PROGRESS: its progress (0074,1002) and performed procedure (0074,1216);
- ``POST /workitems/{uid}/cancelrequest`` request cancellation.

Workitems carry no patient name or ID (the engine needs none): the input is the study's
WADO-RS URL, readable by the engine's credential only while it holds the workitem.
The Transaction UID is never returned (PS3.4 CC.2.5.1.1).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response

from cloudfilm.interfaces.api.auth import CurrentActor
from cloudfilm.interfaces.api.dicomweb.common import base_url, dicom_json, services
from cloudfilm.interfaces.api.errors import HttpProblem, problem
from cloudfilm.services.ai.service import AiService
from cloudfilm.services.ai.worklist import WorkitemView
from cloudfilm.services.errors import InvalidInputError, WorkitemStateError

router = APIRouter()

UPS_PUSH_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.1"
_STATE, _TRANSACTION, _LABEL, _STUDY = "00741000", "00081195", "00741202", "0020000D"


def _ai(request: Request) -> AiService:
    ai = services(request).ai
    if ai is None:
        raise HttpProblem(404, "AI assistance is not enabled", code="not-found")
    return ai


def _v(vr: str, *values: Any) -> dict[str, Any]:
    return {"vr": vr, "Value": list(values)} if values else {"vr": vr}


def workitem_json(request: Request, w: WorkitemView) -> dict[str, Any]:
    """The workitem as DICOM JSON (PS3.4 Table CC.2.5-3, the attributes an engine needs)."""
    when = w.created_at.strftime("%Y%m%d%H%M%S")
    study_url = f"{base_url(request)}/studies/{w.study_instance_uid}"
    return {
        "00080016": _v("UI", UPS_PUSH_SOP_CLASS),
        "00080018": _v("UI", w.uid),
        "00100010": _v("PN"), "00100020": _v("LO"), "00100030": _v("DA"),
        "00100040": _v("CS"),
        "00380010": _v("LO"), "00380014": _v("SQ"),
        "00741000": _v("CS", w.state),
        "00741200": _v("CS", "MEDIUM"),
        "00741204": _v("LO", f"AI: {w.algorithm}"[:64]),
        "00741202": _v("LO", w.algorithm_id),
        "00404005": _v("DT", when),
        "00404041": _v("CS", "READY"),
        "00404021": _v("SQ", {"0020000D": _v("UI", w.study_instance_uid),
                              "00081190": _v("UR", study_url)}),
        "0020000D": _v("UI", w.study_instance_uid),
        "00404018": _v("SQ", {"00080100": _v("SH", "AI-ANALYSIS"),
                              "00080102": _v("SH", "99CLOUDFILM"),
                              "00080104": _v("LO", "AI-assisted analysis")}),
    } | w.updates


def _first(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


async def _body(request: Request) -> dict[str, Any]:
    try:
        parsed = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        raise HttpProblem(400, f"the body is not DICOM JSON: {exc}") from exc
    if isinstance(parsed, list) and len(parsed) == 1:
        parsed = parsed[0]
    if not isinstance(parsed, dict):
        raise HttpProblem(400, "the body is one DICOM JSON data set")
    return parsed


@router.get("/workitems", summary="UPS-RS search")
def search(request: Request, actor: CurrentActor) -> Response:
    q = request.query_params
    states = [s for key in ("ProcedureStepState", _STATE) for s in q.getlist(key)]
    study = q.get("StudyInstanceUID") or q.get(_STUDY) or ""
    try:
        limit, offset = int(q.get("limit", "100")), int(q.get("offset", "0"))
    except ValueError as exc:
        raise HttpProblem(400, "limit and offset are integers") from exc
    found = _ai(request).work.search(actor, states=states, study_uid=study[:64],
                                     limit=limit, offset=offset)
    if not found:
        return Response(status_code=204)
    return dicom_json(request, [workitem_json(request, w) for w in found])


@router.get("/workitems/{uid}", summary="UPS-RS retrieve")
def retrieve(request: Request, uid: str, actor: CurrentActor) -> Response:
    return dicom_json(request, [workitem_json(request, _ai(request).work.get(actor, uid))])


@router.post("/workitems", status_code=201, summary="UPS-RS create (administrators)")
async def create(request: Request, actor: CurrentActor) -> Response:
    from fastapi.concurrency import run_in_threadpool

    item = await _body(request)
    algorithm, study = _first(item, _LABEL), _first(item, _STUDY)
    if not study:
        inputs = item.get("00404021", {}).get("Value") or [{}]
        study = _first(inputs[0], _STUDY)
    if not algorithm or not study:
        raise HttpProblem(400, "WorklistLabel (0074,1202) names the algorithm and "
                               "StudyInstanceUID (0020,000D) the study")
    w = await run_in_threadpool(_ai(request).work.create, actor, algorithm, study)
    return dicom_json(request, [workitem_json(request, w)], status=201,
                      headers={"Location": f"{base_url(request)}/workitems/{w.uid}"})


@router.put("/workitems/{uid}/state", summary="UPS-RS change state (claim, complete, "
                                               "cancel)")
async def change_state(request: Request, uid: str, actor: CurrentActor) -> Response:
    from fastapi.concurrency import run_in_threadpool

    item = await _body(request)
    state, transaction = _first(item, _STATE), _first(item, _TRANSACTION)
    if not transaction:
        raise HttpProblem(400, "TransactionUID (0008,1195) is required")
    work = _ai(request).work
    if state == "IN PROGRESS":
        await run_in_threadpool(work.claim, actor, uid, transaction)
    elif state == "COMPLETED":
        await run_in_threadpool(work.complete, actor, uid, transaction)
    elif state == "CANCELED":
        await run_in_threadpool(lambda: work.cancel(actor, uid, transaction_uid=transaction,
                                                    reason="cancelled by its performer"))
    else:
        raise HttpProblem(400, "ProcedureStepState is IN PROGRESS, COMPLETED or CANCELED")
    return Response(status_code=200)


@router.post("/workitems/{uid}/cancelrequest", status_code=202,
             summary="UPS-RS request cancellation")
async def cancel_request(request: Request, uid: str, actor: CurrentActor) -> Response:
    from fastapi.concurrency import run_in_threadpool

    body = await request.body()
    reason = ""
    if body:
        reason = _first(await _body(request), "00741238")  # Reason For Cancellation
    await run_in_threadpool(lambda: _ai(request).work.cancel(actor, uid, reason=reason))
    return Response(status_code=202)


def _transaction(request: Request) -> str:
    """The Transaction UID of Update Workitem: the ``transaction`` query parameter
    (PS3.18 11.6.1), a bare ``?{uid}``, or (older editions) (0008,1195) in the payload."""
    q = request.query_params
    found = q.get("transaction") or next((k for k, v in q.multi_items() if not v), "")
    return found[:64]


@router.post("/workitems/{uid}", summary="UPS-RS update workitem (its performer)")
async def update(request: Request, uid: str, actor: CurrentActor) -> Response:
    from fastapi.concurrency import run_in_threadpool

    item = await _body(request)
    transaction = _transaction(request) or _first(item, _TRANSACTION)
    item.pop(_TRANSACTION, None)
    work = _ai(request).work
    try:
        await run_in_threadpool(work.update, actor, uid, transaction, item)
    except (InvalidInputError, WorkitemStateError) as exc:
        # PS3.18 11.6.3.2: 400 (missing UID, attributes that may not be updated) or 409
        # (wrong UID, not IN PROGRESS), each with a Warning saying why.
        status = 409 if isinstance(exc, WorkitemStateError) else 400
        response = problem(status, exc.code, exc.message)
        # The message may quote the client's tags: printable ASCII only, no quotes.
        text = "".join(c if " " <= c <= "~" and c not in '"\\' else "?"
                       for c in exc.message[:200])
        response.headers["Warning"] = f'299 cloudfilm "{text}"'
        return response
    return Response(status_code=200)


# Subscriptions and the event channel (PS3.18 11.10-11.11) live in their own module.
from cloudfilm.interfaces.api.dicomweb import ups_events  # noqa: E402

router.include_router(ups_events.router)
