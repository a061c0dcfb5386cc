"""REST API of AI assistance (``/api/v1/ai``): algorithms (register, approve, suspend,
enable per hospital), an engine's findings for a workitem it holds, and the AI results of
a study for doctors (under the study's own access policy). The worklist itself is UPS-RS
under ``/dicomweb/workitems``."""

from __future__ import annotations

import secrets
from dataclasses import asdict
from typing import Any, Literal

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from cloudfilm.infrastructure.ai.plugin import Finding
from cloudfilm.interfaces.api.auth import CurrentActor
from cloudfilm.interfaces.api.errors import HttpProblem
from cloudfilm.services.ai.registry import AlgorithmInput
from cloudfilm.services.ai.service import AiService

PREFIX = "/api/v1"
router = APIRouter()


def _ai(request: Request) -> AiService:
    ai = request.app.state.services.ai
    if ai is None:
        raise HttpProblem(404, "AI assistance is not enabled", code="not-found")
    return ai  # type: ignore[no-any-return]


class AlgorithmBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    version: str = Field(min_length=1, max_length=32)
    intended_use: str = Field(min_length=1, max_length=4000)
    kind: Literal["plugin", "external"]
    vendor: str = Field(default="", max_length=128)
    plugin: str = Field(default="", max_length=256)
    modalities: list[str] = Field(default_factory=list, max_length=20)
    body_parts: list[str] = Field(default_factory=list, max_length=20)
    input: Literal["original", "deidentified"] = "original"


class EnableBody(BaseModel):
    hospital: str = Field(min_length=1, max_length=64)
    enabled: bool = True


class FindingBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=32)
    centre_mm: tuple[float, float, float]
    diameter_mm: float = Field(gt=0, le=500)
    score: float = Field(ge=0, le=1)
    sop_instance_uid: str = Field(min_length=1, max_length=64)
    row: float = Field(ge=0)
    column: float = Field(ge=0)


class FindingsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    transaction_uid: str = Field(min_length=1, max_length=64)
    findings: list[FindingBody] = Field(default_factory=list, max_length=500)


class ReviewBody(BaseModel):
    confirmed: bool


@router.post("/ai/algorithms", status_code=201, summary="Register an AI algorithm")
def register(request: Request, body: AlgorithmBody, actor: CurrentActor) -> dict[str, Any]:
    view, token = _ai(request).registry.register(actor, AlgorithmInput(
        name=body.name, version=body.version, intended_use=body.intended_use,
        kind=body.kind, vendor=body.vendor, plugin=body.plugin,
        modalities=tuple(body.modalities), body_parts=tuple(body.body_parts),
        input=body.input))
    out = asdict(view)
    if token:
        out["credential"] = token  # shown once
    return out


@router.get("/ai/algorithms", summary="AI algorithms and the hospitals that run them")
def algorithms(request: Request, actor: CurrentActor) -> list[dict[str, Any]]:
    return [asdict(v) for v in _ai(request).registry.list(actor)]


@router.post("/ai/algorithms/{algorithm_id}/approve", summary="Approve (another admin)")
def approve(request: Request, algorithm_id: str, actor: CurrentActor) -> dict[str, Any]:
    return asdict(_ai(request).registry.approve(actor, algorithm_id))


@router.post("/ai/algorithms/{algorithm_id}/suspend", summary="Suspend an algorithm")
def suspend(request: Request, algorithm_id: str, actor: CurrentActor) -> dict[str, Any]:
    return asdict(_ai(request).registry.suspend(actor, algorithm_id))


@router.post("/ai/algorithms/{algorithm_id}/hospitals",
             summary="Enable or disable an algorithm for a hospital")
def enable(request: Request, algorithm_id: str, body: EnableBody,
           actor: CurrentActor) -> dict[str, Any]:
    return asdict(_ai(request).registry.enable(actor, algorithm_id, body.hospital,
                                               body.enabled))


@router.post("/ai/workitems/{uid}/findings", status_code=201,
             summary="An engine's findings for a workitem it holds (stored as a DICOM SR)")
async def findings(request: Request, uid: str, body: FindingsBody,
                   actor: CurrentActor) -> dict[str, Any]:
    items = [Finding(label=f.label, centre_mm=f.centre_mm, diameter_mm=f.diameter_mm,
                     score=f.score, sop_instance_uid=f.sop_instance_uid, row=f.row,
                     column=f.column) for f in body.findings]
    view = await run_in_threadpool(_ai(request).work.submit_findings, actor, uid,
                                   body.transaction_uid, items)
    return asdict(view)


@router.get("/ai/workitems/{uid}/instances",
            summary="The de-identified images of a workitem's study (multipart/related), for "
                    "an engine approved for de-identified input")
async def deidentified_instances(request: Request, uid: str, transaction_uid: str,
                                 actor: CurrentActor) -> Response:
    parts = await run_in_threadpool(_ai(request).work.deidentified_instances, actor, uid,
                                    transaction_uid[:64])
    boundary = secrets.token_hex(16)
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
                    + part + b"\r\n" for part in parts) + b"--" + boundary.encode() + b"--"
    return Response(body, media_type=f'multipart/related; type="application/dicom"; '
                                     f"boundary={boundary}")


@router.get("/ai/studies/{study_uid}/results",
            summary="AI results of a study (AI-generated, for doctors to confirm)")
def results(request: Request, study_uid: str, actor: CurrentActor) -> list[dict[str, Any]]:
    return [asdict(r) for r in _ai(request).work.results(actor, study_uid)]


@router.post("/ai/results/{sop_uid}/review", summary="Confirm or reject an AI result")
def review(request: Request, sop_uid: str, body: ReviewBody,
           actor: CurrentActor) -> dict[str, Any]:
    return {"review": _ai(request).work.review(actor, sop_uid, body.confirmed)}
