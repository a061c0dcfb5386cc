"""What every DICOMweb route needs: the shared services, the base URL, JSON output."""

from __future__ import annotations

import gzip
from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from cloudfilm.services.archive.ingest import BULK_BASE
from cloudfilm.services.container import Services

DICOMWEB_PREFIX = "/dicomweb"
_PLACEHOLDER = BULK_BASE.encode()
# A series' metadata is ~2 KB an instance of very repetitive JSON: gzip (level 1: ~1 ms a
# 100 KB) makes it a tenth, which a viewer on a mobile link waits for before any image.
_GZIP_FROM = 32 * 1024


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def base_url(request: Request) -> str:
    """The DICOMweb root as the client sees it (honours X-Forwarded-Proto/Host)."""
    # The scope's scheme, not request.url (which parses and rebuilds the whole URL).
    proto = request.headers.get("x-forwarded-proto") or request.scope.get("scheme", "http")
    host = request.headers.get("x-forwarded-host") or request.headers.get("host") or "localhost"
    return f"{proto}://{host}{request.scope.get('root_path', '')}{DICOMWEB_PREFIX}"


def dicom_json(request: Request, payload: Any, *, status: int = 200,
               headers: dict[str, str] | None = None) -> Response:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    body = body.replace(_PLACEHOLDER, base_url(request).encode())
    if len(body) >= _GZIP_FROM and "gzip" in request.headers.get("accept-encoding", "").lower():
        body = gzip.compress(body, compresslevel=1)
        headers = {**(headers or {}), "content-encoding": "gzip", "vary": "Accept-Encoding"}
    return Response(body, status_code=status, media_type="application/dicom+json",
                    headers=headers)
