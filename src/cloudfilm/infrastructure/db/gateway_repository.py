"""Queries on ``gateway_heartbeat``. No commits: the service owns the unit of work."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db.models import GatewayHeartbeat, Hospital


def record(session: Session, hospital_id: int, ae_title: str, at: datetime,
           figures: dict[str, Any]) -> GatewayHeartbeat:
    """Insert or update the hospital's gateway row (one per hospital and AE title)."""
    row = session.scalars(select(GatewayHeartbeat).where(
        GatewayHeartbeat.hospital_id == hospital_id,
        GatewayHeartbeat.ae_title == ae_title).with_for_update()).first()
    if row is None:
        row = GatewayHeartbeat(hospital_id=hospital_id, ae_title=ae_title, first_seen_at=at,
                               last_seen_at=at, **figures)
        session.add(row)
    else:
        row.last_seen_at = at
        for key, value in figures.items():
            setattr(row, key, value)
    session.flush()
    return row


def all_with_hospital(session: Session) -> Sequence[tuple[GatewayHeartbeat, str]]:
    rows = session.execute(
        select(GatewayHeartbeat, Hospital.code)
        .join(Hospital, Hospital.id == GatewayHeartbeat.hospital_id)
        .order_by(GatewayHeartbeat.last_seen_at)).all()
    return [(beat, str(code)) for beat, code in rows]
