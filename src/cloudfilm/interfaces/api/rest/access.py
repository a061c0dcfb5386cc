"""REST API of accounts, sign-in, SMS and authorisation grants (``/api/v1``).

Signed-in callers send ``Authorization: Bearer cfs_...`` (a session token from a sign-in
route); every route authenticates through ``interfaces/api/auth.py`` (``CurrentActor``) and
the services decide what the :class:`Actor` may do.
Routes are ``def`` (thread pool): the services are synchronous.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request, Response
from pydantic import BaseModel, Field

from cloudfilm.interfaces.api.auth import CurrentActor as AuthenticatedActor
from cloudfilm.interfaces.api.auth import bearer, client_host
from cloudfilm.services.access.accounts import AccountView, NewAccount, SignedIn
from cloudfilm.services.access.actor import Actor, Permission
from cloudfilm.services.access.consent import GrantRequest, GrantView, InPersonEvidence
from cloudfilm.services.container import Services
from cloudfilm.services.errors import NotAuthorizedError

PREFIX = "/api/v1"
router = APIRouter()

def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


def client_address(request: Request) -> str:
    """The caller's address as a keyed hash (rate-limit key; never a raw IP, STYLE.md 6)."""
    return "ip:" + _services(request).audit.hash_address(client_host(request))


# One authentication for every HTTP route (interfaces/api/auth.py): hospital credentials,
# session tokens, the admin token, and the local operator in open local mode.
CurrentActor = AuthenticatedActor


# --- schemas -----------------------------------------------------------------------------


class PhoneIn(BaseModel):
    phone: str = Field(max_length=20)


class CodeSignInIn(BaseModel):
    phone: str = Field(max_length=20)
    code: str = Field(max_length=12)


class RegisterIn(CodeSignInIn):
    name: str = Field(max_length=128)
    national_id: str = Field(max_length=32)
    # The one-time code a hospital handed the patient (not needed when the phone is one a
    # hospital recorded for them, or the identity provider confirms them).
    activation_code: str = Field("", max_length=20)


class ActivationCodeIn(BaseModel):
    patient_id: str = Field(max_length=64)
    issuer_of_patient_id: str | None = Field(None, max_length=64)
    # Only a platform administrator names the hospital; a hospital's is its own.
    hospital_code: str | None = Field(None, max_length=64)


class AccountResetIn(BaseModel):
    id_card_number: str = Field(max_length=32)


class PasswordSignInIn(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)


class AccountIn(BaseModel):
    username: str = Field(max_length=64)
    password: str = Field(max_length=256)
    display_name: str = Field(max_length=128)
    hospital_code: str | None = Field(None, max_length=64)
    department: str = Field("", max_length=128)
    kind: Literal["doctor", "hospital_admin", "admin", "bureau"] = "doctor"
    area: str = Field("", max_length=130)
    """A health bureau's area: ``<city>`` or ``<city>/<county>``."""


class ResidentRef(BaseModel):
    """The resident: by index id or national ID (one of them)."""

    resident_id: int | None = None
    national_id: str | None = Field(None, max_length=32)
    study_uids: list[str] = Field(default_factory=list, max_length=200)


class GrantIn(ResidentRef):
    purpose: str = Field(max_length=256)
    hours: int | None = None
    mode: Literal["sms", "portal"] = "portal"


class CodeIn(BaseModel):
    code: str = Field(max_length=12)


class InPersonIn(ResidentRef):
    purpose: str = Field(max_length=256)
    hours: int | None = None
    id_card_number: str = Field(max_length=32)
    witness_name: str = Field("", max_length=128)
    signature_ref: str = Field("", max_length=128)


class BreakGlassIn(ResidentRef):
    reason: str = Field(max_length=1000)


class ReviewIn(BaseModel):
    decision: Literal["accepted", "flagged"]
    note: str = Field("", max_length=256)


def _actor(actor: Actor) -> dict[str, Any]:
    return {"kind": actor.kind, "subject": actor.subject, "account_id": actor.account_id,
            "hospital_id": actor.hospital_id, "hospital_code": actor.hospital_code,
            "department": actor.department, "display": actor.display,
            "resident_ids": sorted(actor.resident_ids)}


def _signed_in(signed: SignedIn) -> dict[str, Any]:
    return {"token": signed.token, "token_type": "bearer",
            "expires_at": signed.expires_at.isoformat(), "actor": _actor(signed.actor)}


def _account(view: AccountView) -> dict[str, Any]:
    data = asdict(view)
    data["locked_until"] = view.locked_until.isoformat() if view.locked_until else None
    return data


def _grant(view: GrantView) -> dict[str, Any]:
    data = asdict(view)
    for key in ("requested_at", "decided_at", "expires_at", "revoked_at"):
        value = getattr(view, key)
        data[key] = value.isoformat() if value is not None else None
    return data


