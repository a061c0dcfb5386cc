"""The resident's phone portal (``/portal``): sign-in by SMS code, timeline, study page,
phone image viewer, requests and grants, "who looked at my data".

Routes render autoescaped Jinja2 templates and call the services with the signed-in
resident's :class:`Actor`, so the access policy decides and the audit trail records
exactly as for the REST API. Nothing here opens a database session or reads a blob.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

import segno
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import (
    HTMLResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from markupsafe import Markup

from cloudfilm.interfaces.web import labels
from cloudfilm.interfaces.web.pages import (
    ELDERLY_COOKIE,
    FOR_COOKIE,
    Redirect,
    Web,
    status_of,
)
from cloudfilm.interfaces.web.security import (
    REPORT_CSP,
    SESSION_COOKIE,
)
from cloudfilm.services.errors import (
    AlreadyExistsError,
    CloudfilmError,
    InvalidInputError,
    NotAuthenticatedError,
    NotFoundError,
)
from cloudfilm.services.kernel.actor import Actor
from cloudfilm.services.portal.downloads import Download

logger = logging.getLogger(__name__)

PREFIX = "/portal"
SHARE_PIN_COOKIE = "cloudfilm_share_pin"
PAGE_SIZE = 20
# Window presets (width, centre) in Hounsfield units, as radiology viewers name them.
PRESETS: dict[str, tuple[int, int]] = {
    "lung": (1500, -600), "mediastinum": (350, 50), "bone": (2000, 300),
    "brain": (80, 40), "abdomen": (400, 50),
}
PRESET_NAMES = {"default": "Default", "lung": "Lung", "mediastinum": "Mediastinum",
                "bone": "Bone", "brain": "Brain", "abdomen": "Abdomen"}
FRAME_SIZES = (256, 512, 768, 1024)
CINE_MODALITIES = frozenset({"US", "XA", "RF", "ES"})
CINE_FPS = 15
NO_ACCOUNT = ("No account uses this phone yet. Register with the name and ID number of "
              "your ID card and the new code.")
NO_MATCH = ("We could not confirm that this is you. Check your name and ID number, and use "
            "the phone number your hospital recorded or the activation code on your report "
            "slip; or ask a hospital you visited.")
_UID = re.compile(r"^[0-9.]{1,64}$")
_PHONE_UA = re.compile(r"Mobi|Android|iPhone|iPad|MicroMessenger|HarmonyOS", re.I)


def _uid(value: str) -> str:
    if not _UID.match(value):
        raise NotFoundError("not a DICOM UID")
    return value


def _family(web: Web, actor: Actor) -> list[tuple[int, str]]:
    """The people the resident acts for (themself first) with their names."""
    account = web.services.accounts.me(actor)
    out = []
    for rid in account.resident_ids:
        try:
            name = web.services.residents.get(rid).name
        except CloudfilmError:
            name = str(rid)
        out.append((rid, labels.person(name)))
    return out


def build_router(web: Web) -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    svc = web.services

    # -- sign-in --

    @router.get("/signin")
    async def signin_page(request: Request) -> Response:
        return web.render(request, "signin.html.j2", phone="", step="phone", error=None,
                          sent_to=None)

    @router.post("/signin/code")
    async def send_code(request: Request) -> Response:
        form = await web.check_csrf(request)
        phone = form.get("phone", "").strip()
        try:
            masked = await run_in_threadpool(svc.accounts.send_sign_in_code, phone,
                                             requester=web.address(request))
        except InvalidInputError:
            _ = web.languages.translations[web.lang(request)].gettext
            return web.render(request, "signin.html.j2", status=400, phone=phone,
                              step="phone", sent_to=None,
                              error=_("Please enter an 11-digit mobile number."))
        except CloudfilmError as exc:
            return web.render(request, "signin.html.j2", status=status_of(exc), phone=phone,
                              step="phone", sent_to=None, error=web.message(request, exc))
        return web.render(request, "signin.html.j2", phone=phone, step="code", error=None,
                          sent_to=masked)

    @router.post("/signin")
    async def sign_in(request: Request) -> Response:
        form = await web.check_csrf(request)
        phone, code = form.get("phone", "").strip(), form.get("code", "").strip()
        try:
            signed = await run_in_threadpool(svc.accounts.sign_in_resident, phone, code,
                                             requester=web.address(request))
        except NotFoundError:
            # The code proved the phone, but no account uses it: register with the name and
            # ID number a hospital recorded, and a new code (the first one is spent).
            _ = web.languages.translations[web.lang(request)].gettext
            try:
                masked = await run_in_threadpool(svc.accounts.send_sign_in_code, phone,
                                                 requester=web.address(request))
            except CloudfilmError as exc:
                return web.render(request, "signin.html.j2", status=status_of(exc),
                                  phone=phone, step="phone", sent_to=None,
                                  error=web.message(request, exc))
            return web.render(request, "signin.html.j2", phone=phone, step="register",
                              sent_to=masked, error=None, notice=_(NO_ACCOUNT))
        except CloudfilmError as exc:
            return web.render(request, "signin.html.j2", status=status_of(exc), phone=phone,
                              step="code", sent_to=None, error=web.message(request, exc))
        return await run_in_threadpool(_signed_in, request, signed)

    @router.post("/register")
    async def register(request: Request) -> Response:
        form = await web.check_csrf(request)
        phone, code = form.get("phone", "").strip(), form.get("code", "").strip()
        name, nid = form.get("name", "").strip(), form.get("national_id", "").strip()
        # The second factor (issue 11): the phone a hospital recorded for the resident, or
        # the one-time activation code printed on the report slip.
        activation = form.get("activation_code", "").strip()
        _ = web.languages.translations[web.lang(request)].gettext
        try:
            signed = await run_in_threadpool(
                lambda: svc.accounts.register_resident(phone, code, name=name, national_id=nid,
                                                       requester=web.address(request),
                                                       activation_code=activation))
        except (InvalidInputError, AlreadyExistsError) as exc:
            error = (_(NO_MATCH) if isinstance(exc, InvalidInputError)
                     else _("This person or this phone has an account already."))
            return web.render(request, "signin.html.j2", status=status_of(exc), phone=phone,
                              step="phone", sent_to=None, error=error)
        except CloudfilmError as exc:
            return web.render(request, "signin.html.j2", status=status_of(exc), phone=phone,
                              step="phone", sent_to=None, error=web.message(request, exc))
        return await run_in_threadpool(_signed_in, request, signed)

    def _signed_in(request: Request, signed: Any) -> Response:
        response = RedirectResponse(f"{PREFIX}", status_code=303)
        seconds = max(int((signed.expires_at - datetime.now(UTC)).total_seconds()), 60)
        response.set_cookie(SESSION_COOKIE, signed.token, max_age=seconds, httponly=True,
                            samesite="lax", secure=request.url.scheme == "https", path="/")
        response.delete_cookie(FOR_COOKIE, path=PREFIX)
        actor = svc.accounts.actor_for_token(signed.token, address=web.address(request))
        elderly = svc.preferences.elderly(actor) if actor is not None else None
        if elderly is not None:
            _elderly_cookie(request, response, elderly)
        return response

    @router.post("/signout")
    async def sign_out(request: Request) -> Response:
        form = await web.check_csrf(request)
        token = request.cookies.get(SESSION_COOKIE, "")
        if token and form.get("everywhere") == "1":
            # Every phone and browser of this account: its sessions end in the database.
            actor = await run_in_threadpool(lambda: web.actor(request, full=True))
            await run_in_threadpool(svc.accounts.sign_out_everywhere, actor)
            svc.viewings.forget_subject(actor.subject)
        elif token:
            await run_in_threadpool(svc.accounts.sign_out, token)
        if token:
            svc.viewings.forget(token)  # this process at once; others within seconds
        response = RedirectResponse(f"{PREFIX}/signin", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        response.delete_cookie(FOR_COOKIE, path=PREFIX)
        return response

    @router.post("/settings")
    async def settings(request: Request) -> Response:
        form = await web.check_csrf(request)
        back = form.get("back", "")
        # Only back into the portal: never an open redirect.
        response = RedirectResponse(back if back.startswith(f"{PREFIX}") and "//" not in back
                                    else PREFIX, status_code=303)
        if "elderly" in form:
            on = form["elderly"] == "1"
            # Kept with the account (every phone it signs in on), and in a cookie for
            # the pages before sign-in.
            try:
                actor = await run_in_threadpool(lambda: web.actor(request, full=True))
            except Redirect:
                actor = None
            if actor is not None:
                await run_in_threadpool(svc.preferences.set_elderly, actor, on)
            _elderly_cookie(request, response, on)
        return response

    # -- timeline --

    @router.get("")
    def timeline(request: Request, year: str | None = None, hospital: int | None = None,
                 modality: str | None = None, offset: int = 0) -> Response:
        actor = web.actor(request)
        full = web.actor(request, full=True)
        page = svc.timeline.page(actor, year=year or None, hospital_id=hospital,
                                 modality=modality or None, limit=PAGE_SIZE,
                                 offset=max(offset, 0))
        query = {"year": year or "", "hospital": hospital or "", "modality": modality or ""}
        more = None
        if page.has_more:
            more = (f"{PREFIX}?year={query['year']}&hospital={query['hospital']}"
                    f"&modality={query['modality']}&offset={offset + PAGE_SIZE}")
        template = ("_studies.html.j2" if request.headers.get("hx-request")
                    and offset > 0 else "timeline.html.j2")
        family = _family(web, full)
        return web.render(request, template, page=page, query=query, more=more,
                          family=family, names=dict(family), acting=actor.resident_ids,
                          presets=PRESET_NAMES)

    @router.get("/studies/{study_uid}")
    def study(request: Request, study_uid: str) -> Response:
        actor = web.actor(request)
        summary, series = svc.timeline.study(actor, _uid(study_uid))
        report = None
        if summary.report_id:
            report = svc.reports.get(summary.report_id, actor=actor)
        # AI results: only finding sets a doctor confirmed, never the AI series as images.
        ai_sets, ai_series = (svc.ai.results.for_portal(actor, study_uid)
                              if svc.ai is not None else ([], set()))
        series = [s for s in series if s.series_instance_uid not in ai_series]
        return web.render(request, "study.html.j2", study=summary, series=series,
                          report=report, ai_sets=ai_sets)

    @router.get("/thumbs/{study_uid}/{series_uid}/{sop_uid}")
    def thumbnail(request: Request, study_uid: str, series_uid: str, sop_uid: str) -> Response:
        actor = web.actor(request)
        data = svc.retrieve.rendered(_uid(study_uid), _uid(series_uid), _uid(sop_uid),
                                     actor=actor, viewport=(144, 144), quality=80)
        return _jpeg(data)

    @router.get("/frames/{study_uid}/{series_uid}/{sop_uid}/{frame}")
    def frame(request: Request, study_uid: str, series_uid: str, sop_uid: str, frame: int,
              preset: str = "default", size: int = 512) -> Response:
        return _frame(web.actor(request), study_uid, series_uid, sop_uid, frame, preset, size)

    def _frame(actor: Actor, study_uid: str, series_uid: str, sop_uid: str, frame: int,
               preset: str, size: int) -> Response:
        data = svc.retrieve.rendered(_uid(study_uid), _uid(series_uid), _uid(sop_uid),
                                     actor=actor, frame=frame, window=_window(preset),
                                     viewport=(_snap(size), _snap(size)), quality=75)
        return _jpeg(data)

    # -- the viewer's frames: one decision per viewing (services/portal/viewing.py) --

    @router.get("/view/{cap}/frames/{sop_uid}/{frame}")
    def viewing_frame(request: Request, cap: str, sop_uid: str, frame: int,
                      preset: str = "default", size: int = 512, wc: int | None = None,
                      ww: int | None = None) -> Response:
        token = request.cookies.get(SESSION_COOKIE, "")

        def present() -> Actor | None:
            return svc.accounts.actor_for_token(token, address=web.address(request))

        data = svc.viewings.frame(cap[:512], _uid(sop_uid), frame, secret=token,
                                  present=present, window=_window(preset, wc, ww),
                                  size=_snap(size), quality=75)
        return _jpeg(data)

    @router.get("/s/{token}/view/{cap}/frames/{sop_uid}/{frame}")
    def shared_viewing_frame(request: Request, token: str, cap: str, sop_uid: str,
                             frame: int, preset: str = "default", size: int = 512,
                             wc: int | None = None, ww: int | None = None) -> Response:
        def present() -> Actor | None:
            try:
                opened: Actor = _opened(request, token).actor
                return opened
            except CloudfilmError:
                return None  # revoked, expired, locked or the PIN changed: no more frames

        data = svc.viewings.frame(cap[:512], _uid(sop_uid), frame, secret=token[:64],
                                  present=present, window=_window(preset, wc, ww),
                                  size=_snap(size), quality=75)
        return _jpeg(data)

    @router.get("/studies/{study_uid}/series/{series_uid}/view")
    def viewer(request: Request, study_uid: str, series_uid: str, start: int = 1,
               preset: str = "default") -> Response:
        actor = web.actor(request)
        return _viewer(request, actor, _uid(study_uid), _uid(series_uid), start, preset,
                       back=f"{PREFIX}/studies/{study_uid}",
                       secret=request.cookies.get(SESSION_COOKIE, ""),
                       frames_base=f"{PREFIX}/view",
                       series_base=f"{PREFIX}/studies/{study_uid}/series")

    def _viewer(request: Request, actor: Actor, study_uid: str, series_uid: str, start: int,
                preset: str, *, back: str, secret: str, frames_base: str,
                series_base: str) -> Response:
        summary, series = svc.timeline.study(actor, study_uid)
        hidden = _ai_series(study_uid)
        series = [s for s in series if s.series_instance_uid not in hidden]
        shown = next((s for s in series if s.series_instance_uid == series_uid), None)
        if shown is None or shown.thumbnail_sop_uid is None:
            raise NotFoundError("no images in this series")
        # One decision and one audit record ("view", naming the resident) for the whole
        # series; its frames then carry the capability instead of paying for a decision.
        cap, objects = svc.viewings.open(actor, study_uid, series_uid, secret=secret)
        items: list[tuple[str, int]] = []
        for obj in objects:
            items.extend((obj.sop_instance_uid, f)
                         for f in range(1, (obj.number_of_frames or 1) + 1))
        lang = web.lang(request)
        _ = web.languages.translations[lang].gettext
        # Cine: an ultrasound loop or a multi-frame object plays by default at its pace.
        cine = shown.modality in CINE_MODALITIES or any(
            (o.number_of_frames or 1) > 1 for o in objects)
        data = {"base": f"{frames_base}/{cap}/frames", "items": items,
                "presets": {k: list(v) for k, v in PRESETS.items()},
                "defaultLabel": _("Default window"), "cine": cine, "fps": CINE_FPS,
                "window": _own_window(svc.retrieve.header(objects[len(objects) // 2]),
                                      shown.modality)}
        return web.render(request, "viewer.html.j2", study=summary, series=series,
                          current=series_uid, frames=data, back=back, series_base=series_base,
                          count=len(items), start=max(1, min(start, len(items) or 1)),
                          preset=preset if preset in PRESETS else "default",
                          presets=PRESET_NAMES, ct=shown.modality == "CT", cine=cine,
                          modality=shown.modality)

    @router.get("/reports/{report_id}")
    def report_page(request: Request, report_id: str, version: int | None = None) -> Response:
        actor = web.actor(request)
        lang = web.lang(request)
        # An earlier version too (the history on the study page links each one).
        suffix = f"?version={version}" if version is not None else ""
        page = svc.reports.html(report_id[:64], actor=actor, lang=lang, version=version,
                                pdf_url=f"{PREFIX}/reports/{report_id[:64]}/pdf{suffix}")
        return HTMLResponse(page, headers={"content-security-policy": REPORT_CSP})

    @router.get("/reports/{report_id}/pdf")
    def report_pdf(request: Request, report_id: str, version: int | None = None) -> Response:
        actor = web.actor(request)
        data = svc.reports.pdf(report_id[:64], actor=actor, lang=web.lang(request),
                               version=version)
        return Response(data, media_type="application/pdf", headers={
            "content-disposition": f'attachment; filename="report-{report_id[:32]}.pdf"',
            "cache-control": "no-store"})

    # -- downloads (each one decision of the policy, audited as "download") --

    @router.get("/studies/{study_uid}/download.zip")
    def download_study(request: Request, study_uid: str) -> Response:
        return _download(svc.downloads.study_zip(web.actor(request), _uid(study_uid),
                                                 leave_out=frozenset(_ai_series(study_uid))))

    def _ai_series(study_uid: str) -> set[str]:
        """AI results' series: never images or files on the patient's pages."""
        return svc.ai.results.hidden_series(study_uid) if svc.ai is not None else set()

    @router.get("/studies/{study_uid}/series/{series_uid}/jpeg.zip")
    def download_series(request: Request, study_uid: str, series_uid: str) -> Response:
        return _download(svc.downloads.series_jpeg_zip(web.actor(request), _uid(study_uid),
                                                       _uid(series_uid)))

    @router.get("/images/{study_uid}/{series_uid}/{sop_uid}/{frame}.jpg")
    def download_image(request: Request, study_uid: str, series_uid: str, sop_uid: str,
                       frame: int) -> Response:
        return _download(svc.downloads.image_jpeg(web.actor(request), _uid(study_uid),
                                                  _uid(series_uid), _uid(sop_uid), frame))

    # -- share links (a doctor outside the platform, no account) --

    @router.post("/studies/{study_uid}/share")
    async def share(request: Request, study_uid: str) -> Response:
        form = await web.check_csrf(request)
        actor = await run_in_threadpool(web.actor, request)
        try:
            hours = int(form.get("hours", "0"))
        except ValueError:
            raise InvalidInputError("hours must be a number") from None
        token, link = await run_in_threadpool(
            lambda: svc.shares.create(actor, _uid(study_uid), hours=hours,
                                      pin=form.get("pin", "").strip()))
        url = str(request.base_url).rstrip("/") + f"{PREFIX}/s/{token}"
        qr = segno.make(url, error="m").svg_inline(scale=4, dark="#000", light="#fff")
        return web.render(request, "shared.html.j2", link=link, url=url, qr=Markup(qr))

    @router.get("/shares")
    def shares(request: Request) -> Response:
        actor = web.actor(request, full=True)
        return web.render(request, "shares.html.j2", links=svc.shares.mine(actor))

    @router.post("/shares/{link_id}/revoke")
    async def revoke_share(request: Request, link_id: int) -> Response:
        await web.check_csrf(request)
        actor = await run_in_threadpool(lambda: web.actor(request, full=True))
        await run_in_threadpool(svc.shares.revoke, actor, link_id)
        svc.viewings.forget_subject(f"share:{link_id}")  # its frames stop here at once
        return RedirectResponse(f"{PREFIX}/shares", status_code=303)

    def _opened(request: Request, token: str, *, count: bool = False) -> Any:
        return svc.shares.open(token[:64], request.cookies.get(SHARE_PIN_COOKIE, ""),
                               address=web.address(request), count=count)

    @router.get("/s/{token}")
    def shared_study(request: Request, token: str) -> Response:
        link = svc.shares.peek(token)
        if link.has_pin and not request.cookies.get(SHARE_PIN_COOKIE):
            return web.render(request, "share_pin.html.j2", token=token, error=None)
        try:
            opened = _opened(request, token, count=True)
        except NotAuthenticatedError:
            _ = web.languages.translations[web.lang(request)].gettext
            return web.render(request, "share_pin.html.j2", status=401, token=token,
                              error=_("Wrong PIN."))
        _summary, series = svc.timeline.study(opened.actor, link.study_instance_uid)
        first = next((s for s in series if s.thumbnail_sop_uid), None)
        if first is None:
            raise NotFoundError("no images in this study")
        return _viewer(request, opened.actor, link.study_instance_uid,
                       first.series_instance_uid, 1, "default", back="", secret=token[:64],
                       frames_base=f"{PREFIX}/s/{token}/view",
                       series_base=f"{PREFIX}/s/{token}/series")

    @router.post("/s/{token}")
    async def shared_pin(request: Request, token: str) -> Response:
        form = await web.check_csrf(request)
        pin = form.get("pin", "").strip()[:4]
        response = RedirectResponse(f"{PREFIX}/s/{token[:64]}", status_code=303)
        try:
            await run_in_threadpool(lambda: svc.shares.open(
                token[:64], pin, address=web.address(request)))
        except NotAuthenticatedError:
            _ = web.languages.translations[web.lang(request)].gettext
            return web.render(request, "share_pin.html.j2", status=401, token=token,
                              error=_("Wrong PIN."))
        response.set_cookie(SHARE_PIN_COOKIE, pin, httponly=True, samesite="lax",
                            path=f"{PREFIX}/s/{token[:64]}", max_age=12 * 3600,
                            secure=request.url.scheme == "https")
        return response

    @router.get("/s/{token}/series/{series_uid}/view")
    def shared_series(request: Request, token: str, series_uid: str, start: int = 1,
                      preset: str = "default") -> Response:
        opened = _opened(request, token)
        return _viewer(request, opened.actor, opened.link.study_instance_uid,
                       _uid(series_uid), start, preset, back="", secret=token[:64],
                       frames_base=f"{PREFIX}/s/{token}/view",
                       series_base=f"{PREFIX}/s/{token}/series")

    @router.get("/s/{token}/frames/{series_uid}/{sop_uid}/{frame}")
    def shared_frame(request: Request, token: str, series_uid: str, sop_uid: str,
                     frame: int, preset: str = "default", size: int = 512) -> Response:
        opened = _opened(request, token)
        # Only the link's own study: the UID comes from the link, never from the URL.
        return _frame(opened.actor, opened.link.study_instance_uid, series_uid, sop_uid,
                      frame, preset, size)

    # -- family: act for an elderly parent or a child (services/portal/family.py) --

    @router.get("/family")
    def family(request: Request, added: str | None = None) -> Response:
        full = web.actor(request, full=True)
        return web.render(request, "family.html.j2", family=_family(web, full), step="ask",
                          error=None, name="", national_id="", done=added)

    @router.post("/family")
    async def family_ask(request: Request) -> Response:
        form = await web.check_csrf(request)
        actor = await run_in_threadpool(lambda: web.actor(request, full=True))
        name = form.get("name", "").strip()[:64]
        nid = form.get("national_id", "").strip()[:18]
        _ = web.languages.translations[web.lang(request)].gettext
        members = await run_in_threadpool(_family, web, actor)
        try:
            await run_in_threadpool(lambda: svc.family.ask(actor, name=name,
                                                           national_id=nid))
        except InvalidInputError:
            return web.render(request, "family.html.j2", status=400, family=members,
                              step="ask", name=name, national_id=nid, done=None,
                              error=_("Please check the name and the 18-character ID "
                                      "number."))
        except CloudfilmError as exc:
            return web.render(request, "family.html.j2", status=status_of(exc),
                              family=members, step="ask", name=name, national_id=nid,
                              done=None, error=web.message(request, exc))
        return web.render(request, "family.html.j2", family=members, step="code",
                          name=name, national_id=nid, error=None, done=None)

    @router.post("/family/confirm")
    async def family_confirm(request: Request) -> Response:
        form = await web.check_csrf(request)
        actor = await run_in_threadpool(lambda: web.actor(request, full=True))
        name = form.get("name", "").strip()[:64]
        nid = form.get("national_id", "").strip()[:18]
        code = form.get("code", "").strip()[:32]
        _ = web.languages.translations[web.lang(request)].gettext
        try:
            await run_in_threadpool(lambda: svc.family.confirm(
                actor, name=name, national_id=nid, code=code))
        except (NotAuthenticatedError, InvalidInputError):
            members = await run_in_threadpool(_family, web, actor)
            return web.render(request, "family.html.j2", status=400, family=members,
                              step="code", name=name, national_id=nid, done=None,
                              error=_("The code is wrong or has expired, or the name and ID "
                                      "number do not match. Please try again."))
        except CloudfilmError as exc:
            members = await run_in_threadpool(_family, web, actor)
            return web.render(request, "family.html.j2", status=status_of(exc),
                              family=members, step="code", name=name, national_id=nid,
                              done=None, error=web.message(request, exc))
        return RedirectResponse(f"{PREFIX}/family?added=1", status_code=303)

    # -- requests, grants, access log --

    @router.get("/access")
    def access(request: Request, done: str | None = None) -> Response:
        actor = web.actor(request)
        grants = svc.consent.resident_grants(actor)
        return web.render(request, "access.html.j2", grants=grants, done=done,
                          now=datetime.now(UTC))

    @router.post("/access/{grant_id}/{decision}")
    async def decide(request: Request, grant_id: int, decision: str) -> Response:
        await web.check_csrf(request)
        actor = await run_in_threadpool(web.actor, request)
        action = {"approve": svc.consent.approve, "deny": svc.consent.deny,
                  "revoke": svc.consent.revoke}.get(decision)
        if action is None:
            raise NotFoundError("unknown decision")
        await run_in_threadpool(action, actor, grant_id)
        return RedirectResponse(f"{PREFIX}/access?done={decision}", status_code=303)

    @router.get("/log")
    def access_log(request: Request) -> Response:
        actor = web.actor(request)
        entries = svc.audit.access_log(actor, limit=100)
        return web.render(request, "log.html.j2", entries=entries)

    # -- research and AI use: the resident's refusal (issue 19) --

    @router.get("/research")
    def research(request: Request, done: str | None = None) -> Response:
        actor = web.actor(request, full=True)
        people = [(rid, name, svc.research.refusal(actor, rid))
                  for rid, name in _family(web, actor)]
        return web.render(request, "research.html.j2", people=people, done=done)

    @router.post("/research")
    async def research_choice(request: Request) -> Response:
        form = await web.check_csrf(request)
        actor = await run_in_threadpool(lambda: web.actor(request, full=True))
        try:
            resident_id = int(form.get("resident_id", ""))
        except ValueError:
            raise InvalidInputError("say for whom (resident_id)") from None
        refused = form.get("refused") == "1"
        await run_in_threadpool(svc.research.set_refusal, actor, refused, resident_id)
        return RedirectResponse(f"{PREFIX}/research?done={'refused' if refused else 'allowed'}",
                                status_code=303)

    return router


def _elderly_cookie(request: Request, response: Response, on: bool) -> None:
    response.set_cookie(ELDERLY_COOKIE, "1" if on else "0", max_age=365 * 86400,
                        samesite="lax", httponly=True, path="/",
                        secure=request.url.scheme == "https")


def _download(download: Download) -> Response:
    headers = {"content-disposition": f'attachment; filename="{download.filename}"',
               "cache-control": "no-store"}
    if download.size is not None:
        headers["content-length"] = str(download.size)
    return StreamingResponse(download.chunks, media_type=download.media_type,
                             headers=headers)


def _snap(size: int) -> int:
    """A few sizes only, so that the disk cache is shared between phones."""
    return min(FRAME_SIZES, key=lambda s: abs(s - size))


def _window(preset: str, centre: int | None = None,
            width: int | None = None) -> tuple[float, float, str] | None:
    """A dragged window (centre, width; the viewer snaps them to steps so the cache is
    shared), else a named preset, else the image's own window."""
    if centre is not None and width is not None:
        return (float(max(-32768, min(65535, centre))),
                float(max(1, min(65536, width))), "LINEAR")
    if preset in PRESETS:
        w, c = PRESETS[preset]
        return (float(c), float(w), "LINEAR")
    return None


def _first(value: Any) -> float:
    """A header number that may hold several values (WindowCenter of several windows)."""
    try:
        return float(value)
    except TypeError:
        return float(value[0])


def _own_window(header: Any, modality: str) -> list[int]:
    """Where a brightness/contrast drag starts from the image's own window: [width,
    level] from the header, else a soft-tissue window for CT, else the stored range."""
    try:
        centre = header.get("WindowCenter")
        width = header.get("WindowWidth")
        if centre is not None and width is not None:
            return [max(1, round(_first(width))), round(_first(centre))]
    except (TypeError, ValueError, IndexError):
        pass
    if modality == "CT":
        return [400, 40]
    bits = int(header.get("BitsStored", 8) or 8)
    return [2 ** bits, 2 ** (bits - 1)]


def _jpeg(data: bytes) -> Response:
    # Private: these are a patient's images; a URL always renders the same bytes.
    return Response(data, media_type="image/jpeg",
                    headers={"cache-control": "private, max-age=86400"})
