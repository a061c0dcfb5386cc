"""Hospitals' API credentials: issued once, stored as SHA-256 only, rotatable, revocable.

A token is 32 random bytes (``cfh_`` + base64url). With that much entropy a plain SHA-256
is enough to store it (no slow password hash is needed: nothing to brute-force), and it
makes authentication one indexed look-up. The administrators' token comes from
configuration (``security.admin_token``) until the access issue brings user accounts.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
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


class CredentialService:
    def __init__(self, db: Database, admin_token: str | None) -> None:
        self._db = db
        self._admin_token = admin_token

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
                return CredentialView(row.id, code, row.label, row.token_prefix,
                                      row.created_at, row.revoked_at)
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc

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
        try:
            with self._db.read() as session:
                row = repo.hospital_for_token(session, _hash(token))
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        if row is None or not row.active:
            logger.info("cloudfilm.identity.credential_refused",
                        extra={"prefix": token[:12]})
            raise NotAuthenticatedError("the hospital credential is not valid (unknown, "
                                        "revoked, or its hospital is deactivated)")
        return HospitalIdentity(row.id, row.code, row.name)

    def authenticate_admin(self, token: str | None) -> None:
        """Raises NotAuthenticatedError unless ``token`` is the configured admin token."""
        if not self._admin_token:
            raise NotAuthenticatedError("the admin API is disabled: set "
                                        "CLOUDFILM_SECURITY__ADMIN_TOKEN")
        if token is None or not hmac.compare_digest(token.strip().encode(),
                                                    self._admin_token.encode()):
            raise NotAuthenticatedError("an administrator's bearer token is required")
