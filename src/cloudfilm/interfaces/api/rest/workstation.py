"""REST API of the doctor's workstation (``/api/v1/workstation``): a hospital's HIS mints a
single-use launch token for one of its doctors and patients, and puts it in a button
(``/workstation/launch?token=...``): opened within 5 minutes, once, it signs that doctor in
where nobody is signed in and opens the patient or study. The service decides who may (the
hospital's own credential, its own patient and doctor)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

from cloudfilm.interfaces.api.auth import CurrentActor
from cloudfilm.services.access.launch import LaunchRequest
from cloudfilm.services.container import Services

PREFIX = "/api/v1/workstation"
router = APIRouter()


class LaunchIn(BaseModel):
    """Whom and what the launch opens."""

    patient: str = Field(max_length=64, description="The hospital's patient ID, or the "
                         "patient's national ID (linked to a record of this hospital)")
    doctor: str = Field(max_length=64, description="User name of the doctor who opens it")
    study: str = Field("", max_length=64, description="StudyInstanceUID of this hospital")
    accession: str = Field("", max_length=64, description="Accession number of this hospital")
    item: str = Field("", max_length=32, description="Planned exam (recognition item code): "
                      "the workstation runs the duplicate-exam check")


class LaunchOut(BaseModel):
    token: str
    expires_at: datetime
    url: str


@router.post("/launch-tokens", response_model=LaunchOut, status_code=201,
             summary="A single-use, short-lived launch of the workstation (HIS button)")
def mint(body: LaunchIn, request: Request, actor: CurrentActor) -> Any:
    services: Services = request.app.state.services
    minted = services.launches.mint(actor, LaunchRequest(
        patient=body.patient, doctor=body.doctor, study_uid=body.study,
        accession=body.accession, item_code=body.item))
    return {"token": minted.token, "expires_at": minted.expires_at,
            "url": f"/workstation/launch?token={minted.token}"}
