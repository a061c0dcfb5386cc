"""REST API of the identity domain (``/api/v1``): the hospital registry and credentials and
the resident index for administrators, and the registration feed for hospitals.

Every route authenticates with the one door authentication (``CurrentActor``: the
administrator's token, a hospital credential, a session, or the local operator) and hands
the :class:`Actor` to the service, which decides. Routes are ``def`` (FastAPI's thread pool)
because the services are synchronous; no route touches a session.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from cloudfilm.interfaces.api.auth import CurrentActor
from cloudfilm.services.access.actor import Permission
from cloudfilm.services.container import Services
from cloudfilm.services.errors import NotAuthorizedError
from cloudfilm.services.identity.hospitals import HospitalInput, HospitalView
from cloudfilm.services.identity.mpi import Registration, ResidentView

PREFIX = "/api/v1"
router = APIRouter()


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


# One authentication for every route (interfaces/api/auth.py); the services decide who may
# do what with the Actor they are given (services/identity/roles.py).


# --- schemas -----------------------------------------------------------------------------


class HospitalIn(BaseModel):
    code: str = Field(max_length=64)
    name: str = Field(max_length=256)
    level: Literal["tertiary", "secondary", "primary"]
    grade: str = ""
    city: str = ""
    county: str = ""
    active: bool = True
    national_id_source: Literal["none", "patient_id", "other_patient_ids", "tag"] = "none"
    national_id_issuer: str = ""
    national_id_tag: str = ""
    public: bool = True
    contact_phone: str = Field("", max_length=32)
    alert_webhook: str = Field("", max_length=512)


class HospitalPatch(BaseModel):
    name: str | None = None
    level: Literal["tertiary", "secondary", "primary"] | None = None
    grade: str | None = None
    city: str | None = None
    county: str | None = None
    active: bool | None = None
    national_id_source: Literal["none", "patient_id", "other_patient_ids", "tag"] | None = None
    national_id_issuer: str | None = None
    national_id_tag: str | None = None
    public: bool | None = None
    contact_phone: str | None = Field(None, max_length=32)
    alert_webhook: str | None = Field(None, max_length=512)


class AeTitleIn(BaseModel):
    ae_title: str
    host: str
    port: int
    description: str = ""


class CredentialIn(BaseModel):
    label: str = ""


class IdentifierIn(BaseModel):
    type: str
    value: str
    issuer: str = ""


class RegistrationIn(BaseModel):
    """One patient registration (the REST form of HL7 v2 ADT A04/A08)."""

    patient_id: str
    issuer_of_patient_id: str = ""
    national_id: str | None = None
    identifiers: list[IdentifierIn] = []
    name: str = ""
    sex: str = ""
    birth_date: str = ""
    phone: str = ""
    # Optional; when given it must be the credential's own hospital.
    hospital_code: str | None = None


class LinkIn(BaseModel):
    hospital_code: str
    patient_id: str
    issuer_of_patient_id: str | None = None
    resident_id: int


class UnlinkIn(BaseModel):
    hospital_code: str
    patient_id: str
    issuer_of_patient_id: str | None = None


class MergeIn(BaseModel):
    source_resident_id: int
    target_resident_id: int


class FamilyIn(BaseModel):
    related_resident_id: int
    relation: Literal["parent", "guardian"]


def _hospital(view: HospitalView) -> dict[str, Any]:
    data = asdict(view)
    data["created_at"] = view.created_at.isoformat()
    data["ae_titles"] = [{"ae_title": p.ae_title, "host": p.host, "port": p.port,
                          "description": p.description} for p in view.ae_titles]
    return data


def _resident(view: ResidentView) -> dict[str, Any]:
    data = asdict(view)
    if data["national_id"] is None:
        del data["national_id"]
    return data


# --- hospitals (administrators) ----------------------------------------------------------


@router.post("/hospitals", status_code=201, summary="Register a hospital")
def register_hospital(request: Request, body: HospitalIn, actor: CurrentActor) -> dict[str, Any]:
    view = _services(request).hospitals.register(HospitalInput(**body.model_dump()),
                                                 actor=actor)
    return _hospital(view)


@router.get("/hospitals", summary="List hospitals")
def list_hospitals(request: Request, actor: CurrentActor,
                   active_only: bool = False) -> list[dict[str, Any]]:
    hospitals = _services(request).hospitals.list(active_only=active_only, actor=actor)
    return [_hospital(h) for h in hospitals]


@router.get("/hospitals/{code}", summary="One hospital with its AE titles")
def get_hospital(request: Request, code: str, actor: CurrentActor) -> dict[str, Any]:
    return _hospital(_services(request).hospitals.get(code, actor=actor))


@router.patch("/hospitals/{code}", summary="Change a hospital (active=false deactivates)")
def update_hospital(request: Request, code: str, body: HospitalPatch,
                    actor: CurrentActor) -> dict[str, Any]:
    changes = body.model_dump(exclude_none=True)
    return _hospital(_services(request).hospitals.update(code, changes, actor=actor))


@router.post("/hospitals/{code}/ae-titles", status_code=201,
             summary="Register a DICOM AE title of the hospital")
def add_ae_title(request: Request, code: str, body: AeTitleIn,
                 actor: CurrentActor) -> dict[str, Any]:
    peer = _services(request).hospitals.add_ae_title(code, body.ae_title, body.host, body.port,
                                                     body.description, actor=actor)
    return {"ae_title": peer.ae_title, "host": peer.host, "port": peer.port,
            "hospital_code": peer.hospital_code}


@router.delete("/hospitals/{code}/ae-titles/{ae_title}", status_code=204,
               summary="Remove one of the hospital's AE titles")
def remove_ae_title(request: Request, code: str, ae_title: str, actor: CurrentActor) -> None:
    _services(request).hospitals.remove_ae_title(code, ae_title, actor=actor)


@router.post("/hospitals/{code}/credentials", status_code=201,
             summary="Issue an API credential (the token is shown once)")
def issue_credential(request: Request, code: str, body: CredentialIn,
                     actor: CurrentActor) -> dict[str, Any]:
    issued = _services(request).credentials.issue(code, label=body.label, actor=actor)
    return {**_credential(issued.credential), "token": issued.token}


@router.get("/hospitals/{code}/credentials", summary="List the hospital's credentials")
def list_credentials(request: Request, code: str, actor: CurrentActor) -> list[dict[str, Any]]:
    return [_credential(c) for c in _services(request).credentials.list(code, actor=actor)]


@router.post("/credentials/{credential_id}/rotate", status_code=201,
             summary="Replace a credential by a new one (the old one is revoked)")
def rotate_credential(request: Request, credential_id: int, actor: CurrentActor) -> dict[str, Any]:
    issued = _services(request).credentials.rotate(credential_id, actor=actor)
    return {**_credential(issued.credential), "token": issued.token}


@router.post("/credentials/{credential_id}/revoke", summary="Revoke a credential")
def revoke_credential(request: Request, credential_id: int, actor: CurrentActor) -> dict[str, Any]:
    return _credential(_services(request).credentials.revoke(credential_id, actor=actor))


def _credential(view: Any) -> dict[str, Any]:
    return {"id": view.id, "hospital_code": view.hospital_code, "label": view.label,
            "token_prefix": view.token_prefix, "created_at": view.created_at.isoformat(),
            "revoked_at": view.revoked_at.isoformat() if view.revoked_at else None}


# --- registration feed (hospitals) -------------------------------------------------------


@router.post("/registrations", summary="Hospital feed: register or update a patient and "
             "link it to a resident (REST form of ADT A04/A08)")
def register_patient(request: Request, body: RegistrationIn,
                     actor: CurrentActor) -> dict[str, Any]:
    code = body.hospital_code or actor.hospital_code
    if not actor.can(Permission.MANAGE_PATIENT_INDEX) and actor.hospital_code \
            and code != actor.hospital_code:
        raise NotAuthorizedError(f"this credential belongs to hospital {actor.hospital_code}; "
                                 "it cannot register patients for another hospital")
    if not code:
        raise NotAuthorizedError("a hospital credential is required (Authorization: Bearer "
                                 "cfh_...), or hospital_code for the platform administrator")
    registration = Registration(
        patient_id=body.patient_id, issuer_of_patient_id=body.issuer_of_patient_id,
        national_id=body.national_id,
        identifiers=tuple((i.type, i.value, i.issuer) for i in body.identifiers),
        name=body.name, sex=body.sex, birth_date=body.birth_date, phone=body.phone)
    outcome = _services(request).residents.register_patient(code, registration, actor=actor)
    return {"hospital_code": code, "patient_id": body.patient_id,
            "state": outcome.state, "resident_id": outcome.resident_id,
            "changed": outcome.changed, "reason": outcome.reason}


# --- residents (administrators) ----------------------------------------------------------


@router.get("/residents/xref", summary="Cross-reference (IHE PIX): the resident of a local "
            "ID or national ID and all its linked local IDs")
def xref(request: Request, actor: CurrentActor, hospital_code: str | None = None,
         patient_id: str | None = None, issuer_of_patient_id: str | None = None,
         national_id: str | None = None, reveal: bool = False) -> dict[str, Any]:
    view = _services(request).residents.xref(
        hospital_code=hospital_code, patient_id=patient_id, issuer=issuer_of_patient_id,
        national_id=national_id, reveal=reveal, actor=actor)
    return _resident(view)


@router.get("/residents", summary="Search residents by name (characters or pinyin)")
def search_residents(request: Request, actor: CurrentActor,
                     name: Annotated[str, Query(min_length=1)]) -> list[dict[str, Any]]:
    return [_resident(r) for r in _services(request).residents.search(name, actor=actor)]


@router.get("/residents/conflicts", summary="Links flagged for review")
def list_conflicts(request: Request, actor: CurrentActor) -> list[dict[str, Any]]:
    return _services(request).residents.conflicts(actor=actor)


@router.get("/residents/unmatched", summary="Hospital records not linked to a resident yet")
def list_unmatched(request: Request, actor: CurrentActor) -> list[dict[str, Any]]:
    return _services(request).residents.unmatched(actor=actor)


@router.get("/residents/{resident_id}", summary="One resident (national ID masked unless "
            "reveal=true)")
def get_resident(request: Request, resident_id: int, actor: CurrentActor,
                 reveal: bool = False) -> dict[str, Any]:
    return _resident(_services(request).residents.get(resident_id, reveal=reveal, actor=actor))


@router.get("/residents/{resident_id}/fhir", summary="FHIR R4 Patient view of a resident")
def fhir_patient(request: Request, resident_id: int, actor: CurrentActor) -> dict[str, Any]:
    view = _services(request).residents.get(resident_id, actor=actor)
    identifiers: list[dict[str, Any]] = [
        {"system": f"urn:cloudfilm:hospital:{link.hospital_code}", "value": link.patient_id}
        for link in view.links if link.state == "linked"]
    if view.national_id_masked:
        identifiers.insert(0, {"system": "urn:oid:2.16.156.10011.1.1",  # CN resident ID
                               "value": view.national_id_masked})
    return {"resourceType": "Patient", "id": str(view.id), "active": view.status == "active",
            "identifier": identifiers, "name": [{"text": view.name}] if view.name else [],
            "gender": {"M": "male", "F": "female"}.get(view.sex, "unknown"),
            "birthDate": (f"{view.birth_date[:4]}-{view.birth_date[4:6]}-{view.birth_date[6:]}"
                          if len(view.birth_date) == 8 else None)}


@router.get("/residents/{resident_id}/events", summary="Identity events of a resident")
def resident_events(request: Request, resident_id: int,
                    actor: CurrentActor) -> list[dict[str, Any]]:
    return _services(request).residents.events(resident_id=resident_id, actor=actor)


@router.post("/links", summary="Link a hospital's patient record to a resident")
def link(request: Request, body: LinkIn, actor: CurrentActor) -> dict[str, Any]:
    outcome = _services(request).residents.link(
        body.hospital_code, body.patient_id, body.resident_id,
        issuer=body.issuer_of_patient_id, actor=actor)
    return asdict(outcome)


@router.post("/links/unlink", summary="Undo a link or dismiss a conflict")
def unlink(request: Request, body: UnlinkIn, actor: CurrentActor) -> dict[str, Any]:
    outcome = _services(request).residents.unlink(
        body.hospital_code, body.patient_id, issuer=body.issuer_of_patient_id, actor=actor)
    return asdict(outcome)


@router.post("/residents/merge", summary="Merge one resident into another (reversible)")
def merge(request: Request, body: MergeIn, actor: CurrentActor) -> dict[str, Any]:
    event = _services(request).residents.merge(body.source_resident_id,
                                               body.target_resident_id, actor=actor)
    return {"event_id": event}


@router.post("/residents/{resident_id}/unmerge", summary="Reverse the resident's merge")
def unmerge(request: Request, resident_id: int, actor: CurrentActor) -> dict[str, str]:
    _services(request).residents.unmerge(resident_id, actor=actor)
    return {"status": "unmerged"}


@router.post("/residents/{resident_id}/family", status_code=201,
             summary="Record a parent or guardian of the resident")
def add_family(request: Request, resident_id: int, body: FamilyIn,
               actor: CurrentActor) -> dict[str, str]:
    _services(request).residents.add_family_link(resident_id, body.related_resident_id,
                                                 body.relation, actor=actor)
    return {"status": "recorded"}
