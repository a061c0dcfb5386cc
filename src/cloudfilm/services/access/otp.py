"""One-time SMS codes and the rate limiter they need; both live in the database so that
every process of a deployment sees the same codes and counts the same attempts.

A code is 6 random digits (``secrets``), kept only as a keyed hash (HMAC-SHA256 with the
platform's hash key, bound to purpose and subject, so a stolen table cannot be brute-forced
over the 10^6 codes and a code for one grant does not open another), lives 5 minutes, is
used once, and dies after 5 wrong guesses. Nothing here logs a code or a phone.
"""

from __future__ import annotations

import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db import account_repository as repo
from cloudfilm.services.errors import RateLimitedError
from cloudfilm.services.identity.protection import IdProtector

OTP_HASH_DOMAIN = "otp-code"


def aware(value: datetime) -> datetime:
    """SQLite returns timestamps without offset; every stored timestamp is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Limit:
    """At most ``count`` events per ``seconds`` in a bucket."""

    count: int
    seconds: int


class RateLimiter:
    """Sliding-window counters in ``rate_limit_event`` (one row per counted attempt)."""

    def hit(self, session: Session, bucket: str, limit: Limit, now: datetime, *,
            what: str = "attempts") -> None:
        """Count one attempt in ``bucket``, or refuse it when the window is full.

        Runs inside the caller's write transaction; the caller commits, so a refused
        attempt is not counted (it never happened) and a counted one survives the caller's
        own later refusal only if the caller commits before raising.

        Raises
        ------
        RateLimitedError
            ``limit.count`` attempts are already in the window; ``retry_after`` is when
            the oldest of them leaves it.
        """
        repo.lock_bucket(session, bucket)
        start = now - timedelta(seconds=limit.seconds)
        repo.prune_bucket(session, bucket, start)
        events = repo.bucket_events(session, bucket, start)
        if len(events) >= limit.count:
            oldest = aware(events[0])
            wait = math.ceil((oldest + timedelta(seconds=limit.seconds) - now).total_seconds())
            raise RateLimitedError(
                f"too many {what}; try again in {max(wait, 1)} seconds", retry_after=wait)
        repo.add_bucket_event(session, bucket, now)

    def check(self, session: Session, bucket: str, limit: Limit, now: datetime, *,
              what: str = "attempts") -> None:
        """Like :meth:`hit` without counting: refuse when the window is already full."""
        start = now - timedelta(seconds=limit.seconds)
        events = repo.bucket_events(session, bucket, start)
        if len(events) >= limit.count:
            oldest = aware(events[0])
            wait = math.ceil((oldest + timedelta(seconds=limit.seconds) - now).total_seconds())
            raise RateLimitedError(
                f"too many {what}; try again in {max(wait, 1)} seconds", retry_after=wait)


class OneTimeCodes:
    """Issue and check single-use codes for a (purpose, subject) pair.

    Parameters
    ----------
    protector
        Gives the keyed hash (the platform's HMAC key, in the ``otp-code`` domain).
    ttl_seconds, max_attempts
        Lifetime of a code and wrong guesses it survives.
    """

    def __init__(self, protector: IdProtector, *, ttl_seconds: int = 300,
                 max_attempts: int = 5) -> None:
        self._protector = protector
        self.ttl_seconds = ttl_seconds
        self.max_attempts = max_attempts

    def _hash(self, purpose: str, subject: str, code: str) -> str:
        return self._protector.lookup_hash(OTP_HASH_DOMAIN, f"{purpose}\x00{subject}\x00{code}")

    def issue(self, session: Session, purpose: str, subject: str, now: datetime) -> str:
        """A fresh code (returned once, to be texted); earlier unused ones stop working."""
        code = f"{secrets.randbelow(1_000_000):06d}"
        repo.retire_codes(session, purpose, subject, now)
        # Expired codes of everyone are removed now and then, cheaply, on the write path.
        if secrets.randbelow(50) == 0:
            repo.purge_codes(session, now - timedelta(days=1))
        repo.add_code(session, {
            "purpose": purpose, "subject": subject,
            "code_hash": self._hash(purpose, subject, code), "attempts": 0,
            "created_at": now, "expires_at": now + timedelta(seconds=self.ttl_seconds),
        })
        return code

    def verify(self, session: Session, purpose: str, subject: str, code: str,
               now: datetime) -> bool:
        """True once for the right code; a wrong guess counts against the code.

        The caller must commit even when this returns False, or the wrong guess is
        forgotten (the services decide inside the transaction and raise after it).
        """
        row = repo.current_code(session, purpose, subject, now)
        candidate = code.strip()
        if row is None:
            return False
        if row.attempts >= self.max_attempts:
            row.used_at = now
            return False
        expected = row.code_hash
        given = self._hash(purpose, subject, candidate if candidate.isdigit() else "x")
        if hmac.compare_digest(expected, given):
            row.used_at = now
            return True
        row.attempts += 1
        if row.attempts >= self.max_attempts:
            row.used_at = now  # burnt: the next guess meets no code at all
        return False