# --- sign-in -----------------------------------------------------------------------------


@router.post("/auth/sms-code", summary="Text a sign-in or registration code to a phone")
def send_code(request: Request, body: PhoneIn) -> dict[str, Any]:
    accounts = _services(request).accounts
    masked = accounts.send_sign_in_code(body.phone, requester=client_address(request))
    return {"sent_to": masked, "expires_in": 300}


@router.post("/auth/resident/sign-in", summary="Resident sign-in with phone and SMS code")
def resident_sign_in(request: Request, body: CodeSignInIn) -> dict[str, Any]:
    signed = _services(request).accounts.sign_in_resident(
        body.phone, body.code, requester=client_address(request))
    return _signed_in(signed)


@router.post("/auth/resident/register", status_code=201,
             summary="Resident registration: phone + SMS code + name + national ID")
def resident_register(request: Request, body: RegisterIn) -> dict[str, Any]:
    signed = _services(request).accounts.register_resident(
        body.phone, body.code, name=body.name, national_id=body.national_id,
        requester=client_address(request), activation_code=body.activation_code)
    return _signed_in(signed)


@router.post("/activation-codes", status_code=201,
             summary="Issue a one-time activation code for the hospital's linked patient "
             "(print it on the report slip; shown once)")
def issue_activation_code(request: Request, body: ActivationCodeIn,
                          actor: CurrentActor) -> dict[str, Any]:
    issued = _services(request).accounts.issue_activation_code(
        body.patient_id, by=actor, hospital_code=body.hospital_code,
        issuer=body.issuer_of_patient_id)
    return {"activation_code": issued.code, "expires_at": issued.expires_at.isoformat(),
            "resident_id": issued.resident_id}


@router.post("/residents/{resident_id}/account-reset",
             summary="Release a resident's account after an in-person ID card check "
             "(hospital or platform administrators)")
def reset_account(request: Request, resident_id: int, body: AccountResetIn,
                  actor: CurrentActor) -> dict[str, Any]:
    reset = _services(request).accounts.reset_resident_account(
        resident_id, body.id_card_number, by=actor)
    code = reset.activation_code
    return {"resident_id": reset.resident_id, "status": "released",
            "activation_code": code.code if code else None,
            "expires_at": code.expires_at.isoformat() if code else None}


@router.post("/auth/doctor/sign-in", summary="Password sign-in (doctors, administrators)")
def doctor_sign_in(request: Request, body: PasswordSignInIn) -> dict[str, Any]:
    signed = _services(request).accounts.sign_in_password(
        body.username, body.password, requester=client_address(request))
    return _signed_in(signed)


@router.post("/auth/sign-out", status_code=204, summary="End the current session")
def sign_out(request: Request,
             authorization: Annotated[str | None, Header()] = None) -> Response:
    token = bearer(authorization)
    if token is not None:
        _services(request).accounts.sign_out(token)
    return Response(status_code=204)


@router.get("/me", summary="The signed-in account")
def me(request: Request, actor: CurrentActor) -> dict[str, Any]:
    if actor.account_id is None:
        return {"actor": _actor(actor)}
    return {"actor": _actor(actor), "account": _account(_services(request).accounts.me(actor))}


# --- accounts (administrators) -----------------------------------------------------------


@router.post("/accounts/doctors", status_code=201,
             summary="Create a doctor account (platform or that hospital's administrator)")
def create_doctor(request: Request, body: AccountIn, actor: CurrentActor) -> dict[str, Any]:
    return _create(request, body.model_copy(update={"kind": "doctor"}), actor)


@router.post("/accounts", status_code=201,
             summary="Create a doctor, hospital administrator or platform administrator")
def create_account(request: Request, body: AccountIn, actor: CurrentActor) -> dict[str, Any]:
    return _create(request, body, actor)


def _create(request: Request, body: AccountIn, actor: CurrentActor) -> dict[str, Any]:
    new = NewAccount(kind=body.kind, username=body.username, password=body.password,
                     display_name=body.display_name, hospital_code=body.hospital_code,
                     department=body.department, area=body.area)
    return _account(_services(request).accounts.create_account(new, by=actor))


@router.get("/accounts", summary="Accounts (a hospital administrator sees its hospital's)")
def list_accounts(request: Request, actor: CurrentActor,
                  hospital_code: str | None = None) -> list[dict[str, Any]]:
    return [_account(a) for a in
            _services(request).accounts.list_accounts(by=actor, hospital_code=hospital_code)]


@router.post("/accounts/{account_id}/deactivate", summary="Deactivate an account (its "
             "sessions end at once)")
def deactivate(request: Request, account_id: int, actor: CurrentActor) -> dict[str, Any]:
    return _account(_services(request).accounts.set_active(account_id, False, by=actor))


