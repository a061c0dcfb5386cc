"""The diagnostic viewer of the workstation (issue 14): ``/workstation/viewer``.

``GET /workstation/viewer?study=<uid>[&prior=<uid>][&layout=1x2]`` opens a study (and a prior
beside it) for a signed-in doctor. The page is a shell: the studies and their series come
from ``TimelineService.study`` with the doctor's actor (decided by the access policy and
recorded in the audit trail before the page is sent), and the browser then reads metadata
and frames from ``/dicomweb`` with the same session cookie, where every request is decided
again: a grant that ends while the viewer is open refuses the next frame (403), and the
page says why.

Cornerstone's codecs are WebAssembly running in workers: this page alone may compile
WebAssembly (``'wasm-unsafe-eval'``), start workers from its own origin and set style
attributes.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from cloudfilm.interfaces.web import labels
from cloudfilm.interfaces.web.pages import Web
from cloudfilm.interfaces.web.security import CSP
from cloudfilm.services.errors import InvalidInputError
from cloudfilm.services.kernel.actor import Actor, Role

PREFIX = "/workstation"
SIGNIN = f"{PREFIX}/signin"
DICOMWEB = "/dicomweb"
LAYOUTS = ("1x1", "1x2", "2x2")
IN_FLIGHT = 6  # a browser's connections to one host over HTTP/1.1
# Cornerstone sizes its canvases and SVG layers with style attributes: styles only (scripts
# stay 'self'), as the report page does.
VIEWER_CSP = CSP.replace("script-src 'self'", "script-src 'self' 'wasm-unsafe-eval'").replace(
    "style-src 'self'", "style-src 'self' 'unsafe-inline'") + "; worker-src 'self' blob:"
_UID = re.compile(r"^[0-9.]{1,64}$")
_NON_IMAGE = ("SR", "KO", "PR", "DOC", "RTSTRUCT", "SEG", "REG")


def _uid(value: str, name: str) -> str:
    if not _UID.match(value):
        raise InvalidInputError(f"{name}: not a DICOM UID")
    return value


def _labels(_: Any) -> dict[str, str]:
    """What the script shows, in the page's language."""
    return {
        "starting": _("Starting the viewer…"),
        "loading": _("Loading"),
        "image": _("Im"),
        "position": _("Pos"),
        "thickness": _("Thk"),
        "zoom": _("Zoom"),
        "inverted": _("Inverted"),
        "no_images": _("This study has no images to show."),
        "load_failed": _("The images could not be loaded. Check the network and reload."),
        "access_ended": _("Access to this study has ended (the patient's authorisation "
                          "expired or was withdrawn): no more images are loaded. Ask the "
                          "patient again from the patient page."),
        "session_ended": _("Your session has ended: sign in again to go on reading."),
    }


def build_router(web: Web) -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    svc = web.services

    def study_info(actor: Actor, study_uid: str, role: str, lang: str) -> dict[str, Any]:
        summary, series = svc.timeline.study(actor, study_uid)
        base = f"{DICOMWEB}/studies/{study_uid}/series"
        return {
            "uid": study_uid,
            "role": role,
            "label": " · ".join(p for p in (labels.da_date(summary.study_date, lang),
                                            summary.hospital_name,
                                            summary.description) if p),
            "series": [{
                "uid": s.series_instance_uid,
                "modality": s.modality,
                "description": s.description or s.modality,
                "count": s.instances,
                "thumb": (f"{base}/{s.series_instance_uid}/instances/{s.thumbnail_sop_uid}"
                          "/thumbnail") if s.thumbnail_sop_uid and s.modality not in _NON_IMAGE
                else None,
            } for s in series],
        }

    @router.get("/viewer")
    async def viewer(request: Request, study: str, prior: str = "",
                     layout: str = "") -> Response:
        actor = await run_in_threadpool(web.signed_in, request, (Role.DOCTOR,), SIGNIN)
        lang = web.lang(request)
        study_uid = _uid(study, "study")
        prior_uid = _uid(prior, "prior") if prior else ""
        # Both decided (and recorded) before the page goes out; a refusal is the error page.
        studies = [await run_in_threadpool(study_info, actor, study_uid, "current", lang)]
        if prior_uid and prior_uid != study_uid:
            studies.append(await run_in_threadpool(study_info, actor, prior_uid, "prior", lang))
        chosen = layout if layout in LAYOUTS else ("1x2" if len(studies) > 1 else "1x1")
        _ = web.languages.translations[lang].gettext
        config = {"dicomweb": DICOMWEB, "studies": studies, "layout": chosen,
                  "inFlight": IN_FLIGHT, "labels": _labels(_)}
        response = web.render(request, "ws_viewer.html.j2", config=config, studies=studies,
                              layouts=LAYOUTS, layout=chosen, doctor=actor.display)
        response.headers["content-security-policy"] = VIEWER_CSP
        return response

    return router
