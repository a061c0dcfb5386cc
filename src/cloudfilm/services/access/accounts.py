"""Accounts and sign-in: residents by phone and SMS code, doctors and administrators by
password; sessions as opaque ``cfs_`` tokens that any process can check.

- Residents register once: a code proves the phone, and name + national ID must match a
  resident of the master patient index (the ID as its keyed hash, the name as whole-name
  forms in characters or pinyin). One account per resident and per phone. A resident acts
  for the residents whose parent or guardian they are recorded as (``family_link``).
- Doctors belong to one hospital and department; the platform administrator (admin
  token or an ``admin`` account) or the hospital's own ``hospital_admin`` creates them.
  Passwords are argon2id (``argon2-cffi`` defaults); 5 failures in 15 minutes lock the
  account for 15 minutes (settings), and an unknown user name costs the same hash
  verification and is counted the same way, so timing and answers tell nothing.
- Sessions: 32 random bytes; only SHA-256 is stored (like hospital credentials, nothing to
  brute-force), so every process checks a token with one indexed query, and sign-out or
  expiry holds on the next request.

Nothing here logs a phone, a code, a password, a token or a national ID.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db import account_repository as repo
from cloudfilm.infrastructure.db import identity_repository as identity_repo
from cloudfilm.infrastructure.db.models import Account
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError
from cloudfilm.services.access.actor import Actor, ActorKind, Permission, Role
from cloudfilm.services.access.otp import Limit, OneTimeCodes, RateLimiter, aware
from cloudfilm.services.access.proofing import IdentityVerifier
from cloudfilm.services.access.sms import PHONE_DOMAIN, SmsService, mask_phone
from cloudfilm.services.errors import (
    AlreadyExistsError,
    CloudfilmError,
    InvalidInputError,
    NotAuthenticatedError,
    NotAuthorizedError,
    NotFoundError,
    RateLimitedError,
    ResourceUnavailableError,
)
from cloudfilm.services.identity import names
from cloudfilm.services.identity.mpi import NATIONAL_ID, parse_national_id
from cloudfilm.services.identity.protection import IdProtector
from cloudfilm.services.transactions import guarded as _guarded

logger = logging.getLogger(__name__)

SESSION_PREFIX = "cfs_"
ACCOUNT_KINDS = ("doctor", "hospital_admin", "admin", "resident")
_PHONE = re.compile(r"^(\+86)?1[3-9]\d{9}$")
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
MIN_PASSWORD = 10


Outcome = Literal["allowed", "denied", "success", "failure"]


class AuditRecorder(Protocol):
    """What the audit trail offers (``services.access.audit.AuditService``)."""

    def record(self, conn: Any, *, actor: Actor, action: str, outcome: Outcome,
               resident_id: int | None = None,
               detail: dict[str, Any] | None = None) -> Any: ...


def audit_event(recorder: AuditRecorder | None, session: Session, *, actor: Actor,
                action: str, outcome: Outcome, resident_id: int | None = None,
                detail: dict[str, Any] | None = None) -> None:
    """Record an access event in the caller's transaction (the audit trail once it is
    wired in ``app.py``; until then a log line of ids only)."""
    if recorder is not None:
        recorder.record(session, actor=actor, action=action, outcome=outcome,
                        resident_id=resident_id, detail=detail)
        return
    logger.info("cloudfilm.access.%s", action,
                extra={"subject": actor.subject, "outcome": outcome,
                       "resident_id": resident_id})


def normalise_phone(value: str) -> str:
    """11-digit mainland mobile number, or InvalidInputError naming the field."""
    cleaned = value.strip().replace(" ", "").replace("-", "")
    if not _PHONE.match(cleaned):
        raise InvalidInputError("phone must be a mainland mobile number (11 digits starting "
                                "with 1, optionally +86)")
    return cleaned[-11:]


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def anonymous(kind: str, address: str = "") -> Actor:
    """The actor of an attempt nobody is signed in for (failed sign-in, code request)."""
    return Actor(kind="resident" if kind == "resident" else "doctor", subject="anonymous",
                 address=address)


class _RegistrationRefused(Exception):
    """Inside a registration's transaction: not confirmed (mapped to one answer)."""

    def __init__(self, resident_id: int | None) -> None:
        super().__init__("registration refused")
        self.resident_id = resident_id


_ACTIVATION_ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I/L: read off paper
ACTIVATION_DOMAIN = "activation-code"


def _normalise_activation_code(value: str) -> str:
    cleaned = value.strip().upper().replace("-", "").replace(" ", "")
    if not 8 <= len(cleaned) <= 16 or any(c not in _ACTIVATION_ALPHABET for c in cleaned):
        raise InvalidInputError("activation_code: the code printed on your slip "
                                "(letters and digits, like ABCD-EFGH-JKMN)")
    return cleaned


@dataclass(frozen=True, slots=True)
class SignedIn:
    """A new session: ``token`` is shown this once; only its hash is stored."""

    token: str
    expires_at: datetime
    actor: Actor


