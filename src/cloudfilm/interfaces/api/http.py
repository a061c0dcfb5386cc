"""The HTTP application: DICOMweb under /dicomweb, operations endpoints, OpenAPI docs."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

import structlog
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from cloudfilm.interfaces.api import errors
from cloudfilm.interfaces.api.dicomweb import qido, stow, uri, wado
from cloudfilm.interfaces.api.dicomweb.common import DICOMWEB_PREFIX
from cloudfilm.services.container import Services

logger = logging.getLogger(__name__)

REQUESTS = Counter("cloudfilm_http_requests_total", "HTTP requests",
                   ["route", "method", "status"])
LATENCY = Histogram("cloudfilm_http_request_seconds", "HTTP request latency", ["route"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5,
                             5, 10, 30))
BYTES_IN = Counter("cloudfilm_http_received_bytes_total", "Request body bytes", ["route"])


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="cloudfilm",
        summary="Regional medical-imaging cloud",
        description="Operations and REST API. DICOMweb (PS3.18) lives under /dicomweb.",
        version="0.1.0",
    )
    app.state.services = services
    errors.install(app)
    for module in (stow, qido, wado, uri):
        app.include_router(module.router, prefix=DICOMWEB_PREFIX, tags=["DICOMweb"],
                           include_in_schema=False)
    app.include_router(uri.router, tags=["DICOMweb"], include_in_schema=False)

    @app.middleware("http")
    async def observe(request: Request,
                      call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        name = getattr(route, "path", "unmatched")
        LATENCY.labels(name).observe(time.perf_counter() - started)
        REQUESTS.labels(name, request.method, str(response.status_code)).inc()
        length = request.headers.get("content-length")
        if length and length.isdigit():
            BYTES_IN.labels(name).inc(int(length))
        response.headers["X-Request-Id"] = request_id
        structlog.contextvars.clear_contextvars()
        return response

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
