"""Identity proofing: the port to a real-name verification provider, and its local adapter.

A resident's registration needs a second factor a stranger does not have (issue 11). One
of them is a provider that confirms that a name, a resident ID number and a mobile number
belong together. ``proofing.provider`` picks the adapter: ``none`` (default: the other
factors only), ``http`` (``infrastructure.realname.http.HttpIdentityVerifier``) or
``local`` (:class:`LocalIdentityVerifier`, development only: it confirms what a local list
says).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from cloudfilm.infrastructure.realname.http import VerificationUnavailableError

logger = logging.getLogger(__name__)


class IdentityVerifier(Protocol):
    """Port: does this name, resident ID number and phone belong to one person?"""

    def verify(self, *, name: str, national_id: str, phone: str) -> bool:
        """True for a confirmed match; False otherwise (never raises)."""
        ...


class LocalIdentityVerifier:
    """Development adapter: confirms the ``(national_id, phone)`` pairs it was given
    (settings ``proofing.local_pairs``, ``"<id>:<phone>"``), names compared exactly."""

    def __init__(self, pairs: Iterable[str]) -> None:
        self._pairs = {p.strip().upper() for p in pairs if ":" in p}

    def verify(self, *, name: str, national_id: str, phone: str) -> bool:
        return bool(name.strip()) and f"{national_id}:{phone}".upper() in self._pairs


class ProviderVerifier:
    """Wraps an HTTP adapter: an unreachable provider is "not confirmed" (the other
    factors still work), logged without personal data."""

    def __init__(self, adapter: IdentityVerifier) -> None:
        self._adapter = adapter

    def verify(self, *, name: str, national_id: str, phone: str) -> bool:
        try:
            return self._adapter.verify(name=name, national_id=national_id, phone=phone)
        except VerificationUnavailableError:
            logger.warning("cloudfilm.access.identity_provider_unavailable")
            return False