@dataclass(frozen=True, slots=True)
class IssuedActivationCode:
    """Shown once (print it on the slip); only its keyed hash is stored."""

    code: str
    expires_at: datetime
    resident_id: int


@dataclass(frozen=True, slots=True)
class AccountReset:
    resident_id: int
    activation_code: IssuedActivationCode | None


@dataclass(frozen=True, slots=True)
class AccountView:
    id: int
    kind: str
    username: str | None
    display_name: str
    hospital_id: int | None
    hospital_code: str | None
    department: str
    phone_masked: str
    resident_id: int | None
    resident_ids: tuple[int, ...]
    active: bool
    locked_until: datetime | None


@dataclass(frozen=True, slots=True)
class NewAccount:
    kind: str
    username: str
    password: str
    display_name: str
    hospital_code: str | None = None
    department: str = ""
    area: str = ""
    """A health bureau's area: ``<city>`` or ``<city>/<county>``."""


@dataclass(frozen=True, slots=True)
class AccessPolicySettings:
    """The ``access`` settings accounts need (copied in by the composition root)."""

    session_hours: int = 12
    otp_sends_per_phone_hour: int = 5
    otp_sends_per_requester_hour: int = 20
    otp_checks_per_15min: int = 10
    lockout_failures: int = 5  # failures of one user name before delays start
    lockout_window_minutes: int = 15
    signin_max_delay_seconds: int = 60
    signin_failures_per_source: int = 50  # per client address and window
    activation_code_days: int = 30


