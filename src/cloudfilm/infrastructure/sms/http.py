"""SMS over a provider's HTTP API: one signed JSON POST per message.

The request carries the provider's template id and parameters (operators in China must
use pre-registered templates and a registered signature), never a free text:

``POST <endpoint>`` with ``{"phone", "sign_name", "template_id", "params"}`` and headers
``X-Access-Key``, ``X-Timestamp`` (Unix seconds), ``X-Nonce`` and ``X-Signature`` =
base64(HMAC-SHA256(secret, "<timestamp>\\n<nonce>\\n<body>")). A provider with another
signing scheme gets its own small adapter with the same ``send`` method.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Mapping

import httpx
import orjson

logger = logging.getLogger(__name__)


class SmsDeliveryError(Exception):
    """The provider could not be reached or refused the message."""


class HttpSmsSender:
    """Sends through an SMS provider's HTTP API (``sms.backend = "http"``)."""

    local = False

    def __init__(self, endpoint: str, *, access_key: str, secret: str, sign_name: str,
                 timeout: float = 10.0, transport: httpx.BaseTransport | None = None) -> None:
        self._endpoint = endpoint
        self._access_key = access_key
        self._secret = secret.encode()
        self._sign_name = sign_name
        self._client = httpx.Client(timeout=timeout, transport=transport)

    def send(self, phone: str, template: str, params: Mapping[str, str], text: str) -> None:
        """Post one message; returns when the provider accepted it.

        Raises
        ------
        SmsDeliveryError
            Network failure or a non-2xx answer (the status only is logged; the body may
            echo the phone number).
        """
        body = orjson.dumps({"phone": phone, "sign_name": self._sign_name,
                             "template_id": template, "params": dict(params)})
        timestamp, nonce = str(int(time.time())), secrets.token_hex(16)
        signature = base64.b64encode(hmac.new(
            self._secret, f"{timestamp}\n{nonce}\n".encode() + body, hashlib.sha256).digest())
        headers = {"Content-Type": "application/json", "X-Access-Key": self._access_key,
                   "X-Timestamp": timestamp, "X-Nonce": nonce,
                   "X-Signature": signature.decode()}
        try:
            response = self._client.post(self._endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            logger.warning("cloudfilm.sms.unreachable", extra={"error": type(exc).__name__})
            raise SmsDeliveryError("the SMS provider cannot be reached") from None
        if response.status_code // 100 != 2:
            logger.warning("cloudfilm.sms.refused", extra={"status": response.status_code,
                                                            "template": template})
            raise SmsDeliveryError(f"the SMS provider refused the message "
                                   f"(HTTP {response.status_code})")

    def close(self) -> None:
        self._client.close()
