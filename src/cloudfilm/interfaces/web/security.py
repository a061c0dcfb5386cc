"""Browser-facing safety for every HTTP route: known Host names, Origin of state-changing
requests, security headers on pages, and the CSRF token of portal forms.

- Pages (``/`` and everything under ``PAGE_ROOTS``) answer only for the HTTP doors'
  ``http.allowed_hosts`` (the guard middleware in ``api/http.py`` applies the same list
  to every route).
- A state-changing request (POST, PUT, PATCH, DELETE) that carries the session cookie, or
  goes to ``/portal``, must come from a page of ours: ``Origin`` (else ``Referer``) names a
  served host. With SameSite=Lax cookies this stops cross-site forms; the CSRF token
  (double-submit: a random cookie that a form or the ``X-CSRF-Token`` header repeats)
  stops a same-site attacker as well.
- Pages get a Content-Security-Policy without inline scripts or third-party origins.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Any
from urllib.parse import urlsplit

SESSION_COOKIE = "cloudfilm_session"
CSRF_COOKIE = "cloudfilm_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
# The existing report rendering keeps its stylesheet inline (it is also the PDF's): styles
# only; scripts stay forbidden.
REPORT_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


def _hostname(value: str) -> str:
    """``example.org`` of ``example.org:8042``, ``::1`` of ``[::1]:8042`` (the HTTP doors'
    ``allowed_hosts`` form)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1: value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


# The browser pages' roots: the patient's portal, the doctor's workstation and viewer, the
# commission's dashboard and the operators' pages.
PAGE_ROOTS = ("/portal", "/workstation", "/dashboard", "/admin")


def is_page(path: str) -> bool:
    return path == "/" or any(path == root or path.startswith(root + "/")
                              for root in PAGE_ROOTS)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def csrf_matches(cookie: str | None, given: str | None) -> bool:
    return bool(cookie) and bool(given) and hmac.compare_digest(str(cookie), str(given))


class BrowserSafetyMiddleware:
    """Plain ASGI middleware (see ``ObserveMiddleware`` for why not BaseHTTPMiddleware)."""

    def __init__(self, app: Any, hosts: tuple[str, ...]) -> None:
        self.app = app
        self.any_host = "*" in hosts
        self.hosts = frozenset(_hostname(h) for h in hosts)

    def _known(self, host: str) -> bool:
        return self.any_host or _hostname(host) in self.hosts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        page = is_page(path)
        if page and not self._known(headers.get(b"host", "")):
            await _refuse(send, 400, "unknown host name")
            return
        if scope["method"] in UNSAFE and (page or f"{SESSION_COOKIE}=" in headers.get(
                b"cookie", "")):
            origin = headers.get(b"origin") or headers.get(b"referer") or ""
            host = urlsplit(origin).netloc if origin and origin != "null" else ""
            if not host or not self._known(host):
                await _refuse(send, 403, "cross-site request refused (Origin)")
                return

        async def with_headers(message: Any) -> None:
            if page and message["type"] == "http.response.start":
                extra = [(b"x-content-type-options", b"nosniff"),
                         (b"referrer-policy", b"same-origin"),
                         (b"x-frame-options", b"DENY")]
                names = {k.lower() for k, _ in message.get("headers", [])}
                if b"content-security-policy" not in names:
                    extra.append((b"content-security-policy", CSP.encode()))
                if b"cache-control" not in names:
                    # Pages show patient data: never kept by shared caches or the back button.
                    extra.append((b"cache-control", b"no-store"))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        await self.app(scope, receive, with_headers)


async def _refuse(send: Any, status: int, text: str) -> None:
    body = text.encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
