"""WADO-URI (PS3.18 9): ``?requestType=WADO&studyUID=..&seriesUID=..&objectUID=..``.

Many hospital systems still link images this way. ``contentType`` defaults to image/jpeg
(the standard's default for single-frame images); ``application/dicom`` returns the object.
"""

from __future__ import annotations

from functools import partial
from typing import Any, cast

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse

from cloudfilm.interfaces.api.auth import CurrentActor
from cloudfilm.interfaces.api.dicomweb.common import services
from cloudfilm.interfaces.api.errors import HttpProblem

router = APIRouter()


@router.get("/wado", summary="WADO-URI: retrieve one object")
async def wado_uri(request: Request, actor: CurrentActor) -> Response:
    q = request.query_params
    if q.get("requestType") != "WADO":
        raise HttpProblem(400, "requestType must be WADO", code="bad-request-type")
    missing = [k for k in ("studyUID", "seriesUID", "objectUID") if not q.get(k)]
    if missing:
        raise HttpProblem(400, f"missing parameter(s): {', '.join(missing)}", code="missing-uid")
    retrieve = services(request).retrieve
    content_type = (q.get("contentType") or "image/jpeg").split(",")[0].strip().lower()
    if content_type == "application/dicom":
        objects = await run_in_threadpool(partial(retrieve.locate, q["studyUID"],
                                                  q["seriesUID"], q["objectUID"], actor=actor))
        obj = objects[0]
        syntax = q.get("transferSyntax") or "*"
        retrieve.check_transfer_syntax(objects, syntax)
        return StreamingResponse(retrieve.object_chunks(obj, syntax),
                                 media_type="application/dicom")
    if content_type not in ("image/jpeg", "image/png", "image/gif"):
        raise HttpProblem(406, f"contentType {content_type} is not supported; use "
                          "application/dicom, image/jpeg, image/png or image/gif",
                          code="not-acceptable")
    options: dict[str, object] = {}
    try:
        if q.get("windowCenter") and q.get("windowWidth"):
            options["window"] = (float(q["windowCenter"]), float(q["windowWidth"]), "linear")
        if q.get("rows") or q.get("columns"):
            options["viewport"] = (int(q.get("columns") or q.get("rows") or 0),
                                   int(q.get("rows") or q.get("columns") or 0))
        if q.get("imageQuality"):
            options["quality"] = int(q["imageQuality"])
        frame = int(q.get("frameNumber") or 1)
    except ValueError:
        raise HttpProblem(400, "windowCenter/windowWidth are numbers; rows, columns, "
                          "imageQuality and frameNumber are integers", code="bad-parameter"
                          ) from None
    data = await run_in_threadpool(partial(
        retrieve.rendered, q["studyUID"], q["seriesUID"], q["objectUID"], actor=actor,
        frame=frame, media_type=content_type, **cast(dict[str, Any], options)))
    return Response(data, media_type=content_type)
