"""Hospitals' API credentials: issued once, stored as SHA-256 only, rotatable, revocable.

A token is 32 random bytes (``cfh_`` + base64url). With that much entropy a plain SHA-256
is enough to store it (no slow password hash is needed: nothing to brute-force), and it
makes authentication one indexed look-up. The administrators' token comes from
configuration (``security.admin_token``) until the access issue brings user accounts.

Verified credentials are remembered for a few seconds (:class:`CredentialCache`,
``security.credential_cache_seconds``): a hospital gateway sends one request per object, and
the database look-up with its thread hop cost ~0.5 ms of a ~8 ms single-instance STOW-RS
request. Revocation, rotation and deactivation in this process forget at once; other
processes (``--workers N``, the ``cloudfilm hospitals`` command) see them within the cache's
lifetime (docs/architecture.md, "Hospital credentials: the verification cache").
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from cloudfilm.infrastructure.db import identity_repository as repo
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError
from cloudfilm.services.access.actor import LOCAL_OPERATOR, Actor
from cloudfilm.services.errors import (
    NotAuthenticatedError,
    NotFoundError,
    ResourceUnavailableError,
)
from cloudfilm.services.identity.roles import actor_label, require_hospital_admin

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "cfh_"


@dataclass(frozen=True, slots=True)
class HospitalIdentity:
    """Who a valid credential speaks for."""

    hospital_id: int
    code: str
    name: str


@dataclass(frozen=True, slots=True)
class CredentialView:
    id: int
    hospital_code: str
    label: str
    token_prefix: str
    created_at: datetime
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class IssuedCredential:
    """A new credential; ``token`` is shown this once and never stored."""

    credential: CredentialView
    token: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# Seconds a verified credential is trusted without the database (the setting's default).
CACHE_SECONDS = 5.0
_CACHE_ENTRIES = 1024  # far above a province's hospitals' live credentials


class CredentialCache:
    """Credentials verified against the database in the last ``seconds``; thread-safe.

    Keyed on the SHA-256 of the whole token, so only the very same secret hits (a token
    sharing the ``cfh_`` prefix or the displayed 12 characters does not). Only successes
    are stored: a refused token is looked up again each time. ``forget_all`` (revocation,
    rotation, a hospital's deactivation in this process) bumps a generation number, and an
    entry whose look-up began before it is never stored, so a look-up racing a revocation
    cannot put the revoked credential back.
    """

    def __init__(self, seconds: float = CACHE_SECONDS, *,
                 clock: Callable[[], float] = time.monotonic,
                 max_entries: int = _CACHE_ENTRIES) -> None:
        self.seconds = seconds
        self._clock = clock
        self._max = max_entries
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[HospitalIdentity, float]] = {}
        self._generation = 0

    @property
    def generation(self) -> int:
        """Read before a database look-up; pass to :meth:`put` after it."""
        return self._generation

    def get(self, token_hash: str) -> HospitalIdentity | None:
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        if self._clock() >= entry[1]:
            with self._lock:
                if self._entries.get(token_hash) is entry:
                    del self._entries[token_hash]
            return None
        return entry[0]

    def put(self, token_hash: str, identity: HospitalIdentity, generation: int) -> None:
        if self.seconds <= 0:
            return
        expires = self._clock() + self.seconds
        with self._lock:
            if generation != self._generation:
                return  # something was revoked while this look-up ran: do not trust it
            if len(self._entries) >= self._max and token_hash not in self._entries:
                self._entries.pop(next(iter(self._entries)))  # the oldest entry
            self._entries[token_hash] = (identity, expires)

    def forget_all(self) -> None:
        with self._lock:
            self._generation += 1
            self._entries.clear()


class CredentialService:
    def __init__(self, db: Database, admin_token: str | None, *,
                 cache: CredentialCache | None = None) -> None:
        self._db = db
        self._admin_token = admin_token
        # Shared with HospitalService, whose deactivation must forget at once too.
        self.cache = cache if cache is not None else CredentialCache()

    def issue(self, hospital_code: str, *, label: str = "",
              actor: Actor = LOCAL_OPERATOR) -> IssuedCredential:
        """Issue a credential for a registered hospital; committed when this returns.

        Raises
        ------
        NotFoundError
            The hospital code is unknown.
        """
        require_hospital_admin(actor)
        now = datetime.now(UTC)
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        try:
            with self._db.write() as session:
                hospital = repo.hospital_by_code(session, hospital_code.strip())
                if hospital is None:
                    raise NotFoundError(f"unknown hospital code {hospital_code.strip()[:64]!r}")
                row = repo.add_credential(session, {
                    "hospital_id": hospital.id, "label": label[:128],
                    "token_prefix": token[:12], "token_hash": _hash(token), "created_at": now,
                })
                repo.add_event(session, at=now, action="credential.issue",
                               actor=actor_label(actor), hospital_id=hospital.id,
                               detail={"credential": row.id})
                view = CredentialView(row.id, hospital.code, row.label, row.token_prefix,
                                      row.created_at, None)
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        return IssuedCredential(view, token)

    def list(self, hospital_code: str, *,
             actor: Actor = LOCAL_OPERATOR) -> list[CredentialView]:
        require_hospital_admin(actor)
        try:
            with self._db.read() as session:
                hospital = repo.hospital_by_code(session, hospital_code.strip())
                if hospital is None:
                    raise NotFoundError(f"unknown hospital code {hospital_code.strip()[:64]!r}")
                return [CredentialView(r.id, hospital.code, r.label, r.token_prefix,
                                       r.created_at, r.revoked_at)
                        for r in repo.credentials_of(session, hospital.id)]
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc

    def revoke(self, credential_id: int, *, actor: Actor = LOCAL_OPERATOR) -> CredentialView:
        """Revoke a credential at once (its next request gets 401); idempotent.

        Raises
        ------
        NotFoundError
        """
        require_hospital_admin(actor)
        now = datetime.now(UTC)
        try:
            with self._db.write() as session:
                row = repo.credential_by_id(session, credential_id)
                if row is None:
                    raise NotFoundError(f"no credential has the id {credential_id}")
                if row.revoked_at is None:
                    row.revoked_at = now
                    repo.add_event(session, at=now, action="credential.revoke",
                                   actor=actor_label(actor), hospital_id=row.hospital_id,
                                   detail={"credential": row.id})
                hospital = repo.hospital_by_id(session, row.hospital_id)
                code = hospital.code if hospital is not None else ""
                view = CredentialView(row.id, code, row.label, row.token_prefix,
                                      row.created_at, row.revoked_at)
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        finally:
            # Whatever happened (even a failed commit may have reached the disk): the next
            # request of any credential of this process goes to the database.
            self.cache.forget_all()
        return view

    def rotate(self, credential_id: int, *, actor: Actor = LOCAL_OPERATOR) -> IssuedCredential:
        """Issue a new credential of the same hospital and label, and revoke the old one.

        Raises
        ------
        NotFoundError
        """
        old = self.revoke(credential_id, actor=actor)
        return self.issue(old.hospital_code, label=old.label, actor=actor)

    def authenticate(self, token: str) -> HospitalIdentity:
        """The hospital a bearer token speaks for.

        Raises
        ------
        NotAuthenticatedError
            Unknown or revoked token, or the hospital is deactivated. The message does not
            say which, so that it tells an attacker nothing.
        """
        token = token.strip()
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            raise NotAuthenticatedError("the hospital credential is not valid")
        token_hash = _hash(token)
        cached = self.cache.get(token_hash)
        if cached is not None:
            return cached
        generation = self.cache.generation
        try:
            with self._db.read() as session:
                row = repo.hospital_for_token(session, token_hash)
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        if row is None or not row.active:
            logger.info("cloudfilm.identity.credential_refused",
                        extra={"prefix": token[:12]})
            raise NotAuthenticatedError("the hospital credential is not valid (unknown, "
                                        "revoked, or its hospital is deactivated)")
        identity = HospitalIdentity(row.id, row.code, row.name)
        self.cache.put(token_hash, identity, generation)
        return identity

    def verified(self, token: str) -> HospitalIdentity | None:
        """The hospital of ``token`` if it was verified within the cache's lifetime; None
        means "ask :meth:`authenticate`" (never "refused"). No database, no blocking: the
        HTTP door calls it on the event loop and hops to a thread only when it is None."""
        token = token.strip()
        if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
            return None
        return self.cache.get(_hash(token))

    def authenticate_admin(self, token: str | None) -> None:
        """Raises NotAuthenticatedError unless ``token`` is the configured admin token."""
        if not self._admin_token:
            raise NotAuthenticatedError("the admin API is disabled: set "
                                        "CLOUDFILM_SECURITY__ADMIN_TOKEN")
        if token is None or not hmac.compare_digest(token.strip().encode(),
                                                    self._admin_token.encode()):
            raise NotAuthenticatedError("an administrator's bearer token is required")
