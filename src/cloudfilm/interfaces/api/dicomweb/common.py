"""What every DICOMweb route needs: the shared services, the base URL, JSON output."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import Request
from fastapi.responses import Response

from cloudfilm.services.archive.ingest import BULK_BASE
from cloudfilm.services.container import Services

DICOMWEB_PREFIX = "/dicomweb"
_PLACEHOLDER = BULK_BASE.encode()


def services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def base_url(request: Request) -> str:
    """The DICOMweb root as the client sees it (honours X-Forwarded-Proto/Host)."""
    proto = request.headers.get("x-forwarded-proto") or request.url.scheme
    host = request.headers.get("x-forwarded-host") or request.headers.get("host") or "localhost"
    return f"{proto}://{host}{request.scope.get('root_path', '')}{DICOMWEB_PREFIX}"


def dicom_json(request: Request, payload: Any, *, status: int = 200,
               headers: dict[str, str] | None = None) -> Response:
    body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return Response(body.replace(_PLACEHOLDER, base_url(request).encode()), status_code=status,
                    media_type="application/dicom+json", headers=headers)
