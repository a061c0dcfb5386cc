"""POST a small JSON body to a URL a hospital registered (the dashboard's alerts)."""

from __future__ import annotations

from typing import Any

import httpx


def post_json(url: str, body: dict[str, Any], *, timeout: float = 5.0) -> bool:
    """Whether the URL answered 2xx; never raises (an alert is still on the dashboard)."""
    try:
        response = httpx.post(url, json=body, timeout=timeout)
    except httpx.HTTPError:
        return False
    return 200 <= response.status_code < 300
