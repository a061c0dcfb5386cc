"""REST API of de-identified research (``/api/v1/research``).

Projects are proposed (doctors, administrators), approved (platform administrators), counted
(``"< k"`` below the threshold until approved) and exported as a streamed zip of
de-identified DICOM with a CSV manifest and its SHA-256. Residents set their refusal of
research use at ``/research/refusal``.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import date
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from cloudfilm.interfaces.api.auth import CurrentActor
from cloudfilm.services.container import Services
from cloudfilm.services.research.service import Cohort, ProjectInput

PREFIX = "/api/v1"
router = APIRouter()


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


class CohortBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    modalities: list[str] = Field(default_factory=list, max_length=20)
    body_parts: list[str] = Field(default_factory=list, max_length=20)
    date_from: str = Field(default="", pattern=r"^(\d{8})?$")
    date_to: str = Field(default="", pattern=r"^(\d{8})?$")
    age_min: int | None = Field(default=None, ge=0, le=150)
    age_max: int | None = Field(default=None, ge=0, le=150)
    sex: str = Field(default="", pattern=r"^[MFO]?$")
    hospital_levels: list[str] = Field(default_factory=list, max_length=5)
    report_terms: list[str] = Field(default_factory=list, max_length=10)


class ProjectBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=256)
    principal_investigator: str = Field(min_length=1, max_length=128)
    institution: str = Field(min_length=1, max_length=256)
    ethics_reference: str = Field(min_length=1, max_length=128)
    ethics_expires: date
    options: dict[str, Any] = Field(default_factory=dict)
    cohort: CohortBody = Field(default_factory=CohortBody)


class RefusalBody(BaseModel):
    refused: bool
    resident_id: int | None = None


@router.post("/research/projects", status_code=201, summary="Propose a research project")
def propose(request: Request, body: ProjectBody, actor: CurrentActor) -> dict[str, Any]:
    c = body.cohort
    cohort = Cohort(modalities=tuple(c.modalities), body_parts=tuple(c.body_parts),
                    date_from=c.date_from, date_to=c.date_to, age_min=c.age_min,
                    age_max=c.age_max, sex=c.sex, hospital_levels=tuple(c.hospital_levels),
                    report_terms=tuple(c.report_terms))
    view = _services(request).research.propose(actor, ProjectInput(
        title=body.title, principal_investigator=body.principal_investigator,
        institution=body.institution, ethics_reference=body.ethics_reference,
        ethics_expires=body.ethics_expires, options=body.options, cohort=cohort))
    return asdict(view)


@router.get("/research/projects", summary="Research projects")
def projects(request: Request, actor: CurrentActor) -> list[dict[str, Any]]:
    return [asdict(v) for v in _services(request).research.projects(actor)]


@router.get("/research/projects/{project_id}", summary="One research project")
def project(request: Request, project_id: str, actor: CurrentActor) -> dict[str, Any]:
    return asdict(_services(request).research.get(actor, project_id))


@router.post("/research/projects/{project_id}/approve", summary="Approve (administrators)")
def approve(request: Request, project_id: str, actor: CurrentActor) -> dict[str, Any]:
    return asdict(_services(request).research.approve(actor, project_id))


@router.get("/research/projects/{project_id}/counts",
            summary="Cohort counts (\"< k\" below the threshold until approved)")
def counts(request: Request, project_id: str, actor: CurrentActor) -> dict[str, Any]:
    return asdict(_services(request).research.counts(actor, project_id))


@router.get("/research/projects/{project_id}/export",
            summary="Streamed zip of de-identified DICOM, CSV manifest and its SHA-256")
def export(request: Request, project_id: str, actor: CurrentActor,
           resume_after: str = "") -> StreamingResponse:
    """``resume_after``: the SOP Instance UID of the last object received, to go on after an
    interruption."""
    stream = _services(request).research.export(actor, project_id,
                                                 resume_after=resume_after[:64])
    return StreamingResponse(stream, media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="research-{project_id}.zip"'})


@router.get("/research/refusal", summary="The resident's research choice")
def get_refusal(request: Request, actor: CurrentActor,
                resident_id: int | None = None) -> dict[str, Any]:
    return {"refused": _services(request).research.refusal(actor, resident_id)}


@router.put("/research/refusal", summary="Refuse (or allow again) research use")
def set_refusal(request: Request, body: RefusalBody, actor: CurrentActor) -> dict[str, Any]:
    refused = _services(request).research.set_refusal(actor, body.refused, body.resident_id)
    return {"refused": refused}
