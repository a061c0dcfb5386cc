"""Units of the portal's additions: the "a doctor asks" SMS carries the portal's short link
when one is configured; a viewing capability's tag, binding and expiry."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping

import pytest

from cloudfilm.services.access.sms import SmsService, Templates
from cloudfilm.services.errors import NotAuthenticatedError
from cloudfilm.services.identity.protection import IdProtector
from cloudfilm.services.portal.viewing import Capability, ViewingService, binding_of


class Sent:
    local = True

    def __init__(self) -> None:
        self.messages: list[tuple[str, Mapping[str, str], str]] = []

    def send(self, phone: str, template: str, params: Mapping[str, str], text: str) -> None:
        self.messages.append((template, params, text))


def test_a_request_sms_carries_the_portal_link_when_configured() -> None:
    sender = Sent()
    SmsService(sender, db=None, protector=None,  # type: ignore[arg-type]
               templates=Templates(portal_link="https://y.example.cn/portal/access")
               ).send_grant_request("13800000000", doctor="李医生", hospital="示范医院")
    SmsService(sender, db=None, protector=None,  # type: ignore[arg-type]
               ).send_grant_request("13800000000", doctor="李医生", hospital="示范医院")
    (_, params, text), (_, _, bare) = sender.messages
    assert "https://y.example.cn/portal/access" in text and params["link"] in text
    assert "http" not in bare


def viewings(now: list[float]) -> ViewingService:
    protector = IdProtector(os.urandom(32), os.urandom(32))
    return ViewingService(retrieve=None, protector=protector,  # type: ignore[arg-type]
                          clock=lambda: now[0])


def test_a_capability_is_bound_tagged_and_expires() -> None:
    now = [1_000_000.0]
    service = viewings(now)
    cap = service._sign(Capability("1.2", "1.2.3", 1_000_000 + 1800, binding_of("s1")))
    assert service.verify(cap, secret="s1").series_uid == "1.2.3"
    for secret in ("s2", ""):
        with pytest.raises(NotAuthenticatedError):
            service.verify(cap, secret=secret)
    encoded, tag = cap.split(".")
    other = base64.urlsafe_b64encode(
        b"1.2|9.9.9|1001800|" + binding_of("s1").encode()).decode().rstrip("=")
    # One character of the tag changed (to another one: a tag ending in "0" failed 1 run in 64).
    changed = tag[:-1] + ("1" if tag.endswith("0") else "0")
    for forged in (f"{other}.{tag}", f"{encoded}.{changed}", "x", ""):
        with pytest.raises(NotAuthenticatedError):
            service.verify(forged, secret="s1")
    # Another platform key: not ours.
    with pytest.raises(NotAuthenticatedError):
        viewings(now).verify(cap, secret="s1")
    now[0] += 1801
    with pytest.raises(NotAuthenticatedError):
        service.verify(cap, secret="s1")

