"""REST API of the hospitals' edge gateways (``/api/v1/gateway``): heartbeats in, a list out.

``POST /gateway/heartbeat`` with the hospital's credential records "alive" for that hospital
(never one named in the body); ``GET /gateway/heartbeats`` lists them for administrators.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from cloudfilm.interfaces.api.auth import CurrentActor
from cloudfilm.services.container import Services
from cloudfilm.services.network.gateways import Heartbeat

PREFIX = "/api/v1"
router = APIRouter()


def _services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


class HeartbeatBody(BaseModel):
    model_config = ConfigDict(extra="ignore")  # newer gateways may send more figures

    ae_title: str = Field(default="GATEWAY", max_length=64)
    queued: int = Field(default=0, ge=0)
    refused: int = Field(default=0, ge=0)
    oldest_unsent_seconds: float | None = Field(default=None, ge=0)
    bytes_queued: int = Field(default=0, ge=0)
    quota_bytes: int = Field(default=0, ge=0)


@router.post("/gateway/heartbeat", summary="A hospital gateway says it is alive")
def heartbeat(request: Request, body: HeartbeatBody, actor: CurrentActor) -> dict[str, Any]:
    oldest = body.oldest_unsent_seconds
    view = _services(request).gateways.heartbeat(actor, Heartbeat(
        ae_title=body.ae_title, queued=body.queued, refused=body.refused,
        oldest_unsent_seconds=None if oldest is None else int(oldest),
        bytes_queued=body.bytes_queued, quota_bytes=body.quota_bytes))
    return asdict(view)


@router.get("/gateway/heartbeats", summary="The hospitals' gateways, longest silent first")
def heartbeats(request: Request, actor: CurrentActor) -> list[dict[str, Any]]:
    return [asdict(v) for v in _services(request).gateways.list(actor)]