class AccountService:
    """Accounts, sign-in and sessions.

    Parameters
    ----------
    db, protector
        The index and the keyed hash/encryption of phones and national IDs.
    sms, codes, limiter
        Text messages, one-time codes and the table-based rate limiter.
    limits
        Session lifetime, code and lockout limits (``access`` settings).
    audit
        The audit trail, when wired; None logs ids only.
    """

    def __init__(self, db: Database, protector: IdProtector, sms: SmsService,
                 codes: OneTimeCodes, limiter: RateLimiter,
                 limits: AccessPolicySettings | None = None,
                 audit: AuditRecorder | None = None,
                 verifier: IdentityVerifier | None = None) -> None:
        self._db = db
        self._verifier = verifier
        self._protector = protector
        self._sms = sms
        self._codes = codes
        self._limiter = limiter
        self._limits = limits or AccessPolicySettings()
        self.audit = audit
        self._hasher = PasswordHasher()
        self._dummy_hash: str | None = None

    # -- residents: phone and SMS code --

    def send_sign_in_code(self, phone: str, *, requester: str) -> str:
        """Text a sign-in/registration code to ``phone``; committed before the SMS goes.

        The answer is the same whether or not an account uses the phone (it tells a
        stranger nothing). Returns the masked phone.

        Raises
        ------
        InvalidInputError
            Not a mobile number.
        RateLimitedError
            Too many codes for this phone (5 an hour) or this requester (20 an hour).
        """
        phone = normalise_phone(phone)
        phone_hash = self._phone_hash(phone)
        now = datetime.now(UTC)
        lim = self._limits
        with self._write() as session:
            # Buckets of their own (purpose "sign_in"): doctors' grant requests cannot use
            # up the codes a resident needs to sign in (issue 11, finding 9).
            self._limiter.hit(session, f"sms:sign_in:phone:{phone_hash[:32]}",
                              Limit(lim.otp_sends_per_phone_hour, 3600), now,
                              what="codes sent to this phone")
            self._limiter.hit(session, f"sms:sign_in:req:{requester[:64]}",
                              Limit(lim.otp_sends_per_requester_hour, 3600), now,
                              what="codes requested from here")
            code = self._codes.issue(session, "sign_in", phone_hash, now)
        self._sms.send_code(phone, code, purpose="sign_in")
        return mask_phone(phone)

    def sign_in_resident(self, phone: str, code: str, *, requester: str) -> SignedIn:
        """Sign a resident in with the code texted to their phone; the code is spent.

        Raises
        ------
        NotAuthenticatedError
            Wrong, expired, used or burnt code (the same answer for each).
        NotFoundError
            The code was right but no account uses this phone: register.
        RateLimitedError
            Too many code checks for this phone or requester.
        """
        phone = normalise_phone(phone)
        phone_hash = self._phone_hash(phone)

        def then(session: Session, now: datetime) -> SignedIn:
            account = repo.account_by_phone(session, phone_hash)
            if account is None or not account.active or account.kind != "resident":
                raise NotFoundError("no resident account uses this phone yet: register with "
                                    "your name and national ID and a new code")
            return self._open_session(session, account, now, address=requester)

        return self._with_code(phone_hash, code, requester, then)

    def register_resident(self, phone: str, code: str, *, name: str, national_id: str,
                          requester: str, activation_code: str = "") -> SignedIn:
        """Create a resident's account bound to their MPI entry, and sign them in.

        Real-name binding a stranger cannot pass (issue 11, finding 2): the SMS code proves
        the phone; the national ID must be in the index and the name must be the resident's
        name exactly (characters; pinyin is for search only); and one second factor:

        - the phone is one a hospital already recorded for the resident (feed), or
        - ``activation_code``, the one-time code a hospital handed the patient, or
        - the identity-verification provider confirms name, ID and phone.

        Committed when this returns (the code is spent even when the registration is
        refused, so every try costs a new SMS, itself rate limited); a refusal is audited.

        Raises
        ------
        NotAuthenticatedError
            Wrong or spent code.
        InvalidInputError
            Malformed national ID, or the registration cannot be confirmed (one answer for
            "not indexed", "wrong name" and "no second factor", so that the endpoint tells
            nothing about who is indexed).
        AlreadyExistsError
            The resident or the phone has an account already.
        """
        phone = normalise_phone(phone)
        nid = parse_national_id(national_id)
        if not name.strip():
            raise InvalidInputError("name: give your name as on your ID card")
        phone_hash = self._phone_hash(phone)
        activation = _normalise_activation_code(activation_code) if activation_code else ""
        # Asked before the transaction (a network call); only its answer is used inside.
        verified = (not activation and self._verifier is not None
                    and self._verifier.verify(name=name.strip(), national_id=nid.number,
                                              phone=phone))

        def then(session: Session, now: datetime) -> SignedIn:
            found = identity_repo.resident_by_national_id(
                session, self._protector.lookup_hash(NATIONAL_ID, nid.number))
            while found is not None and found.merged_into is not None:
                found = identity_repo.resident_by_id(session, found.merged_into)
            factor = None
            if found is not None and names.exact_name(found.name, name):
                factor = self._second_factor(session, found.id, phone_hash, activation,
                                             verified, now)
            if found is None or factor is None:
                raise _RegistrationRefused(found.id if found is not None else None)
            if repo.account_of_resident(session, found.id) is not None:
                raise AlreadyExistsError(
                    "this resident has an account already; sign in with its phone, or ask "
                    "a hospital you visited to reset it after checking your ID card")
            if repo.account_by_phone(session, phone_hash) is not None:
                raise AlreadyExistsError("this phone belongs to another account")
            try:
                with session.begin_nested():
                    account = repo.add_account(session, {
                        "kind": "resident", "username": None, "display_name": found.name,
                        "hospital_id": None, "department": "", "resident_id": found.id,
                        "phone_hash": phone_hash,
                        "phone_enc": self._protector.encrypt(PHONE_DOMAIN, phone),
                        "phone_masked": mask_phone(phone), "password_hash": None,
                        "failed_logins": 0, "active": True, "created_at": now,
                    })
            except IntegrityError:
                raise AlreadyExistsError("this resident or phone has an account already") \
                    from None
            if factor == "activation_code":
                row = identity_repo.activation_code_by_hash(session, self._activation_hash(
                    activation))
                assert row is not None
                row.used_at = now
            signed = self._open_session(session, account, now, address=requester)
            # The resident's proven contact phone is set here: a phone change, audited.
            audit_event(self.audit, session, actor=signed.actor, action="account.register",
                        outcome="success", resident_id=found.id,
                        detail={"factor": factor, "phone": "set"})
            return signed

        try:
            return self._with_code(phone_hash, code, requester, then)
        except _RegistrationRefused as refused:
            self._audit_refused_registration(refused.resident_id, requester)
            raise InvalidInputError(
                "we could not confirm that this is you: check your name (as on your ID card) "
                "and ID number, and register with the phone your hospital recorded, or with "
                "the activation code on your report slip", code="registration-refused") \
                from None

    def _second_factor(self, session: Session, resident_id: int, phone_hash: str,
                       activation: str, verified: bool, now: datetime) -> str | None:
        """Which second factor holds for this resident, or None."""
        if activation:
            row = identity_repo.activation_code_by_hash(session,
                                                        self._activation_hash(activation))
            if (row is not None and row.used_at is None and aware(row.expires_at) > now
                    and self._active_resident(session, row.resident_id) == resident_id):
                return "activation_code"
            return None
        if identity_repo.hospital_recorded_phone(session, resident_id, phone_hash):
            return "hospital_phone"
        if verified:
            return "identity_provider"
        return None

    @staticmethod
    def _active_resident(session: Session, resident_id: int) -> int | None:
        found = identity_repo.resident_by_id(session, resident_id)
        seen = 0
        while found is not None and found.merged_into is not None and seen < 16:
            found, seen = identity_repo.resident_by_id(session, found.merged_into), seen + 1
        return found.id if found is not None else None

    def _audit_refused_registration(self, resident_id: int | None, requester: str) -> None:
        """A refused registration is audited in its own transaction (the code's was
        committed already); the resident, when the ID was indexed, sees the try."""
        if self.audit is None:
            logger.info("cloudfilm.access.register_refused")
            return
        with self._write() as session:
            audit_event(self.audit, session, actor=anonymous("resident", requester),
                        action="account.register", outcome="failure",
                        resident_id=resident_id)

    def _with_code(self, phone_hash: str, code: str, requester: str,
                   then: Any) -> SignedIn:
        """Check a sign-in code, then run ``then`` in the same transaction. Refusals are
        raised after the commit, so the spent code and the counted guess persist."""
        now = datetime.now(UTC)
        lim = self._limits
        refusal: Exception | None = None
        result: SignedIn | None = None
        with self._write() as session:
            self._limiter.hit(session, f"otp-check:phone:{phone_hash[:32]}",
                              Limit(lim.otp_checks_per_15min, 900), now,
                              what="code checks for this phone")
            self._limiter.hit(session, f"otp-check:req:{requester[:64]}",
                              Limit(lim.otp_checks_per_15min * 4, 900), now,
                              what="code checks from here")
            if not self._codes.verify(session, "sign_in", phone_hash, code, now):
                refusal = NotAuthenticatedError("the code is wrong, expired or already used; "
                                                "ask for a new one")
                audit_event(self.audit, session, actor=anonymous("resident", requester),
                            action="sign_in.code", outcome="failure")
            else:
                try:
                    with session.begin_nested():
                        result = then(session, now)
                except (CloudfilmError, _RegistrationRefused) as exc:
                    refusal = exc
        if refusal is not None:
            raise refusal
        assert result is not None
        logger.info("cloudfilm.access.signed_in", extra={"subject": result.actor.subject})
        return result

    # -- doctors and administrators: password --

    def sign_in_password(self, username: str, password: str, *, requester: str) -> SignedIn:
        """Sign a doctor or administrator in; committed when this returns.

        Failures slow a user name down instead of locking it (issue 11, finding 9: five
        wrong passwords locked the real doctor out for 15 minutes): after
        ``lockout_failures`` failures in the window each further try waits twice as long
        as the last, at most ``signin_max_delay_seconds``. A client address with
        ``signin_failures_per_source`` failures in the window is refused outright. Known
        and unknown user names get the same answers, delays and cost, and every failure is
        audited (an unknown name as a hash).

        The argon2 verification (tens of milliseconds by design) runs between two short
        transactions, never inside one: on SQLite a write transaction holds the database's
        single write lock, and ingest would wait behind every sign-in.

        Raises
        ------
        NotAuthenticatedError
            Unknown user name or wrong password (one answer for both).
        RateLimitedError
            Wait before the next try (``retry_after``), or too many failures from here.
        """
        username = username.strip().lower()[:64]
        now = datetime.now(UTC)
        lim = self._limits
        window = int(timedelta(minutes=lim.lockout_window_minutes).total_seconds())
        user_hash = hashlib.sha256(username.encode()).hexdigest()[:32]
        user_bucket, source_bucket = f"signin-fail:user:{user_hash}", \
            f"signin-fail:src:{requester[:64]}"
        with self._read() as session:
            self._signin_wait(session, user_bucket, source_bucket, now)
            found = (repo.account_by_username(session, username)
                     if _USERNAME.match(username) else None)
            stored = found.password_hash if found is not None else None
            if found is not None and (found.kind == "resident" or not found.active):
                stored = None
            account_id = found.id if found is not None else None
        # Same cost for an unknown name, a deactivated account and a wrong password.
        ok = self._verify(stored or self._dummy(), password) and stored is not None
        refusal: CloudfilmError | None = None
        result: SignedIn | None = None
        now = datetime.now(UTC)
        with self._write() as session:
            repo.lock_bucket(session, user_bucket)
            account = (repo.account_by_id(session, account_id, for_update=True)
                       if account_id is not None else None)
            try:
                # Again under the bucket's lock: parallel tries cannot all pass the check.
                self._signin_wait(session, user_bucket, source_bucket, now)
            except RateLimitedError as exc:
                refusal = exc
            else:
                if ok and account is not None and account.active:
                    repo.prune_bucket(session, user_bucket, now + timedelta(seconds=1))
                    account.failed_logins, account.first_failed_at = 0, None
                    account.locked_until = None
                    result = self._open_session(session, account, now, address=requester)
                else:
                    repo.prune_bucket(session, user_bucket, now - timedelta(seconds=window))
                    repo.add_bucket_event(session, user_bucket, now)
                    self._limiter.hit(session, source_bucket,
                                      Limit(lim.signin_failures_per_source + 1, window), now,
                                      what="failed sign-ins from here")
                    refusal = NotAuthenticatedError("wrong user name or password")
                    actor = (self._actor(session, account, requester) if account is not None
                             else anonymous("doctor", requester))
                    audit_event(self.audit, session, actor=actor, action="sign_in.password",
                                outcome="failure",
                                detail=None if account is not None else {"user": user_hash})
        if refusal is not None:
            raise refusal
        assert result is not None
        if stored is not None and self._hasher.check_needs_rehash(stored):
            self._rehash(result.actor.account_id, password)
        return result

    def _signin_wait(self, session: Session, user_bucket: str, source_bucket: str,
                     now: datetime) -> None:
        """Refuse while this user name must wait, or this source failed too often."""
        lim = self._limits
        window = timedelta(minutes=lim.lockout_window_minutes)
        source = repo.bucket_events(session, source_bucket, now - window)
        if len(source) >= lim.signin_failures_per_source:
            wait = int((aware(source[0]) + window - now).total_seconds()) + 1
            raise RateLimitedError(f"too many failed sign-ins from here; try again in "
                                   f"{wait} seconds", retry_after=wait)
        failures = repo.bucket_events(session, user_bucket, now - window)
        over = len(failures) - lim.lockout_failures
        if over < 0:
            return
        delay = min(2 ** over, lim.signin_max_delay_seconds)
        wait = int((aware(failures[-1]) + timedelta(seconds=delay) - now).total_seconds()) + 1
        if wait > 0 and aware(failures[-1]) + timedelta(seconds=delay) > now:
            raise RateLimitedError(f"too many failed sign-ins for this user name; try again in "
                                   f"{wait} seconds", retry_after=wait)

    def _rehash(self, account_id: int | None, password: str) -> None:
        """Upgrade a hash made with older argon2 parameters, after a successful sign-in."""
        new_hash = self._hasher.hash(password)
        with self._write() as session:
            account = repo.account_by_id(session, account_id or 0)
            if account is not None:
                account.password_hash = new_hash

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return bool(self._hasher.verify(password_hash, password))
        except (VerificationError, InvalidHashError):
            return False

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    # -- sessions --

    def _open_session(self, session: Session, account: Account, now: datetime, *,
                      address: str = "", method: str = "") -> SignedIn:
        token = SESSION_PREFIX + secrets.token_urlsafe(32)
        expires = now + timedelta(hours=self._limits.session_hours)
        repo.add_session(session, {"token_hash": _token_hash(token), "account_id": account.id,
                                   "created_at": now, "expires_at": expires})
        account.last_sign_in_at = now
        actor = self._actor(session, account, address)
        audit_event(self.audit, session, actor=actor, action="sign_in", outcome="success",
                    resident_id=account.resident_id,
                    detail={"method": method} if method else None)
        return SignedIn(token, expires, actor)

    def launched_session(self, session: Session, username: str, hospital_id: int,
                         now: datetime, *, address: str = "") -> SignedIn | None:
        """A session for the clinician a hospital's HIS vouched for with a launch token,
        opened inside the launch's own transaction (``LaunchService.redeem``, which has
        checked and used the token). None unless ``username`` is an active doctor (or
        hospital administrator) of that hospital, and the hospital is active."""
        account = repo.account_by_username(session, username)
        if (account is None or not account.active or account.hospital_id != hospital_id
                or account.kind not in ("doctor", "hospital_admin")):
            return None
        hospital = identity_repo.hospital_by_id(session, hospital_id)
        if hospital is None or not hospital.active:
            return None
        return self._open_session(session, account, now, address=address, method="launch")

    def actor_for_token(self, token: str, *, address: str = "") -> Actor | None:
        """The signed-in person a session token speaks for, or None.

        None for a malformed, unknown, expired or signed-out token, a deactivated account,
        or a doctor of a deactivated hospital. Reads the database every time (one indexed
        query plus the family links of a resident), so sign-out holds at once.
        """
        token = token.strip()
        if not token.startswith(SESSION_PREFIX) or len(token) > 128:
            return None
        try:
            with self._db.read() as session:
                row = repo.live_session(session, _token_hash(token), datetime.now(UTC))
                if row is None:
                    return None
                account, code, hospital_active = row
                if not account.active or (account.hospital_id is not None
                                          and not hospital_active):
                    return None
                return self._actor(session, account, address, hospital_code=code)
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc

    def sign_out(self, token: str) -> None:
        """End a session; idempotent. Committed when this returns."""
        token = token.strip()
        if not token.startswith(SESSION_PREFIX):
            return
        with self._write() as session:
            repo.revoke_session(session, _token_hash(token), datetime.now(UTC))

    def renew_session(self, token: str, *, address: str = "") -> SignedIn | None:
        """A fresh session for the account of a live ``token`` (the workstation's "stay
        signed in" before the session ends); the old token ends at once. None when the
        token is no longer live (sign in again). Committed when this returns."""
        token = token.strip()
        if not token.startswith(SESSION_PREFIX) or len(token) > 128:
            return None
        now = datetime.now(UTC)
        with self._write() as session:
            row = repo.live_session(session, _token_hash(token), now)
            if row is None or not row[0].active or (row[0].hospital_id is not None
                                                    and not row[2]):
                return None
            if not repo.revoke_session(session, _token_hash(token), now):
                return None  # a parallel renewal won
            return self._open_session(session, row[0], now, address=address)

    def sign_out_everywhere(self, actor: Actor) -> None:
        """End every session of the actor's account (a lost or shared phone)."""
        if actor.account_id is None:
            raise NotAuthorizedError("only a signed-in account can sign out everywhere")
        with self._write() as session:
            repo.revoke_sessions_of(session, actor.account_id, datetime.now(UTC))

    def _actor(self, session: Session, account: Account, address: str, *,
               hospital_code: str | None = None) -> Actor:
        subject = f"account:{account.id}"
        if account.kind == "resident":
            own = account.resident_id
            ids: set[int] = set()
            if own is not None:
                ids.add(own)
                ids.update(repo.dependents_of(session, own))
            return Actor(kind="resident", subject=subject, account_id=account.id,
                         resident_ids=frozenset(ids), display=account.display_name,
                         address=address)
        if hospital_code is None and account.hospital_id is not None:
            hospital = identity_repo.hospital_by_id(session, account.hospital_id)
            hospital_code = hospital.code if hospital is not None else None
        # A hospital administrator is a member of its hospital like a doctor, with the
        # hospital-administrator role on top (what it may do: kernel.ROLE_PERMISSIONS).
        kind: ActorKind = ("admin" if account.kind == "admin" else
                           "bureau" if account.kind == "bureau" else "doctor")
        roles = (frozenset({Role.DOCTOR, Role.HOSPITAL_ADMIN})
                 if account.kind == "hospital_admin" else frozenset())
        return Actor(kind=kind, subject=subject, hospital_id=account.hospital_id,
                     hospital_code=hospital_code, account_id=account.id,
                     department=account.department, display=account.display_name,
                     address=address, roles=roles, area=account.area or "")

    # -- administration --

    def create_account(self, new: NewAccount, *, by: Actor) -> AccountView:
        """Create a doctor, hospital administrator or platform administrator account.

        Who may: a platform administrator or the local operator, any kind; a hospital
        administrator, doctors of their own hospital. Committed when this returns.

        Raises
        ------
        NotAuthorizedError, InvalidInputError, NotFoundError, AlreadyExistsError
        """
        kind = new.kind
        if kind not in ("doctor", "hospital_admin", "admin", "bureau"):
            raise InvalidInputError("kind must be doctor, hospital_admin, admin or bureau "
                                    "(residents register themselves with their phone)")
        area = "/".join(p.strip() for p in new.area.split("/") if p.strip())[:130]
        if (kind == "bureau") != bool(area):
            raise InvalidInputError("area: a health bureau account (and only one) names its "
                                    "city, or city/county, as the hospital registry spells it")
        username = new.username.strip().lower()
        if not _USERNAME.match(username):
            raise InvalidInputError("username: 3-64 lower-case letters, digits, '.', '_' or "
                                    "'-', starting with a letter or digit")
        if len(new.password) < MIN_PASSWORD or len(new.password) > 256:
            raise InvalidInputError(f"password: {MIN_PASSWORD} to 256 characters")
        if not new.display_name.strip():
            raise InvalidInputError("display_name: the name residents will see")
        password_hash = self._hasher.hash(new.password)
        now = datetime.now(UTC)
        by_hospital = self.administered_hospital(by)
        with self._write() as session:
            hospital_id: int | None = None
            if kind in ("doctor", "hospital_admin"):
                if not new.hospital_code:
                    raise InvalidInputError("hospital_code: a doctor belongs to one hospital")
                hospital = identity_repo.hospital_by_code(session, new.hospital_code.strip())
                if hospital is None:
                    raise NotFoundError(f"unknown hospital code {new.hospital_code[:64]!r}")
                hospital_id = hospital.id
            if not by.can(Permission.MANAGE_ACCOUNTS) and not (
                    kind == "doctor" and by_hospital is not None
                    and by_hospital == hospital_id):
                raise NotAuthorizedError("only a platform administrator, or the hospital's "
                                         "own administrator for its doctors, creates accounts")
            if repo.account_by_username(session, username) is not None:
                raise AlreadyExistsError(f"the user name {username!r} is taken")
            account = repo.add_account(session, {
                "kind": kind, "username": username, "display_name": new.display_name[:128],
                "hospital_id": hospital_id, "department": new.department[:128],
                "resident_id": None, "phone_hash": None, "phone_enc": None,
                "phone_masked": "", "password_hash": password_hash, "failed_logins": 0,
                "active": True, "created_at": now, "area": area,
            })
            audit_event(self.audit, session, actor=by, action="account.create",
                        outcome="success", detail={"account": account.id, "kind": kind})
            return self._view(session, account)

    def set_active(self, account_id: int, active: bool, *, by: Actor) -> AccountView:
        """Deactivate (or reactivate) an account; its sessions end at once."""
        with self._write() as session:
            account = repo.account_by_id(session, account_id, for_update=True)
            if account is None:
                raise NotFoundError(f"no account has the id {account_id}")
            by_hospital = self.administered_hospital(by)
            if not by.can(Permission.MANAGE_ACCOUNTS) and not (
                    account.kind == "doctor" and by_hospital is not None
                    and by_hospital == account.hospital_id):
                raise NotAuthorizedError("not an administrator of this account's hospital")
            account.active = active
            if not active:
                repo.revoke_sessions_of(session, account.id, datetime.now(UTC))
            return self._view(session, account)

    # -- resident accounts: activation codes and the in-person reset (issue 11) --

    def issue_activation_code(self, patient_id: str, *, by: Actor,
                              hospital_code: str | None = None,
                              issuer: str | None = None) -> IssuedActivationCode:
        """A one-time activation code for a hospital's linked patient, to print on the
        report slip or hand over at the desk; committed when this returns.

        Who may: the hospital itself (its credential), its hospital administrator, or a
        platform administrator naming ``hospital_code``. The code is shown once; only its
        keyed hash is stored; it works once, until ``activation_code_days`` have passed,
        and a new one retires the hospital's earlier unused codes for the resident.

        Raises
        ------
        NotAuthorizedError, NotFoundError
            Not allowed; unknown hospital or patient record, or the record is not linked
            to a resident (link it first).
        """
        now = datetime.now(UTC)
        code = "".join(secrets.choice(_ACTIVATION_ALPHABET) for _ in range(12))
        with self._write() as session:
            hospital_id = self._hospital_of(session, by, hospital_code)
            patient = identity_repo.patient_by_local_id(session, hospital_id,
                                                        patient_id.strip(), issuer)
            link = identity_repo.link_of(session, patient.id) if patient is not None else None
            if link is None or link.state != "linked" or link.resident_id is None:
                raise NotFoundError("this hospital has no patient record with this ID linked "
                                    "to a resident; register the patient with name and "
                                    "national ID first")
            resident_id = self._active_resident(session, link.resident_id) or link.resident_id
            identity_repo.retire_activation_codes(session, resident_id, hospital_id, now)
            expires = now + timedelta(days=self._limits.activation_code_days)
            identity_repo.add_activation_code(session, {
                "code_hash": self._activation_hash(code), "resident_id": resident_id,
                "hospital_id": hospital_id, "issued_by": by.subject[:64], "created_at": now,
                "expires_at": expires})
            audit_event(self.audit, session, actor=by, action="account.activation_code",
                        outcome="success", resident_id=resident_id,
                        detail={"hospital_id": hospital_id})
        return IssuedActivationCode(f"{code[:4]}-{code[4:8]}-{code[8:]}", expires, resident_id)

    def reset_resident_account(self, resident_id: int, id_card_number: str, *,
                               by: Actor) -> AccountReset:
        """Release a resident's account after an in-person ID check ("already registered"
        by someone else, or a lost phone); committed when this returns.

        The administrator types the ID card's number; it must match the resident's keyed
        hash (checks are rate limited per administrator). The account is deactivated and
        unbound (its sessions end), the previous phone is told by SMS, and a hospital
        administrator gets a fresh activation code to hand over so the resident registers
        again with their own phone. Audited either way.

        Raises
        ------
        NotAuthorizedError
            Not a platform administrator, nor the administrator of a hospital with a record
            of this resident; or the ID card number does not match.
        NotFoundError
            The resident has no account.
        """
        nid = parse_national_id(id_card_number, field_name="id_card_number")
        now = datetime.now(UTC)
        refusal: CloudfilmError | None = None
        old_phone: str | None = None
        code: IssuedActivationCode | None = None
        with self._write() as session:
            everywhere = by.can(Permission.MANAGE_ACCOUNTS)
            hospital_id = None if everywhere else (
                by.hospital_id if by.can(Permission.RESET_REGISTRATION) else None)
            if not everywhere and hospital_id is None:
                raise NotAuthorizedError("platform or hospital administrators only")
            self._limiter.hit(session, f"id-check:reset:{by.subject[:64]}", Limit(20, 3600),
                              now, what="ID card checks by this administrator")
            resident = identity_repo.resident_by_id(session, resident_id)
            typed = self._protector.lookup_hash(NATIONAL_ID, nid.number)
            patient_fk = (identity_repo.linked_patient_of(session, resident_id, hospital_id)
                          if hospital_id is not None and resident is not None else None)
            account = repo.account_of_resident(session, resident_id) \
                if resident is not None else None
            if resident is None or not resident.national_id_hash or not hmac.compare_digest(
                    typed, resident.national_id_hash) or (hospital_id is not None
                                                          and patient_fk is None):
                refusal = NotAuthorizedError("the ID card number does not match a resident "
                                             "of your hospital")
                audit_event(self.audit, session, actor=by, action="account.reset",
                            outcome="failure", resident_id=resident.id if resident else None)
            elif account is None:
                refusal = NotFoundError("this resident has no account: they can register")
            else:
                old_phone = self._decrypt_phone(account)
                account.active, account.resident_id, account.phone_hash = False, None, None
                account.phone_enc = None
                repo.revoke_sessions_of(session, account.id, now)
                audit_event(self.audit, session, actor=by, action="account.reset",
                            outcome="success", resident_id=resident_id,
                            detail={"account": account.id, "phone": "released",
                                    "id_card_checked": True})
        if refusal is not None:
            raise refusal
        if old_phone:
            try:
                self._sms.send_account_notice(old_phone, what="reset")
            except ResourceUnavailableError:
                logger.warning("cloudfilm.access.notice_failed")
        if hospital_id is not None and patient_fk is not None:
            code = self._issue_for_patient_fk(patient_fk, by=by)
        return AccountReset(resident_id, code)

    def _issue_for_patient_fk(self, patient_fk: int, *, by: Actor) -> IssuedActivationCode:
        with self._read() as session:
            patient = identity_repo.patient_by_fk(session, patient_fk)
            assert patient is not None
            local_id, issuer = patient.patient_id, patient.issuer_of_patient_id
        return self.issue_activation_code(local_id, by=by, issuer=issuer)

    def _hospital_of(self, session: Session, by: Actor, hospital_code: str | None) -> int:
        """The hospital ``by`` acts for when issuing activation codes."""
        if not by.can(Permission.ISSUE_ACTIVATION_CODES):
            raise NotAuthorizedError("the hospital (its credential or its administrator) "
                                     "issues activation codes")
        if by.can(Permission.MANAGE_ACCOUNTS):
            if not hospital_code:
                raise InvalidInputError("hospital_code: which hospital hands out the code")
            hospital = identity_repo.hospital_by_code(session, hospital_code.strip())
            if hospital is None:
                raise NotFoundError(f"unknown hospital code {hospital_code[:64]!r}")
            return hospital.id
        # The hospital system and the hospital's administrator: their own hospital only
        # (an administrator naming another hospital was silently given its own before).
        if by.hospital_id is None or (hospital_code and hospital_code != by.hospital_code):
            raise NotAuthorizedError("a hospital issues codes for its own patients only")
        return by.hospital_id

    def _decrypt_phone(self, account: Account) -> str | None:
        if not account.phone_enc:
            return None
        try:
            return self._protector.decrypt(PHONE_DOMAIN, account.phone_enc)
        except ValueError:
            return None

    @staticmethod
    def administered_hospital(actor: Actor) -> int | None:
        """The hospital whose accounts ``actor`` manages (a hospital administrator's own),
        or None. The roles come from the account when the session was resolved (a
        deactivated account's sessions end at once), so no second look-up is needed."""
        if actor.can(Permission.MANAGE_ACCOUNTS) or \
                not actor.can(Permission.MANAGE_HOSPITAL_ACCOUNTS):
            return None
        return actor.hospital_id

    def me(self, actor: Actor) -> AccountView:
        """The signed-in person's own account."""
        if actor.account_id is None:
            raise NotAuthenticatedError("sign in first")
        with self._read() as session:
            account = repo.account_by_id(session, actor.account_id)
            if account is None:
                raise NotAuthenticatedError("sign in first")
            return self._view(session, account)

    def list_accounts(self, *, by: Actor, hospital_code: str | None = None) -> list[AccountView]:
        by_hospital = self.administered_hospital(by)
        with self._read() as session:
            hospital_id = None
            if hospital_code:
                hospital = identity_repo.hospital_by_code(session, hospital_code)
                if hospital is None:
                    raise NotFoundError(f"unknown hospital code {hospital_code[:64]!r}")
                hospital_id = hospital.id
            if not by.can(Permission.MANAGE_ACCOUNTS):
                if by_hospital is None:
                    raise NotAuthorizedError("administrators only")
                hospital_id = by_hospital
            return [self._view(session, a)
                    for a in repo.accounts(session, hospital_id=hospital_id)]

    def _view(self, session: Session, account: Account) -> AccountView:
        code = None
        if account.hospital_id is not None:
            hospital = identity_repo.hospital_by_id(session, account.hospital_id)
            code = hospital.code if hospital is not None else None
        ids: tuple[int, ...] = ()
        if account.resident_id is not None:
            ids = (account.resident_id,
                   *sorted(repo.dependents_of(session, account.resident_id)))
        return AccountView(
            id=account.id, kind=account.kind, username=account.username,
            display_name=account.display_name, hospital_id=account.hospital_id,
            hospital_code=code, department=account.department,
            phone_masked=account.phone_masked, resident_id=account.resident_id,
            resident_ids=ids, active=account.active,
            locked_until=aware(account.locked_until) if account.locked_until else None)

    # -- helpers --

    def _activation_hash(self, code: str) -> str:
        return self._protector.lookup_hash(ACTIVATION_DOMAIN, code)

    def _phone_hash(self, phone: str) -> str:
        return self._protector.lookup_hash(PHONE_DOMAIN, phone)

    def _write(self) -> Any:
        return _guarded(self._db.write())

    def _read(self) -> Any:
        return _guarded(self._db.read())


