"""Service errors to HTTP statuses: the one mapping for every HTTP route."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cloudfilm.services.errors import (
    AlreadyExistsError,
    CloudfilmError,
    IdentityConflictError,
    InstanceConflictError,
    InvalidInputError,
    InvalidInstanceError,
    InvalidQueryError,
    InvalidReportError,
    NotAcceptableError,
    NotAuthenticatedError,
    NotAuthorizedError,
    NotFoundError,
    RateLimitedError,
    ReportConflictError,
    ResourceUnavailableError,
    UnsupportedSOPClassError,
    WorkitemStateError,
)

logger = logging.getLogger(__name__)

HTTP_STATUS: dict[type[CloudfilmError], int] = {
    InvalidInstanceError: 400,
    InvalidQueryError: 400,
    InvalidInputError: 400,
    InvalidReportError: 400,
    NotAuthenticatedError: 401,
    NotAuthorizedError: 403,
    NotFoundError: 404,
    NotAcceptableError: 406,
    UnsupportedSOPClassError: 409,
    InstanceConflictError: 409,
    AlreadyExistsError: 409,
    IdentityConflictError: 409,
    ReportConflictError: 409,
    WorkitemStateError: 409,
    RateLimitedError: 429,
    ResourceUnavailableError: 503,
}


class HttpProblem(Exception):
    """A protocol-level problem found by a door itself (bad header, body too large)."""

    def __init__(self, status: int, message: str, *, code: str = "bad-request") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def status_for(exc: CloudfilmError) -> int:
    for cls in type(exc).__mro__:
        if cls in HTTP_STATUS:
            return HTTP_STATUS[cls]
    return 500


def problem(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": code, "message": message}, status_code=status)


def install(app: FastAPI) -> None:
    @app.exception_handler(CloudfilmError)
    async def _service_error(request: Request, exc: CloudfilmError) -> JSONResponse:
        status = status_for(exc)
        if status >= 500:
            logger.warning("cloudfilm.http.unavailable", extra={"error": exc.message})
        response = problem(status, exc.code, exc.message)
        if isinstance(exc, InvalidReportError) and exc.field:
            response = JSONResponse({"error": exc.code, "message": exc.message,
                                     "field": exc.field}, status_code=status)
        if status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, RateLimitedError):
            response.headers["Retry-After"] = str(exc.retry_after)  # RFC 9110 10.2.3
        return response

    @app.exception_handler(HttpProblem)
    async def _http_problem(request: Request, exc: HttpProblem) -> JSONResponse:
        return problem(exc.status, exc.code, exc.message)
