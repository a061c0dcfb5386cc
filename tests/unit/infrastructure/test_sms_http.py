"""The HTTP SMS adapter: one signed POST per message, provider refusals become errors."""

from __future__ import annotations

import base64
import hashlib
import hmac

import httpx
import orjson
import pytest

from cloudfilm.infrastructure.sms.http import HttpSmsSender, SmsDeliveryError


def test_posts_a_signed_templated_message() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    sender = HttpSmsSender("https://sms.example/send", access_key="AK", secret="s3cret",
                           sign_name="云胶片", transport=httpx.MockTransport(handler))
    sender.send("13800000001", "SMS_CODE", {"code": "123456"}, "local text")
    [request] = seen
    body = orjson.loads(request.content)
    assert body == {"phone": "13800000001", "sign_name": "云胶片", "template_id": "SMS_CODE",
                    "params": {"code": "123456"}}
    signed = f"{request.headers['X-Timestamp']}\n{request.headers['X-Nonce']}\n".encode()
    expected = base64.b64encode(hmac.new(b"s3cret", signed + request.content,
                                         hashlib.sha256).digest()).decode()
    assert request.headers["X-Signature"] == expected
    assert request.headers["X-Access-Key"] == "AK"
    assert "local text" not in request.content.decode()  # templates only, never free text


def test_refusal_and_network_errors_raise() -> None:
    refuse = HttpSmsSender("https://sms.example/send", access_key="AK", secret="x",
                           sign_name="s", transport=httpx.MockTransport(
                               lambda r: httpx.Response(403, text="13800000001 blocked")))
    with pytest.raises(SmsDeliveryError) as info:
        refuse.send("13800000001", "T", {}, "")
    assert "13800000001" not in str(info.value)

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    with pytest.raises(SmsDeliveryError):
        HttpSmsSender("https://sms.example/send", access_key="AK", secret="x", sign_name="s",
                      transport=httpx.MockTransport(down)).send("13800000001", "T", {}, "")


def test_the_http_backend_needs_its_secret() -> None:
    from cloudfilm.app import _sms_sender
    from cloudfilm.config import ConfigError, Settings, SmsSettings

    settings = Settings(sms=SmsSettings(backend="http", endpoint="https://sms.example/send",
                                        access_key="AK"))
    with pytest.raises(ConfigError, match="CLOUDFILM_SMS__SECRET"):
        _sms_sender(settings, None, None)  # type: ignore[arg-type]
