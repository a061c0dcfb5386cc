"""The HTTP application: DICOMweb under /dicomweb, operations endpoints, OpenAPI docs.

Every request first passes :class:`GuardMiddleware` (settings ``http.*``):

- the Host header must name this server (localhost names, the listen host,
  ``allowed_hosts``): a DNS-rebinding page that resolves its own name to 127.0.0.1 gets
  400 instead of the local operator's rights;
- a state-changing request (POST, PUT, PATCH, DELETE) whose ``Origin`` (or, without it,
  ``Referer``) is another origin gets 403: a page elsewhere cannot make a browser act on
  this API. Requests with neither header (curl, HIS systems, storescu-like clients) pass;
- ``X-Forwarded-*``/``Forwarded`` headers are dropped unless the TCP peer is one of
  ``trusted_proxies``; from those, uvicorn's ProxyHeadersMiddleware takes the client
  address and scheme (so per-requester rate limits see the real client).
"""

from __future__ import annotations

import ipaddress
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import orjson
import structlog
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from cloudfilm.interfaces.api import docs as api_docs
from cloudfilm.interfaces.api import errors
from cloudfilm.interfaces.api import metrics as index_metrics
from cloudfilm.interfaces.api.auth import authenticate, client_host
from cloudfilm.interfaces.api.dicomweb import qido, stow, ups, uri, wado
from cloudfilm.interfaces.api.dicomweb.common import DICOMWEB_PREFIX
from cloudfilm.interfaces.api.rest import (
    access,
    ai,
    audit,
    cds_hooks,
    gateway,
    identity,
    lifecycle,
    orders,
    recognition,
    reconcile,
    reports,
    research,
    stats,
    workstation,
)
from cloudfilm.interfaces.web import pages
from cloudfilm.interfaces.web.pages import WebOptions
from cloudfilm.services.access.actor import Permission
from cloudfilm.services.container import Services, WebAccess
from cloudfilm.services.errors import NotAuthorizedError

logger = logging.getLogger(__name__)

# ``api`` tells the surfaces apart (dicomweb, rest, web, ops); ``route`` is the path
# template, never the path (no UIDs in labels).
REQUESTS = Counter("cloudfilm_http_requests_total", "HTTP requests",
                   ["api", "route", "method", "status"])
