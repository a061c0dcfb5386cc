"""Hospital credentials verified once are trusted for a few seconds (CredentialCache): what
that may and may not change, on both databases."""

from __future__ import annotations

from typing import Any

import pytest
from tests.factories import make_ct, multipart, to_bytes

from cloudfilm.services.container import Services
from cloudfilm.services.errors import NotAuthenticatedError
from cloudfilm.services.identity.credentials import CredentialCache, CredentialService
from cloudfilm.services.identity.hospitals import HospitalInput


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _hospital(services: Services, code: str = "HA") -> tuple[int, str]:
    services.hospitals.register(HospitalInput(code=code, name=f"Hospital {code}",
                                              level="tertiary", grade="A"))
    issued = services.credentials.issue(code, label="pacs")
    return issued.credential.id, issued.token


def _other_process(services: Services, clock: Clock) -> CredentialService:
    """A second worker process: the same database, a cache of its own."""
    return CredentialService(services.health._db, None,
                             cache=CredentialCache(5.0, clock=clock))


def test_revocation_in_this_process_refuses_at_once(services: Services) -> None:
    credential_id, token = _hospital(services)
    assert services.credentials.authenticate(token).code == "HA"
    assert services.credentials.verified(token) is not None  # cached
    services.credentials.revoke(credential_id)
    assert services.credentials.verified(token) is None
    with pytest.raises(NotAuthenticatedError):
        services.credentials.authenticate(token)


def test_rotation_and_deactivation_refuse_at_once(services: Services) -> None:
    credential_id, token = _hospital(services)
    services.credentials.authenticate(token)
    new = services.credentials.rotate(credential_id).token
    with pytest.raises(NotAuthenticatedError):
        services.credentials.authenticate(token)
    assert services.credentials.authenticate(new).code == "HA"
    services.hospitals.update("HA", {"active": False})
    with pytest.raises(NotAuthenticatedError):
        services.credentials.authenticate(new)


def test_another_process_refuses_once_its_entry_expires(services: Services) -> None:
    credential_id, token = _hospital(services)
    clock = Clock()
    other = _other_process(services, clock)
    assert other.authenticate(token).code == "HA"
    services.credentials.revoke(credential_id)  # in "this" process
    # The documented window: the other process still trusts its entry for <= 5 s ...
    clock.now += 4.0
    assert other.authenticate(token).code == "HA"
    # ... and asks the database once it has expired.
    clock.now += 1.0
    assert other.verified(token) is None
    with pytest.raises(NotAuthenticatedError):
        other.authenticate(token)
    clock.now += 60.0  # a refusal was not cached as anything
    with pytest.raises(NotAuthenticatedError):
        other.authenticate(token)


def test_a_different_secret_never_hits(services: Services) -> None:
    _, token = _hospital(services)
    services.credentials.authenticate(token)
    # Same prefix as shown in listings (12 characters), same length, one character off.
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert forged[:12] == token[:12]
    assert services.credentials.verified(forged) is None
    with pytest.raises(NotAuthenticatedError):
        services.credentials.authenticate(forged)
    with pytest.raises(NotAuthenticatedError):
        services.credentials.authenticate(token + "x")
    assert services.credentials.verified(forged) is None  # the refusal left nothing


def test_a_stow_with_a_revoked_credential_is_refused_at_once(services: Services,
                                                             client: Any) -> None:
    credential_id, token = _hospital(services)
    headers = {"Authorization": f"Bearer {token}"}
    body, ctype = multipart([to_bytes(make_ct())])
    r = client.post("/dicomweb/studies", content=body,
                    headers={**headers, "Content-Type": ctype})
    assert r.status_code == 200, r.text
    services.credentials.revoke(credential_id)
    body, ctype = multipart([to_bytes(make_ct())])
    r = client.post("/dicomweb/studies", content=body,
                    headers={**headers, "Content-Type": ctype})
    assert r.status_code == 401
