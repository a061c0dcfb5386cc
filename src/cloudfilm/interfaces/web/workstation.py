"""The doctor's workstation (``/workstation``): staff sign-in, finding a patient, the patient
view (own and granted studies, locked rows elsewhere), asking for access in the three ways
or breaking the glass, reports beside the images, links into the diagnostic viewer, the
duplicate-exam prompt, and the launch from a hospital's HIS.

Routes call the services with the signed-in doctor's :class:`Actor`: the workstation
service finds patients only as the rules allow (own hospital; a national ID, audited), the
consent service makes grants, the policy decides every study and report, and the audit
trail records. Nothing here opens a database session. The sign-in page is every staff
page's (``/dashboard`` and ``/admin`` send people here with ``?next=``).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from cloudfilm.interfaces.web.pages import Redirect, Web, status_of
from cloudfilm.interfaces.web.security import REPORT_CSP, SESSION_COOKIE
from cloudfilm.services.access.consent import GrantRequest, GrantView, InPersonEvidence
from cloudfilm.services.access.workstation import PatientRecord
from cloudfilm.services.errors import (
    CloudfilmError,
    InvalidInputError,
    NotAuthenticatedError,
    NotAuthorizedError,
    NotFoundError,
    RateLimitedError,
)
from cloudfilm.services.kernel.actor import Actor, Role
from cloudfilm.services.recognition.service import CheckRequest

PREFIX = "/workstation"
SIGNIN = f"{PREFIX}/signin"
EXPIRES_COOKIE = "cloudfilm_ws_expires"
WARN_SECONDS = 300  # the session-timeout warning shows this long before the end
STAFF_ROOTS = ("/workstation", "/dashboard", "/admin")
DOCTOR = (Role.DOCTOR,)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_CONTROL = re.compile(r"[\x00-\x20\\]")

LEVELS = {"tertiary": "Tertiary hospital", "secondary": "Secondary hospital",
          "primary": "Primary care", "": "Hospital"}
MODES = {"sms": "SMS code", "portal": "Approval in the patient's portal",
         "in_person": "In person (ID card and witness)", "break_glass": "Emergency (break-glass)"}
STATUSES = {"requested": "Waiting", "active": "Active", "denied": "Denied",
            "revoked": "Ended", "expired": "Expired"}
REASONS = {"emergency": "Emergency", "condition_changed": "Condition changed",
           "prior_quality_insufficient": "Prior quality insufficient",
           "different_protocol": "A different protocol is needed",
           "patient_request": "The patient asks for it", "other": "Other (say why)"}
SEXES = {"M": "Male", "F": "Female"}


def safe_next(value: str | None) -> str | None:
    """A local path under a staff page root, or None: never another site (``//host``,
    ``https:``, ``/\\host``), never a control character, never outside the staff pages."""
    if not value or len(value) > 1024 or not value.startswith("/"):
        return None
    if value.startswith("//") or _CONTROL.search(value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    path = parts.path
    if "//" in path or any(seg in (".", "..") for seg in path.split("/")):
        return None  # dot segments could climb out of the staff roots
    if not any(path == root or path.startswith(root + "/") for root in STAFF_ROOTS):
        return None
    return value


def _uid(value: str) -> str:
    if len(value) > 64 or not _UID.match(value):
        raise NotFoundError("not a DICOM UID")
    return value


def build_router(web: Web) -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)
    svc = web.services

    def doctor(request: Request) -> Actor:
        return web.signed_in(request, DOCTOR, SIGNIN)

    def gettext(request: Request) -> Any:
        return web.languages.translations[web.lang(request)].gettext

    def page(request: Request, template: str, actor: Actor | None, *, status: int = 200,
             **context: Any) -> HTMLResponse:
        """A workstation page: the doctor's header, the session's end for the warning."""
        hospital = ("", "")
        if actor is not None:
            hospital = svc.workstation.hospital(actor)
        expires = request.cookies.get(EXPIRES_COOKIE, "")
        return web.render(request, template, status=status, me=actor, hospital=hospital,
                          expires=expires if expires.isdigit() else "", warn=WARN_SECONDS,
                          levels=LEVELS, modes=MODES, statuses=STATUSES, reasons=REASONS,
                          sexes=SEXES, **context)

    # -- sign-in, sign-out, session ---------------------------------------------------

    @router.get("/signin")
    def signin_page(request: Request, next: str | None = None) -> Response:
        return page(request, "ws_signin.html.j2", None, next=safe_next(next) or "",
                    username="", error=None)

    @router.post("/signin")
    async def sign_in(request: Request) -> Response:
        form = await web.check_csrf(request)
        username = form.get("username", "").strip()[:64]
        target = safe_next(form.get("next"))
        _ = gettext(request)
        try:
            signed = await run_in_threadpool(lambda: svc.accounts.sign_in_password(
                username, form.get("password", ""), requester=web.address(request)))
        except NotAuthenticatedError as exc:
            return page(request, "ws_signin.html.j2", None, status=status_of(exc),
                        next=target or "", username=username,
                        error=_("Wrong user name or password."))
        except RateLimitedError as exc:
            return page(request, "ws_signin.html.j2", None, status=status_of(exc),
                        next=target or "", username=username,
                        error=_("Too many failed sign-ins. Please try again in %(seconds)s "
                                "seconds.") % {"seconds": exc.retry_after})
        except CloudfilmError as exc:
            return page(request, "ws_signin.html.j2", None, status=status_of(exc),
                        next=target or "", username=username,
                        error=web.message(request, exc))
        actor = signed.actor
        if actor.has(Role.RESIDENT):
            # Residents sign in with their phone in the portal; never a staff session.
            await run_in_threadpool(svc.accounts.sign_out, signed.token)
            return page(request, "ws_signin.html.j2", None, status=403, next="",
                        username=username, error=_("Wrong user name or password."))
        default = PREFIX if actor.has(Role.DOCTOR) else "/dashboard"
        if actor.has(Role.DOCTOR) and target is None:
            target = PREFIX
        response = RedirectResponse(target or default, status_code=303)
        _session_cookies(request, response, signed.token, signed.expires_at)
        return response

    @router.post("/signout")
    async def sign_out(request: Request) -> Response:
        await web.check_csrf(request)
        token = request.cookies.get(SESSION_COOKIE, "")
        if token:
            await run_in_threadpool(svc.accounts.sign_out, token)
        response = RedirectResponse(SIGNIN, status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        response.delete_cookie(EXPIRES_COOKIE, path="/")
        return response

    @router.post("/session/renew")
    async def renew(request: Request) -> Response:
        """"Stay signed in": a fresh session (the old one ends); JSON for the script."""
        await web.check_csrf(request)
        token = request.cookies.get(SESSION_COOKIE, "")
        signed = await run_in_threadpool(lambda: svc.accounts.renew_session(
            token, address=web.address(request)))
        if signed is None:
            return JSONResponse({"error": "signed-out", "signin": SIGNIN}, status_code=401)
        response = JSONResponse({"expires": int(signed.expires_at.timestamp())})
        _session_cookies(request, response, signed.token, signed.expires_at)
        return response

    # -- finding a patient ------------------------------------------------------------

    @router.get("")
    def home(request: Request, q: str = "") -> Response:
        actor = doctor(request)
        results = None
        error = None
        query = q.strip()[:64]
        if query:
            try:
                results = svc.workstation.find(actor, query)
            except (InvalidInputError, RateLimitedError) as exc:
                _ = gettext(request)
                error = (_("This national ID number is not valid (check digit).")
                         if isinstance(exc, InvalidInputError) and re.fullmatch(
                             r"\d{17}[\dXx]", query) else web.message(request, exc))
        return page(request, "ws_home.html.j2", actor, q=query, results=results, error=error)

    # -- the patient ------------------------------------------------------------------

    def _patient_page(request: Request, actor: Actor, ref: str, *, study: str | None = None,
                      item: str = "", notice: str | None = None, error: str | None = None,
                      status: int = 200) -> Response:
        record = svc.workstation.open(actor, ref)
        grants = _grants_of(actor, record)
        selected = None
        detail = None
        if study:
            selected = next((s for s in record.studies if s.study_instance_uid == study), None)
        if selected is None and record.studies:
            selected = record.studies[0]
        if selected is not None and selected.report_id:
            detail = svc.reports.get(selected.report_id, actor=actor)
        items = svc.recognition.items(include_inactive=False)
        return page(request, "ws_patient.html.j2", actor, status=status, record=record,
                    ref=ref, selected=selected, report=detail, grants=grants,
                    now=datetime.now(UTC), items=items, item=item.upper()[:32],
                    notice=notice, error=error)

    @router.get("/patients/{ref}")
    def patient(request: Request, ref: str, study: str | None = None, item: str = "",
                notice: str = "") -> Response:
        actor = doctor(request)
        _ = gettext(request)
        notices = {
            "sms": _("A code was sent to the patient's phone. Ask the patient to read it "
                     "out, and type it in below."),
            "portal": _("The request is in the patient's portal. This page shows when they "
                        "answer."),
            "in_person": _("Consent recorded. Your hospital's administrator reviews it."),
            "break_glass": _("Emergency access is open. The patient is told, and it is "
                             "reviewed."),
            "granted": _("Access granted. The patient's studies are open to you."),
            "active": _("The patient approved. The studies are open to you."),
            "denied": _("The patient declined the request."),
        }
        return _patient_page(request, actor, ref[:64], study=study, item=item,
                             notice=notices.get(notice))

    @router.get("/patients/{ref}/studies/{study_uid}")
    def study_pane(request: Request, ref: str, study_uid: str) -> Response:
        actor = doctor(request)
        if not request.headers.get("hx-request"):
            return _patient_page(request, actor, ref[:64], study=_uid(study_uid))
        record = svc.workstation.open(actor, ref[:64])
        selected = next((s for s in record.studies
                         if s.study_instance_uid == _uid(study_uid)), None)
        if selected is None:
            raise NotAuthorizedError("not a study you may open")
        detail = svc.reports.get(selected.report_id, actor=actor) if selected.report_id \
            else None
        return page(request, "ws_study.html.j2", actor, record=record, ref=ref[:64],
                    selected=selected, report=detail)

    def _grants_of(actor: Actor, record: PatientRecord) -> list[GrantView]:
        rid = record.card.resident_id
        if rid is None:
            return []
        return [g for g in svc.consent.doctor_grants(actor) if g.resident_id == rid]

    # -- asking for access ------------------------------------------------------------

    @router.post("/patients/{ref}/access")
    async def ask(request: Request, ref: str) -> Response:
        form = await web.check_csrf(request)
        actor = await run_in_threadpool(doctor, request)
        record = await run_in_threadpool(svc.workstation.open, actor, ref[:64])
        rid = record.card.resident_id
        _ = gettext(request)
        mode = form.get("mode", "")
        purpose = form.get("purpose", "").strip()
        if rid is None:
            raise NotFoundError("this patient record is not linked to a resident")
        try:
            hours = int(form["hours"]) if form.get("hours", "").strip() else None
        except ValueError:
            hours = None
        req = GrantRequest(purpose=purpose, resident_id=rid, hours=hours)
        try:
            if mode in ("sms", "portal"):
                view = await run_in_threadpool(lambda: svc.consent.request(actor, req,
                                                                           mode=mode))
            elif mode == "in_person":
                evidence = InPersonEvidence(form.get("id_card", "").strip(),
                                            witness_name=form.get("witness", "").strip())
                view = await run_in_threadpool(svc.consent.in_person, actor, req, evidence)
            elif mode == "break_glass":
                if len(purpose) < 10:
                    return await run_in_threadpool(lambda: _patient_page(
                        request, actor, ref[:64], status=400,
                        error=_("Emergency access needs a reason of at least 10 characters. "
                                "It is reviewed afterwards.")))
                view = await run_in_threadpool(svc.consent.break_glass, actor, req)
            else:
                raise InvalidInputError("unknown mode")
        except InvalidInputError as exc:
            message = (_("Please say why you need the studies.") if not purpose else
                       _("This patient cannot be asked this way. Try another way, or record "
                         "the consent in person.") if exc.code == "grant-undeliverable" else
                       web.message(request, exc))
            return await run_in_threadpool(lambda: _patient_page(
                request, actor, ref[:64], status=400, error=message))
        except NotAuthorizedError:
            return await run_in_threadpool(lambda: _patient_page(
                request, actor, ref[:64], status=403,
                error=_("The ID card number does not match this patient.") if mode ==
                "in_person" else _("You cannot see this, or it does not exist.")))
        except CloudfilmError as exc:
            code, message = status_of(exc), web.message(request, exc)
            return await run_in_threadpool(lambda: _patient_page(
                request, actor, ref[:64], status=code, error=message))
        query = urlencode({"notice": mode, "grant": view.id})
        return RedirectResponse(f"{PREFIX}/patients/{ref[:64]}?{query}#access",
                                status_code=303)

    @router.post("/grants/{grant_id}/code")
    async def confirm_code(request: Request, grant_id: int) -> Response:
        form = await web.check_csrf(request)
        actor = await run_in_threadpool(doctor, request)
        ref = form.get("ref", "")[:64]
        _ = gettext(request)
        try:
            await run_in_threadpool(svc.consent.confirm_sms, actor, grant_id,
                                    form.get("code", "").strip()[:12])
        except InvalidInputError:
            return await run_in_threadpool(lambda: _patient_page(
                request, actor, ref, status=400,
                error=_("The code is wrong, expired or already used. Check it with the "
                        "patient, or send a new request.")))
        except RateLimitedError as exc:
            message = web.message(request, exc)
            return await run_in_threadpool(lambda: _patient_page(
                request, actor, ref, status=429, error=message))
        return RedirectResponse(f"{PREFIX}/patients/{ref}?notice=granted", status_code=303)

    @router.get("/grants/{grant_id}/status")
    def grant_status(request: Request, grant_id: int, ref: str = "") -> Response:
        """The live status of a portal request (htmx polls it); active: reload the page."""
        actor = doctor(request)
        grant = next((g for g in svc.consent.doctor_grants(actor) if g.id == grant_id), None)
        if grant is None:
            raise NotFoundError("no such request of yours")
        if grant.status != "requested" and request.headers.get("hx-request"):
            target = f"{PREFIX}/patients/{ref[:64]}?notice={grant.status}" if ref else PREFIX
            return Response(status_code=204, headers={"hx-redirect": target})
        return page(request, "ws_grant_status.html.j2", actor, grant=grant, ref=ref[:64])

    @router.post("/grants/{grant_id}/withdraw")
    async def withdraw(request: Request, grant_id: int) -> Response:
        form = await web.check_csrf(request)
        actor = await run_in_threadpool(doctor, request)
        await run_in_threadpool(svc.consent.revoke, actor, grant_id)
        ref = form.get("ref", "")[:64]
        return RedirectResponse(f"{PREFIX}/patients/{ref}#access" if ref
                                else f"{PREFIX}/requests", status_code=303)

    @router.get("/requests")
    def requests_page(request: Request) -> Response:
        actor = doctor(request)
        grants = svc.consent.doctor_grants(actor)
        refs = {g.resident_id: svc.workstation.ref(actor, resident_id=g.resident_id)
                for g in grants}
        return page(request, "ws_requests.html.j2", actor, grants=grants, refs=refs,
                    now=datetime.now(UTC))

    # -- reports ----------------------------------------------------------------------

    @router.get("/reports/{report_id}")
    def report_page(request: Request, report_id: str, version: int | None = None) -> Response:
        actor = doctor(request)
        html = svc.reports.html(report_id[:64], actor=actor, lang=web.lang(request),
                                version=version)
        return HTMLResponse(html, headers={"content-security-policy": REPORT_CSP})

    # -- the duplicate-exam prompt (issue 15) -------------------------------------------

    @router.post("/patients/{ref}/order")
    async def order(request: Request, ref: str) -> Response:
        form = await web.check_csrf(request)
        actor = await run_in_threadpool(doctor, request)
        record = await run_in_threadpool(svc.workstation.open, actor, ref[:64])
        _ = gettext(request)
        item = form.get("item", "").strip().upper()[:32]
        error = None
        result = None
        if not record.card.local_ids:
            error = _("Register the patient at your hospital first (HIS registration); the "
                      "check needs your hospital's patient ID.")
        else:
            try:
                result = await run_in_threadpool(svc.recognition.check, actor, CheckRequest(
                    patient_id=record.card.local_ids[0], item_code=item,
                    department=form.get("department", "").strip()[:128]))
            except NotFoundError:
                error = _("Register the patient at your hospital first (HIS registration); "
                          "the check needs your hospital's patient ID.")
            except CloudfilmError as exc:
                error = web.message(request, exc)
        open_uids = {s.study_instance_uid for s in record.studies}
        return page(request, "ws_prompt.html.j2", actor, status=400 if error else 200,
                    result=result, error=error, ref=ref[:64], open_uids=open_uids,
                    decided=None)

    @router.post("/recognition/{decision_id}")
    async def decide(request: Request, decision_id: str) -> Response:
        form = await web.check_csrf(request)
        actor = await run_in_threadpool(doctor, request)
        decision = form.get("decision", "")
        reason = form.get("reason", "") if decision == "repeat" else ""
        _ = gettext(request)
        try:
            await run_in_threadpool(lambda: svc.recognition.decide(
                actor, decision_id[:36], decision, reason=reason,
                text=form.get("text", "")[:256]))
        except InvalidInputError:
            return page(request, "ws_decided.html.j2", actor, status=400, decided=None,
                        error=_("Choose a reason (and say why for \u201cother\u201d)."),
                        study="", ref="")
        study = form.get("study", "")
        ref = form.get("ref", "")[:64]
        return page(request, "ws_decided.html.j2", actor, decided=decision, error=None,
                    reason=reason, study=study if _UID.match(study) else "", ref=ref,
                    can_open=form.get("open") == "1")

    @router.get("/recognition/{decision_id}")
    def recognition_link(request: Request, decision_id: str, study: str = "") -> Response:
        """Where a CDS Hooks card's "view prior" link lands: the viewer when the doctor may
        open the prior, else a page that says how to get the patient's consent."""
        actor = doctor(request)
        uid = _uid(study) if study else ""
        if uid:
            try:
                svc.timeline.study(actor, uid)
            except NotAuthorizedError:
                pass
            else:
                return RedirectResponse(f"{PREFIX}/viewer?{urlencode({'study': uid})}",
                                        status_code=303)
        return page(request, "ws_consent_needed.html.j2", actor, decision_id=decision_id[:36])

    # -- launch from the HIS ----------------------------------------------------------

    @router.get("/launch")
    def launch(request: Request, token: str = "", patient: str = "", accession: str = "",
               study: str = "", item: str = "") -> Response:
        query: dict[str, str] = {}
        signed = None
        if token:
            # A token from the HIS signs its doctor in where nobody is (services/access/
            # launch.py); a session here must be that doctor's.
            actor = web.session_actor(request)
            _ = gettext(request)
            try:
                opened = svc.launches.redeem(actor, token[:80], address=web.address(request))
            except (NotFoundError, NotAuthorizedError) as exc:
                # In words the doctor can act on (the HIS button is their way in).
                message = (_("This link from the HIS has been used or has expired (it opens "
                             "once, within 5 minutes). Open the patient from the HIS again.")
                           if isinstance(exc, NotFoundError) else
                           _("This link from the HIS is for another doctor, and someone else "
                             "is signed in here. Sign out, then open it from the HIS again."))
                return web.render(request, "error.html.j2", status=status_of(exc),
                                  message=message)
            signed = opened.signed_in
            if signed is not None:
                actor = signed.actor
            assert actor is not None
            ref = svc.workstation.ref(actor, resident_id=opened.resident_id) \
                if opened.resident_id is not None else \
                svc.workstation.ref(actor, patient_fk=opened.patient_fk)
            if opened.study_uid:
                query["study"] = opened.study_uid
            if opened.item_code:
                query["item"] = opened.item_code
        else:
            actor = doctor(request)
            if not patient.strip():
                raise InvalidInputError("give patient= (national or local ID) or token=")
            found = svc.workstation.find(actor, patient.strip()[:64])
            if len(found) != 1:
                return RedirectResponse(f"{PREFIX}?{urlencode({'q': patient.strip()[:64]})}",
                                        status_code=303)
            ref = found[0].ref
            if study:
                query["study"] = _uid(study)
            elif accession:
                record = svc.workstation.open(actor, ref)
                hit = next((s for s in record.studies
                            if s.accession_number == accession.strip()), None)
                if hit is not None:
                    query["study"] = hit.study_instance_uid
            if item:
                query["item"] = item.strip().upper()[:32]
        suffix = f"?{urlencode(query)}" if query else ""
        response = RedirectResponse(f"{PREFIX}/patients/{ref}{suffix}", status_code=303)
        if signed is not None:
            _session_cookies(request, response, signed.token, signed.expires_at)
        return response

    return router


def _session_cookies(request: Request, response: Response, token: str,
                     expires_at: datetime) -> None:
    secure = request.url.scheme == "https"
    seconds = max(int((expires_at - datetime.now(UTC)).total_seconds()), 60)
    response.set_cookie(SESSION_COOKIE, token, max_age=seconds, httponly=True,
                        samesite="lax", secure=secure, path="/")
    # When the session ends, for the timeout warning (the session itself is checked on
    # the server at every request; this only says when to warn).
    response.set_cookie(EXPIRES_COOKIE, str(int(expires_at.timestamp())), max_age=seconds,
                        httponly=True, samesite="lax", secure=secure, path="/")


__all__ = ["Redirect", "build_router", "safe_next"]
