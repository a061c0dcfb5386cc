"""What every group of pages shares: the request context (language, CSRF token, the
signed-in actor), rendering, error pages, static assets and browser safety.

A page group (the portal, the workstation, the dashboard, the admin pages) is a module in
this package with a ``build_router(web) -> APIRouter``; ``install_pages`` mounts every group
listed in ``_routers``. A page group never opens a database session: it calls services with
the signed-in :class:`Actor`, so the access policy decides and the audit trail records.
"""

from __future__ import annotations

import inspect
import mimetypes
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from stat import S_ISREG
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from babel.dates import format_datetime
from fastapi import APIRouter, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.types import Scope

from cloudfilm.interfaces.api.auth import client_host
from cloudfilm.interfaces.web import labels
from cloudfilm.interfaces.web.assets import STATIC_DIR, Assets
from cloudfilm.interfaces.web.i18n import LANG_COOKIE, LANGUAGES, Languages, choose
from cloudfilm.interfaces.web.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    BrowserSafetyMiddleware,
    csrf_matches,
    is_page,
    new_csrf_token,
)
from cloudfilm.services.container import Services
from cloudfilm.services.errors import (
    AlreadyExistsError,
    CloudfilmError,
    InvalidInputError,
    NotAcceptableError,
    NotAuthenticatedError,
    NotAuthorizedError,
    NotFoundError,
    RateLimitedError,
)
from cloudfilm.services.kernel.actor import Actor, Role

PORTAL = "/portal"
FOR_COOKIE = "cloudfilm_for"
ELDERLY_COOKIE = "cloudfilm_elderly"
# Paths under the page roots that answer images or JSON to scripts: their errors are JSON,
# not an error page.
DATA_MARKERS = ("/frames/", "/thumbs/", "/data/", "/api/")
_PHONE_UA = re.compile(r"Mobi|Android|iPhone|iPad|MicroMessenger|HarmonyOS", re.I)


def _routers() -> list[Callable[[Web], APIRouter]]:
    """Every page group's router builder (imported here: the groups import this module)."""
    from cloudfilm.interfaces.web import (
        admin,
        ai_results,
        dashboard,
        diagnostic,
        portal,
        workstation,
    )

    return [portal.build_router, workstation.build_router, diagnostic.build_router,
            dashboard.build_router, admin.build_router, ai_results.build_router]


def _is_data(path: str) -> bool:
    return any(marker in path for marker in DATA_MARKERS)


@dataclass(frozen=True, slots=True)
class WebOptions:
    """What the pages need from the settings (``web`` section)."""

    hosts: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
    zone: str = "Asia/Shanghai"


class Redirect(Exception):
    """Leave the page for another (not signed in: the sign-in page)."""

    def __init__(self, url: str) -> None:
        self.url = url


