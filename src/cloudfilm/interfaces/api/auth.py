"""Door authentication for every HTTP route: the request in, an :class:`Actor` out.

``Authorization: Bearer ...``

- ``cfh_...``: a hospital system (``CredentialService.authenticate``);
- ``cfs_...``: a signed-in doctor, resident or administrator account
  (``AccountService.actor_for_token``);
- ``cfa_...``: an external AI engine (``AlgorithmRegistry.actor_for_token``; issue 19);
- anything else: compared with ``security.admin_token`` (the platform administrator).

Without the header the caller is the local operator only when ``security.local_mode`` is
open (the embedded platform's default) *and* the client address is one of
``security.local_clients`` (loopback); otherwise 401 with ``WWW-Authenticate: Bearer``.
The client address is only ever kept as a keyed hash (``AuditService.hash_address``).

Use ``actor: CurrentActor`` as a route parameter, or ``await authenticate(request)``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from cloudfilm.services.access.actor import LOCAL_OPERATOR, Actor
from cloudfilm.services.container import Services
from cloudfilm.services.errors import NotAuthenticatedError

_HOSPITAL_PREFIX = "cfh_"
_SESSION_PREFIX = "cfs_"
_ALGORITHM_PREFIX = "cfa_"


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer`` header, None without the header."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise NotAuthenticatedError("Authorization must be 'Bearer <token>'")
    return token.strip()


def client_host(request: Request) -> str:
    """The TCP peer's address (not X-Forwarded-For: a header anyone can set)."""
    return request.client.host if request.client else ""


async def authenticate(request: Request) -> Actor:
    """The actor behind a request.

    ``async`` on purpose: the local operator (no header) and a hospital credential verified
    in the last few seconds cost no thread hop; token checks that read the database run in
    the thread pool.

    Raises
    ------
    NotAuthenticatedError
        No usable credential (HTTP 401 with ``WWW-Authenticate: Bearer``).
    """
    # Authenticated once per request even if several dependencies ask (the scope key is
    # set only by this function; a client cannot reach the ASGI scope).
    cached = request.scope.get("cloudfilm.actor")
    if isinstance(cached, Actor):
        return cached
    svc = _services(request)
    host = client_host(request)
    token = bearer(request.headers.get("authorization")) or _session_cookie(request)
    address = svc.audit.hash_address(host)
    if token is None:
        local = svc.local_access
        if local.open and host in local.clients:
            actor = replace(LOCAL_OPERATOR, address=address)
        else:
            raise NotAuthenticatedError(
                "sign in: send Authorization: Bearer <token> (a hospital credential cfh_..., "
                "a session cfs_... or the administrator's token)")
    elif token.startswith(_HOSPITAL_PREFIX):
        # Verified within the last few seconds: no database read and no thread hop (~0.5
        # ms of a gateway's one-object STOW-RS request; CredentialCache).
        hospital = svc.credentials.verified(token)
        if hospital is None:
            hospital = await run_in_threadpool(svc.credentials.authenticate, token)
        actor = Actor(kind="hospital", subject=hospital.code, hospital_id=hospital.hospital_id,
                      hospital_code=hospital.code, display=hospital.name, address=address)
    elif token.startswith(_SESSION_PREFIX):
        actor = await run_in_threadpool(_session_actor, svc, token, address)
    elif token.startswith(_ALGORITHM_PREFIX) and svc.ai is not None:
        found = await run_in_threadpool(svc.ai.registry.actor_for_token, token,
                                        address=address)
        if found is None:
            raise NotAuthenticatedError("unknown AI algorithm credential")
        actor = found
    else:
        svc.credentials.authenticate_admin(token)  # compares in memory, no database
        actor = Actor(kind="admin", subject="admin", display="administrator", address=address)
    request.scope["cloudfilm.actor"] = actor
    return actor


def _session_actor(svc: Services, token: str, address: str) -> Actor:
    accounts: Any = getattr(svc, "accounts", None)
    if accounts is None:
        raise NotAuthenticatedError("accounts are not enabled on this platform")
    actor = accounts.actor_for_token(token, address=address)
    if actor is None:
        raise NotAuthenticatedError("the session is not valid (expired or signed out); "
                                    "sign in again")
    return actor  # type: ignore[no-any-return]


# -- browser sessions (issue 13, web pages) ----------------------------------------------
# A browser carries the same cfs_ session token in an HttpOnly, SameSite=Lax cookie; the
# header wins when both are sent. State-changing requests with the cookie must come from
# one of our pages (Origin check in interfaces.web.security.BrowserSafetyMiddleware).
_SESSION_COOKIE = "cloudfilm_session"


def _session_cookie(request: Request) -> str | None:
    value = request.cookies.get(_SESSION_COOKIE, "")
    return value if value.startswith(_SESSION_PREFIX) else None


CurrentActor = Annotated[Actor, Depends(authenticate)]
"""Route parameter type: ``def route(actor: CurrentActor)``."""
