"""Keyed pseudonyms: the same input gives the same output within a project (same key) and
unlinkable outputs across projects (different keys), without a lookup table to leak."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import timedelta


class Pseudonymiser:
    """HMAC-SHA256 under one project's secret key."""

    def __init__(self, key: bytes, *, max_shift_days: int = 3650) -> None:
        if len(key) < 16:
            raise ValueError("a project key needs at least 16 bytes")
        self._key = key
        self._max_shift = max_shift_days

    def _mac(self, purpose: str, value: str) -> bytes:
        return hmac.new(self._key, f"{purpose}\x00{value}".encode(), hashlib.sha256).digest()

    def patient_id(self, original: str) -> str:
        """16 characters (fits LO and SH)."""
        return "R" + base64.b32encode(self._mac("pid", original)).decode()[:15]

    def uid(self, original: str) -> str:
        """A ``2.25.`` UID (PS3.5 B.2) of at most 44 characters."""
        return f"2.25.{int.from_bytes(self._mac('uid', original)[:16], 'big')}"

    def token(self, purpose: str, original: str, length: int = 12) -> str:
        return base64.b32encode(self._mac(purpose, original)).decode()[:length]

    def date_shift(self, patient_key: str) -> timedelta:
        """Per-patient offset backwards, 1..max days: never zero, so no date stays put."""
        n = int.from_bytes(self._mac("shift", patient_key)[:8], "big")
        return -timedelta(days=1 + n % self._max_shift)
