"""AI results beside the images (issue 19): the data the diagnostic viewer's AI panel reads
and the doctor's confirmation, under ``/workstation/ai/data/`` (JSON; errors as JSON).

- ``GET  /workstation/ai/data/studies/{study}``: the study's finding sets, newest version
  first (``services.ai.results.sets``: decided and audited naming the resident);
- ``GET  /workstation/ai/data/studies/{study}/seg/{sop}``: a set's SEG as mask runs for the
  viewer's labelmap (read like any instance of the study, audited);
- ``POST /workstation/ai/data/results/{sop}/review``: confirm or reject a set (form field
  ``decision``; ``X-CSRF-Token`` header), recorded with the doctor's name and audited.

The panel's words are in ``templates/_ai_panel.html.j2``; the portal's card in
``templates/_ai_portal.html.j2``.
"""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool

from cloudfilm.interfaces.web.pages import Web
from cloudfilm.services.ai.service import AiService
from cloudfilm.services.errors import (
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
)
from cloudfilm.services.kernel.actor import Actor, Role

PREFIX = "/workstation/ai/data"
_UID = re.compile(r"^[0-9.]{1,64}$")


def _uid(value: str) -> str:
    if not _UID.match(value):
        raise InvalidInputError("not a DICOM UID")
    return value


def _json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def build_router(web: Web) -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    def ai() -> AiService:
        found = web.services.ai
        if found is None:
            raise NotFoundError("AI assistance is not enabled")
        return found

    def doctor(request: Request) -> Actor:
        actor = web.session_actor(request)
        if actor is None or not actor.has(Role.DOCTOR):
            raise NotAuthenticatedError("sign in to the workstation as a doctor")
        return actor

    @router.get("/studies/{study_uid}")
    async def sets(request: Request, study_uid: str) -> dict[str, Any]:
        actor = await run_in_threadpool(doctor, request)
        found = await run_in_threadpool(ai().results.sets, actor, _uid(study_uid))
        return {"sets": [_json(asdict(s)) for s in found]}

    @router.get("/studies/{study_uid}/seg/{sop_uid}")
    async def seg(request: Request, study_uid: str, sop_uid: str) -> dict[str, Any]:
        actor = await run_in_threadpool(doctor, request)
        masks = await run_in_threadpool(ai().results.mask, actor, _uid(study_uid),
                                        _uid(sop_uid))
        return {"masks": masks}

    @router.post("/results/{sop_uid}/review")
    async def review(request: Request, sop_uid: str) -> dict[str, Any]:
        form = await web.check_csrf(request)
        actor = await run_in_threadpool(doctor, request)
        decision = form.get("decision", "")
        if decision not in ("confirm", "reject"):
            raise InvalidInputError("decision: confirm or reject")
        done = await run_in_threadpool(ai().work.review, actor, _uid(sop_uid),
                                       decision == "confirm")
        return {"review": done, "reviewer_name": actor.display}

    return router
