"""REST API of retention and legal holds (``/api/v1/lifecycle``), for administrators.

Rules, the review list (studies past retention; nothing is deleted by reading it), the two
steps of a deletion (propose: the report of what would be deleted; execute: by another
administrator, each study checked again), and legal holds. Every call is audited by the
service (services/lifecycle/service.py).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from cloudfilm.interfaces.api.auth import CurrentActor
from cloudfilm.services.lifecycle.service import LifecycleService, RuleInput

PREFIX = "/api/v1/lifecycle"
router = APIRouter()


def _life(request: Request) -> LifecycleService:
    service = request.app.state.services.lifecycle
    assert service is not None
    return service  # type: ignore[no-any-return]


class RuleBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    years: int = Field(ge=1, le=200)
    modality: str = Field(default="", max_length=16)
    hospital_code: str = Field(default="", max_length=64)
    study_kind: str = Field(default="", max_length=64)
    minor_age: int | None = Field(default=None, ge=1, le=150)
    minor_years: int = Field(default=0, ge=0, le=100)


class ProposeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)
    studies: list[str] | None = Field(default=None, max_length=100_000)


class HoldBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)
    study_instance_uid: str = Field(default="", max_length=64)
    hospital_code: str = Field(default="", max_length=64)
    patient_id: str = Field(default="", max_length=64)


class ReleaseBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=2000)


@router.get("/rules", summary="Retention rules")
def rules(request: Request, actor: CurrentActor) -> list[dict[str, Any]]:
    return [asdict(r) for r in _life(request).rules(actor)]


@router.post("/rules", status_code=201, summary="Add a retention rule")
def add_rule(request: Request, body: RuleBody, actor: CurrentActor) -> dict[str, Any]:
    return asdict(_life(request).add_rule(actor, RuleInput(**body.model_dump())))


@router.post("/rules/{rule_id}/retire", summary="Stop applying a retention rule")
def retire_rule(request: Request, rule_id: int, actor: CurrentActor) -> dict[str, Any]:
    return asdict(_life(request).retire_rule(actor, rule_id))


@router.get("/review", summary="Studies past retention (the review list)")
def review(request: Request, actor: CurrentActor, limit: int = 1000) -> list[dict[str, Any]]:
    return [asdict(d) for d in _life(request).review(actor, limit=min(max(limit, 1), 10_000))]


@router.get("/studies/{study_uid}", summary="Retention end of one study")
def study(request: Request, study_uid: str, actor: CurrentActor) -> dict[str, Any]:
    end, rule, held = _life(request).retention_of(actor, study_uid)
    return {"study_instance_uid": study_uid, "retention_end": end, "rule": rule, "held": held}


@router.get("/deletions", summary="Deletion requests")
def deletions(request: Request, actor: CurrentActor) -> list[dict[str, Any]]:
    return [asdict(v) for v in _life(request).deletions(actor)]


@router.post("/deletions", status_code=201,
             summary="Step 1: propose deleting studies past retention")
def propose(request: Request, body: ProposeBody, actor: CurrentActor) -> dict[str, Any]:
    return asdict(_life(request).propose_deletion(actor, reason=body.reason,
                                                  study_uids=body.studies))


@router.post("/deletions/{request_id}/execute",
             summary="Step 2: execute a proposed deletion (another administrator)")
def execute(request: Request, request_id: int, actor: CurrentActor) -> dict[str, Any]:
    return asdict(_life(request).execute_deletion(actor, request_id))


@router.post("/deletions/{request_id}/cancel", summary="Cancel a proposed deletion")
def cancel(request: Request, request_id: int, actor: CurrentActor) -> dict[str, Any]:
    return asdict(_life(request).cancel_deletion(actor, request_id))


@router.get("/holds", summary="Legal holds")
def holds(request: Request, actor: CurrentActor, all: bool = False) -> list[dict[str, Any]]:
    return [asdict(h) for h in _life(request).holds(actor, active_only=not all)]


@router.post("/holds", status_code=201, summary="Place a legal hold on a study or patient")
def place(request: Request, body: HoldBody, actor: CurrentActor) -> dict[str, Any]:
    return asdict(_life(request).place_hold(
        actor, reason=body.reason, study_uid=body.study_instance_uid,
        hospital_code=body.hospital_code, patient_id=body.patient_id))


@router.post("/holds/{hold_id}/release", summary="Release a legal hold")
def release(request: Request, hold_id: int, body: ReleaseBody,
            actor: CurrentActor) -> dict[str, Any]:
    return asdict(_life(request).release_hold(actor, hold_id, reason=body.reason))