LATENCY = Histogram("cloudfilm_http_request_seconds", "HTTP request latency", ["api", "route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                             5, 10, 30))
BYTES_IN = Counter("cloudfilm_http_received_bytes_total", "Request body bytes", ["route"])
# The commission's headline figures, refreshed at each scrape (issue 17), so that an
# operator's Grafana can alert on them.
CONNECTED = Gauge("cloudfilm_hospitals_connected",
                  "Hospitals that uploaded within stats.connected_days")
REGISTERED = Gauge("cloudfilm_hospitals_registered", "Active hospitals in the registry")
LATE_TODAY = Gauge("cloudfilm_studies_late_today",
                   "Studies examined today (local zone) received after the deadline")
STUDIES_TODAY = Gauge("cloudfilm_studies_today", "Studies examined today (local zone)")


class ObserveMiddleware:
    """Request id, latency and count metrics: a plain ASGI middleware (Starlette's
    BaseHTTPMiddleware wraps every response in a stream and cost ~1 ms per request)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = (headers.get(b"x-request-id") or b"").decode("latin-1")[:64]
        request_id = request_id or uuid.uuid4().hex[:16]
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            route = route_template(scope)
            api = api_of(route)
            LATENCY.labels(api, route).observe(time.perf_counter() - started)
            REQUESTS.labels(api, route, scope["method"], str(status)).inc()
            length = headers.get(b"content-length", b"")
            if length.isdigit():
                BYTES_IN.labels(route).inc(int(length))
            structlog.contextvars.clear_contextvars()


# WADO-URI also answers without the /dicomweb prefix.
_DICOMWEB_ROOTS = ("/dicomweb", "/wado")
_WEB_ROOTS = ("/portal", "/workstation", "/dashboard", "/admin", "/static", "/share", "/s/")


def route_template(scope: Any) -> str:
    """The matched route's full path template (``/dicomweb/studies/{study}``).

    FastAPI (0.16x) includes a router without copying its routes, so ``scope["route"].path``
    lacks the include prefix (``/studies/{study}`` for DICOMweb and the portal alike); the
    full template is on the effective route context it records in the scope."""
    context = (scope.get("fastapi") or {}).get("effective_route_context")
    path = getattr(context, "path", None)
    if isinstance(path, str) and path:
        return path
    return str(getattr(scope.get("route"), "path", "unmatched"))


def api_of(route: str) -> str:
    """Which surface a route template belongs to: dicomweb, rest, web or ops."""
    if route.startswith(_DICOMWEB_ROOTS):
        return "dicomweb"
    if route.startswith(("/api/", "/cds-services")):
        return "rest"
    if route.startswith(_WEB_ROOTS):
        return "web"
    return "ops"


_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PROXY_HEADERS = (b"x-forwarded-", b"forwarded", b"x-real-ip")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(entries: Iterable[str]) -> tuple[Network, ...]:
    """IPs or CIDRs as networks (a bare IP is a /32 or /128)."""
    return tuple(ipaddress.ip_network(e.strip(), strict=False) for e in entries if e.strip())


def address_in(address: str, nets: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip.version == n.version and ip in n for n in nets)


def _host_name(authority: str) -> str:
    """The host of a Host header or URL authority, lower case, without port."""
    authority = authority.strip().lower()
    if authority.startswith("["):  # [::1]:8042
        return authority[1:authority.find("]")] if "]" in authority else ""
    if authority.count(":") == 1:
        return authority.split(":", 1)[0]
    return authority


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    name = _host_name(host)
    if not name:
        return False
    for pattern in allowed:
        if pattern == "*" or pattern == name:
            return True
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return True
    return False


class GuardMiddleware:
    """Host allow-list, cross-origin refusal for state-changing requests, and proxy
    headers only from trusted proxies (module docstring). A plain ASGI middleware."""

    def __init__(self, app: Any, web: WebAccess) -> None:
        self.app = app
        self.web = web
        self.proxies = networks(web.trusted_proxies)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        peer = scope["client"][0] if scope.get("client") else ""
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        trusted = address_in(peer, self.proxies)
        if not trusted and any(n.startswith(_PROXY_HEADERS) for n, _ in headers):
            headers = [(n, v) for n, v in headers if not n.startswith(_PROXY_HEADERS)]
            scope = {**scope, "headers": headers}
        found = {n: v.decode("latin-1") for n, v in headers
                 if n in (b"host", b"origin", b"referer", b"x-forwarded-host")}
        host = found.get(b"host", "")
        # /healthz tells nothing about anyone; load balancers probe it by IP address.
        if scope["path"] != "/healthz" and not host_allowed(host, self.web.allowed_hosts):
            await _refuse(send, 400, "host-not-allowed",
                          f"Host {_host_name(host)[:100]!r} is not a name of this server; add "
                          "it to CLOUDFILM_HTTP__ALLOWED_HOSTS if it is")
            return
        if scope["method"] in _UNSAFE_METHODS:
            source = found.get(b"origin") or found.get(b"referer")
            if source is not None and not self._same_origin(
                    source, host, found.get(b"x-forwarded-host") if trusted else None):
                await _refuse(send, 403, "cross-origin",
                              "state-changing requests from pages of another origin are "
                              "refused (Origin/Referer); add the origin to "
                              "CLOUDFILM_HTTP__TRUSTED_ORIGINS if it is yours")
                return
        await self.app(scope, receive, send)

    def _same_origin(self, source: str, host: str, forwarded_host: str | None) -> bool:
        try:
            parts = urlsplit(source.strip())
        except ValueError:
            return False
        if not parts.scheme or not parts.netloc:
            return False  # "null" (sandboxed frames, file: pages) and garbage
        origin = f"{parts.scheme}://{parts.netloc}".lower()
        if origin in self.web.trusted_origins:
            return True
        own = {host.strip().lower()}
        if forwarded_host:
            own.add(forwarded_host.split(",")[0].strip().lower())
        return parts.netloc.lower() in own


async def _refuse(send: Any, status: int, code: str, message: str) -> None:
    body = orjson.dumps({"error": code, "message": message})
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def create_app(services: Services, web: WebOptions | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        # Each process (the single server or every `--workers N` worker) writes the frame
        # counts of its own open viewing windows when it stops.
        await run_in_threadpool(services.retrieve.flush_frame_audit)

    app = FastAPI(
        lifespan=lifespan,
        title="cloudfilm",
        summary="Regional medical-imaging cloud",
        description="Operations and REST API. DICOMweb (PS3.18) lives under /dicomweb.",
        version="0.1.0",
        # /docs is served from bundled assets by api.docs; ReDoc would load from a CDN.
        docs_url=None, redoc_url=None,
    )
    api_docs.install(app)
    app.state.services = services
    errors.install(app)
    for module in (stow, qido, wado, uri, ups):
        app.include_router(module.router, prefix=DICOMWEB_PREFIX, tags=["DICOMweb"])
    app.include_router(uri.router, tags=["DICOMweb"], include_in_schema=False)
    app.include_router(identity.router, prefix=identity.PREFIX, tags=["Identity"])
    app.include_router(access.router, prefix=access.PREFIX, tags=["Access"])
    app.include_router(audit.router, prefix=audit.PREFIX, tags=["Audit"])
    app.include_router(reports.router, prefix=reports.PREFIX, tags=["Reports"])
    app.include_router(recognition.router, prefix=recognition.PREFIX, tags=["Recognition"])
    app.include_router(cds_hooks.router, tags=["CDS Hooks"])
    app.include_router(orders.router, tags=["Recognition"])

    app.include_router(gateway.router, prefix=gateway.PREFIX, tags=["Gateways"])
    app.include_router(research.router, prefix=research.PREFIX, tags=["Research"])
    app.include_router(workstation.router, prefix=workstation.PREFIX, tags=["Workstation"])
    app.include_router(stats.router, prefix=stats.PREFIX, tags=["Dashboard"])
    app.include_router(lifecycle.router, prefix=lifecycle.PREFIX, tags=["Lifecycle"])
    app.include_router(reconcile.router, prefix=reconcile.PREFIX, tags=["Reconciliation"])
    app.include_router(ai.router, prefix=ai.PREFIX, tags=["AI"])

    # Web pages (issue 13): /portal, static assets, browser safety (Host, Origin, CSP).
    pages.install_pages(app, services, web)

    # Added innermost first: Observe (outermost) > Guard > ProxyHeaders > routes.
    app.add_middleware(ProxyHeadersMiddleware,
                       trusted_hosts=list(services.web.trusted_proxies) or [])
    app.add_middleware(GuardMiddleware, web=services.web)
    app.add_middleware(ObserveMiddleware)
    scrapers = networks(services.web.metrics_clients)
    figures = (index_metrics.index_registry(services.figures)
               if services.figures is not None else None)

    @app.get("/healthz", summary="Liveness and reachability of the database and blob store")
    async def healthz() -> JSONResponse:
        report = await run_in_threadpool(services.health.check)
        return JSONResponse(
            {"status": "ok" if report.ok else "degraded", "database": report.database,
             "blob_store": report.blob_store},
            status_code=200 if report.ok else 503,
        )

    @app.get("/metrics", summary="Prometheus metrics (administrator, local operator or a "
             "configured scraper address)")
    async def metrics(request: Request) -> Response:
        if not address_in(client_host(request), scrapers):
            actor = await authenticate(request)
            if not actor.can(Permission.READ_HEALTH):
                raise NotAuthorizedError("metrics are for the administrator and the local "
                                         "operator (or CLOUDFILM_HTTP__METRICS_CLIENTS)")
        if services.stats is not None:
            gauges = await run_in_threadpool(services.stats.gauges)
            CONNECTED.set(gauges["hospitals_connected"])
            REGISTERED.set(gauges["hospitals_registered"])
            LATE_TODAY.set(gauges["late_studies_today"])
            STUDIES_TODAY.set(gauges["studies_today"])
        body = await run_in_threadpool(index_metrics.exposition, figures)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return app