@router.get("/sms/outbox", summary="Local SMS outbox (development backend; administrators)")
def sms_outbox(request: Request, actor: CurrentActor, phone: str | None = None,
               limit: int = 100) -> list[dict[str, Any]]:
    if not actor.can(Permission.READ_SMS_OUTBOX):
        raise NotAuthorizedError("platform administrators only")
    return [{"id": m.id, "created_at": m.created_at.isoformat(), "phone": m.phone_masked,
             "template": m.template, "text": m.text}
            for m in _services(request).sms.outbox(phone=phone, limit=min(limit, 1000))]


# --- grants: doctors ---------------------------------------------------------------------


@router.post("/grants", status_code=201, summary="Ask a resident for access (sms or portal)")
def request_grant(request: Request, body: GrantIn, actor: CurrentActor) -> dict[str, Any]:
    req = GrantRequest(purpose=body.purpose, resident_id=body.resident_id,
                       national_id=body.national_id, study_uids=tuple(body.study_uids),
                       hours=body.hours)
    return _grant(_services(request).consent.request(actor, req, mode=body.mode))


@router.get("/grants", summary="The signed-in doctor's requests and grants")
def doctor_grants(request: Request, actor: CurrentActor) -> list[dict[str, Any]]:
    return [_grant(g) for g in _services(request).consent.doctor_grants(actor)]


@router.post("/grants/in-person", status_code=201,
             summary="Record a consent given in person, with evidence")
def in_person(request: Request, body: InPersonIn, actor: CurrentActor) -> dict[str, Any]:
    req = GrantRequest(purpose=body.purpose, resident_id=body.resident_id,
                       national_id=body.national_id, study_uids=tuple(body.study_uids),
                       hours=body.hours)
    evidence = InPersonEvidence(id_card_number=body.id_card_number,
                                witness_name=body.witness_name,
                                signature_ref=body.signature_ref)
    return _grant(_services(request).consent.in_person(actor, req, evidence))


@router.post("/grants/break-glass", status_code=201,
             summary="Emergency access (reason required; reviewed afterwards)")
def break_glass(request: Request, body: BreakGlassIn, actor: CurrentActor) -> dict[str, Any]:
    req = GrantRequest(purpose=body.reason, resident_id=body.resident_id,
                       national_id=body.national_id, study_uids=tuple(body.study_uids))
    return _grant(_services(request).consent.break_glass(actor, req))


@router.get("/grants/review", summary="In-person and emergency grants to review "
            "(hospital administrators)")
def review_queue(request: Request, actor: CurrentActor,
                 include_done: bool = False) -> list[dict[str, Any]]:
    return [_grant(g) for g in
            _services(request).consent.review_queue(actor, include_done=include_done)]


@router.post("/grants/{grant_id}/sms-confirm",
             summary="Enter the code the patient read out (the requesting doctor)")
def sms_confirm(request: Request, grant_id: int, body: CodeIn,
                actor: CurrentActor) -> dict[str, Any]:
    return _grant(_services(request).consent.confirm_sms(actor, grant_id, body.code))


@router.post("/grants/{grant_id}/review", summary="Review an in-person or emergency grant")
def review(request: Request, grant_id: int, body: ReviewIn,
           actor: CurrentActor) -> dict[str, Any]:
    return _grant(_services(request).consent.review(actor, grant_id, decision=body.decision,
                                                    note=body.note))


# --- grants: residents -------------------------------------------------------------------


@router.get("/me/grants", summary="Grants about me and those I act for")
def my_grants(request: Request, actor: CurrentActor) -> list[dict[str, Any]]:
    return [_grant(g) for g in _services(request).consent.resident_grants(actor)]


@router.get("/me/grant-requests", summary="Requests waiting for my decision")
def my_requests(request: Request, actor: CurrentActor) -> list[dict[str, Any]]:
    return [_grant(g) for g in
            _services(request).consent.resident_grants(actor, pending_only=True)]


@router.post("/grants/{grant_id}/approve", summary="Approve a waiting request")
def approve(request: Request, grant_id: int, actor: CurrentActor) -> dict[str, Any]:
    return _grant(_services(request).consent.approve(actor, grant_id))


@router.post("/grants/{grant_id}/deny", summary="Deny a waiting request")
def deny(request: Request, grant_id: int, actor: CurrentActor) -> dict[str, Any]:
    return _grant(_services(request).consent.deny(actor, grant_id))


@router.post("/grants/{grant_id}/revoke", summary="Revoke a grant now (resident, holder, "
             "administrator)")
def revoke(request: Request, grant_id: int, actor: CurrentActor) -> dict[str, Any]:
    return _grant(_services(request).consent.revoke(actor, grant_id))
