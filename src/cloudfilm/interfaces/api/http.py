"""The HTTP application: DICOMweb under /dicomweb, operations endpoints, OpenAPI docs."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from cloudfilm.interfaces.api import docs as api_docs
from cloudfilm.interfaces.api import errors
from cloudfilm.interfaces.api.dicomweb import qido, stow, uri, wado
from cloudfilm.interfaces.api.dicomweb.common import DICOMWEB_PREFIX
from cloudfilm.interfaces.api.rest import (
    access,
    audit,
    cds_hooks,
    gateway,
    identity,
    recognition,
    reports,
)
from cloudfilm.services.container import Services

logger = logging.getLogger(__name__)

REQUESTS = Counter("cloudfilm_http_requests_total", "HTTP requests",
                   ["route", "method", "status"])
LATENCY = Histogram("cloudfilm_http_request_seconds", "HTTP request latency", ["route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                             5, 10, 30))
BYTES_IN = Counter("cloudfilm_http_received_bytes_total", "Request body bytes", ["route"])


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
            route = getattr(scope.get("route"), "path", "unmatched")
            LATENCY.labels(route).observe(time.perf_counter() - started)
            REQUESTS.labels(route, scope["method"], str(status)).inc()
            length = headers.get(b"content-length", b"")
            if length.isdigit():
                BYTES_IN.labels(route).inc(int(length))
            structlog.contextvars.clear_contextvars()


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
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
    for module in (stow, qido, wado, uri):
        app.include_router(module.router, prefix=DICOMWEB_PREFIX, tags=["DICOMweb"])
    app.include_router(uri.router, tags=["DICOMweb"], include_in_schema=False)
    app.include_router(identity.router, prefix=identity.PREFIX, tags=["Identity"])
    app.include_router(access.router, prefix=access.PREFIX, tags=["Access"])
    app.include_router(audit.router, prefix=audit.PREFIX, tags=["Audit"])
    app.include_router(reports.router, prefix=reports.PREFIX, tags=["Reports"])
    app.include_router(recognition.router, prefix=recognition.PREFIX, tags=["Recognition"])
    app.include_router(cds_hooks.router, tags=["CDS Hooks"])

    app.include_router(gateway.router, prefix=gateway.PREFIX, tags=["Gateways"])

    app.add_middleware(ObserveMiddleware)

    @app.get("/healthz", summary="Liveness and reachability of the database and blob store")
    async def healthz() -> JSONResponse:
        report = await run_in_threadpool(services.health.check)
        return JSONResponse(
            {"status": "ok" if report.ok else "degraded", "database": report.database,
             "blob_store": report.blob_store},
            status_code=200 if report.ok else 503,
        )

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