class Web:
    """Templates, assets and helpers shared by the portal's routes."""

    def __init__(self, services: Services, options: WebOptions) -> None:
        self.services = services
        self.options = options
        self.assets = Assets()
        self._languages: Languages | None = None
        self.zone = ZoneInfo(options.zone)

    @property
    def languages(self) -> Languages:
        # Built on the first page, not at start-up: API-only worker processes never pay
        # for the catalogues and template environments.
        if self._languages is None:
            self._languages = Languages()
        return self._languages

    # -- request context --

    def lang(self, request: Request) -> str:
        return choose(request.query_params.get("lang"), request.cookies.get(LANG_COOKIE),
                      request.headers.get("accept-language"))

    def csrf(self, request: Request) -> str:
        token = request.cookies.get(CSRF_COOKIE)
        if not token:
            token = request.scope.get("cloudfilm.new_csrf") or new_csrf_token()
            request.scope["cloudfilm.new_csrf"] = token
        return str(token)

    async def check_csrf(self, request: Request) -> dict[str, Any]:
        """The submitted form, once its CSRF token matches the cookie."""
        form = dict(await request.form())
        given = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
        if not csrf_matches(request.cookies.get(CSRF_COOKIE), str(given or "")):
            raise NotAuthorizedError("the form expired; reload the page and try again")
        return {k: str(v) for k, v in form.items()}

    def address(self, request: Request) -> str:
        return self.services.audit.hash_address(client_host(request))

    def session_actor(self, request: Request) -> Actor | None:
        """Whoever the session cookie signs in (resident, doctor, administrator), if any."""
        token = request.cookies.get(SESSION_COOKIE, "")
        if not token:
            return None
        return self.services.accounts.actor_for_token(token, address=self.address(request))

    def signed_in(self, request: Request, roles: tuple[Role, ...], signin: str) -> Actor:
        """The signed-in doctor, administrator or official holding one of ``roles``; anyone
        else goes to ``signin`` (with ``?next=`` back to this page)."""
        actor = self.session_actor(request)
        if actor is None or not any(actor.has(role) for role in roles):
            back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            raise Redirect(f"{signin}?{urlencode({'next': back})}")
        return actor

    def actor(self, request: Request, *, full: bool = False) -> Actor:
        """The signed-in resident, narrowed to the family member chosen in the switcher
        (``full``: everyone they act for). Not signed in: to the sign-in page."""
        actor = self.session_actor(request)
        if actor is None or not actor.has(Role.RESIDENT) or not actor.resident_ids:
            raise Redirect(f"{PORTAL}/signin")
        if full:
            return actor
        chosen = request.query_params.get("for") or request.cookies.get(FOR_COOKIE)
        if chosen and chosen.isdigit() and int(chosen) in actor.resident_ids:
            return replace(actor, resident_ids=frozenset({int(chosen)}))
        return actor

    def render(self, request: Request, template: str, *, status: int = 200,
               **context: Any) -> HTMLResponse:
        lang = self.lang(request)
        _ = self.languages.translations[lang].gettext
        env = self.languages.envs[lang]
        page = env.get_template(template).render(
            request=request, lang=lang, csrf=self.csrf(request), assets=self.assets,
            path=request.url.path, elderly=request.cookies.get(ELDERLY_COOKIE) == "1",
            title_of=lambda s: labels.study_title(_, lang, s.modalities, s.body_parts,
                                                  s.description),
            day=lambda v: labels.da_date(v, lang), when=lambda v: self.when(v, lang),
            report_label=lambda s: _(labels.REPORT_STATUS.get(s) or s),
            person=labels.person, action=labels.action,
            who=lambda w: labels.WHO.get(w, w), megabytes=labels.size, **context)
        response = HTMLResponse(page, status_code=status)
        self.remember(request, response, lang)
        return response

    def remember(self, request: Request, response: Response, lang: str) -> None:
        secure = request.url.scheme == "https"
        fresh = request.scope.get("cloudfilm.new_csrf")
        if fresh:
            response.set_cookie(CSRF_COOKIE, str(fresh), httponly=True, samesite="lax",
                                secure=secure, path="/")
        explicit = request.query_params.get("lang")
        if explicit in LANGUAGES:
            response.set_cookie(LANG_COOKIE, lang, max_age=365 * 86400, samesite="lax",
                                secure=secure, path="/", httponly=True)
        chosen = request.query_params.get("for")
        if chosen is not None and chosen.isdigit():
            response.set_cookie(FOR_COOKIE, chosen, samesite="lax", secure=secure,
                                path=PORTAL, httponly=True)

    def when(self, value: datetime | None, lang: str) -> str:
        if value is None:
            return "—"
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return format_datetime(aware.astimezone(self.zone), format="medium",
                               locale="zh_CN" if lang == "zh-CN" else "en")

    def message(self, request: Request, exc: CloudfilmError) -> str:
        """A service refusal in plain words of the page's language."""
        lang = self.lang(request)
        _ = self.languages.translations[lang].gettext
        if isinstance(exc, RateLimitedError):
            wait = int(exc.retry_after or 0)
            if wait >= 120:  # "3596 seconds" is hard to read: minutes, rounded up
                return _("Too many tries. Please try again in %(minutes)s minutes.") % {
                    "minutes": -(-wait // 60)}
            return _("Too many tries. Please try again in %(seconds)s seconds.") % {
                "seconds": wait}
        if isinstance(exc, NotAuthenticatedError):
            return _("The code is wrong or has expired. Please ask for a new code.")
        if isinstance(exc, NotFoundError):
            return _("Not found.")
        if isinstance(exc, NotAuthorizedError):
            return _("You cannot see this, or it does not exist.")
        if isinstance(exc, InvalidInputError):
            return _("Please check what you entered.")
        return _("The service is busy. Please try again in a minute.")


def status_of(exc: CloudfilmError) -> int:
    if isinstance(exc, RateLimitedError):
        return 429
    if isinstance(exc, NotAuthenticatedError):
        return 401
    if isinstance(exc, NotAuthorizedError):
        return 403
    if isinstance(exc, NotFoundError | NotAcceptableError):
        return 404
    if isinstance(exc, InvalidInputError):
        return 400
    if isinstance(exc, AlreadyExistsError):
        return 409
    return 503



class CachedStatic(StaticFiles):
    """The Vite build: hashed names, so a year's cache and ``immutable``; the build's brotli
    or gzip copy (``web/compress.mjs``) to a browser that accepts it (the viewer's bundle is
    megabytes: seconds on a mobile link; brotli is a fifth smaller than gzip, browsers ask
    for it over HTTPS)."""

    _CACHE = "public, max-age=31536000, immutable"
    _CODINGS = (("br", ".br"), ("gzip", ".gz"))  # preferred first

    async def get_response(self, path: str, scope: Scope) -> Response:
        accepted = {c.split(";")[0].strip() for c in
                    Headers(scope=scope).get("accept-encoding", "").lower().split(",")}
        for coding, suffix in self._CODINGS:
            if coding not in accepted:
                continue
            full, stat = await run_in_threadpool(self.lookup_path, path + suffix)
            if stat is not None and S_ISREG(stat.st_mode):
                response = FileResponse(full, stat_result=stat,
                                        media_type=mimetypes.guess_type(path)[0])
                response.headers["content-encoding"] = coding
                response.headers["vary"] = "Accept-Encoding"
                response.headers["cache-control"] = self._CACHE
                return response
        return await super().get_response(path, scope)

    def file_response(self, *args: Any, **kwargs: Any) -> Response:
        response = super().file_response(*args, **kwargs)
        response.headers["cache-control"] = self._CACHE
        response.headers["vary"] = "Accept-Encoding"
        return response


def install_pages(app: FastAPI, services: Services, options: WebOptions | None = None) -> None:
    """Add every page group's routes, static files, error pages and browser safety to ``app``."""
    # Without options (tests, embedding) the pages serve the HTTP doors' Host names.
    options = options or WebOptions(hosts=services.web.allowed_hosts)
    web = Web(services, options)
    app.state.web = web
    for build_router in _routers():
        app.include_router(build_router(web))
    (STATIC_DIR / "dist").mkdir(parents=True, exist_ok=True)
    app.mount("/static/dist", CachedStatic(directory=STATIC_DIR / "dist", check_dir=False),
              name="dist")

    @app.get("/", include_in_schema=False)
    async def root(request: Request) -> Response:
        # Phones go to the residents' portal; desks to the doctor's workstation.
        phone = _PHONE_UA.search(request.headers.get("user-agent", ""))
        return RedirectResponse(PORTAL if phone else "/workstation", status_code=302)

    @app.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> Response:
        return Response(status_code=204)

    api_handler = app.exception_handlers.get(CloudfilmError)

    async def service_error(request: Request, exc: Exception) -> Response:
        path = request.url.path
        if not is_page(path) or path == "/" or not isinstance(exc, CloudfilmError):
            assert api_handler is not None
            answer = api_handler(request, exc)
            return await answer if inspect.isawaitable(answer) else answer
        if _is_data(path):
            return JSONResponse({"error": exc.code}, status_code=status_of(exc))
        return web.render(request, "error.html.j2", status=status_of(exc),
                          message=web.message(request, exc))

    async def redirect(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Redirect)
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"hx-redirect": exc.url})
        return RedirectResponse(exc.url, status_code=303)

    app.add_exception_handler(CloudfilmError, service_error)
    app.add_exception_handler(Redirect, redirect)
    app.add_middleware(BrowserSafetyMiddleware, hosts=options.hosts)
