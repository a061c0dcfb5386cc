"""Real-name verification over a provider's HTTP API (the "three elements" check: name,
resident ID number and mobile number belong together, as the carriers' and the public
security bureau's services answer it). One signed JSON POST per check.

``POST <endpoint>`` with ``{"name", "id_number", "phone"}`` and headers ``X-Access-Key``,
``X-Timestamp`` (Unix seconds), ``X-Nonce`` and ``X-Signature`` =
base64(HMAC-SHA256(secret, "<timestamp>\\n<nonce>\\n<body>")) (the scheme of
``infrastructure.sms.http``). The answer is ``{"match": true|false}``. A provider with
another scheme gets its own small adapter with the same ``verify`` method.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time

import httpx
import orjson

logger = logging.getLogger(__name__)


class VerificationUnavailableError(Exception):
    """The provider could not be reached or gave no usable answer."""


def sign(secret: bytes, timestamp: str, nonce: str, body: bytes) -> str:
    """The request signature (shared with the tests' fake provider)."""
    return base64.b64encode(hmac.new(secret, f"{timestamp}\n{nonce}\n".encode() + body,
                                     hashlib.sha256).digest()).decode()


class HttpIdentityVerifier:
    """Asks a real-name service whether name, ID number and phone belong together
    (``proofing.provider = "http"``)."""

    def __init__(self, endpoint: str, *, access_key: str, secret: str, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self._endpoint = endpoint
        self._access_key = access_key
        self._secret = secret.encode()
        self._client = httpx.Client(timeout=timeout, transport=transport)

    def verify(self, *, name: str, national_id: str, phone: str) -> bool:
        """True only for an explicit match.

        Raises
        ------
        VerificationUnavailableError
            Network failure, a non-2xx answer or an answer without ``match`` (only the
            status is logged: the body may echo personal data).
        """
        body = orjson.dumps({"name": name, "id_number": national_id, "phone": phone})
        timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
        headers = {"Content-Type": "application/json", "X-Access-Key": self._access_key,
                   "X-Timestamp": timestamp, "X-Nonce": nonce,
                   "X-Signature": sign(self._secret, timestamp, nonce, body)}
        try:
            response = self._client.post(self._endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            logger.warning("cloudfilm.realname.unreachable", extra={"error": type(exc).__name__})
            raise VerificationUnavailableError("the identity provider cannot be reached") \
                from None
        if response.status_code // 100 != 2:
            logger.warning("cloudfilm.realname.refused", extra={"status": response.status_code})
            raise VerificationUnavailableError(
                f"the identity provider answered HTTP {response.status_code}")
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            raise VerificationUnavailableError("the identity provider's answer is not JSON") \
                from None
        if not isinstance(answer, dict) or not isinstance(answer.get("match"), bool):
            raise VerificationUnavailableError("the identity provider's answer has no match")
        return bool(answer["match"])

    def close(self) -> None:
        self._client.close()
