"""Queries on ``dicom_peer``. Like every repository: no commits, the service owns the unit."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db.models import DicomPeer


def add(session: Session, values: dict[str, Any]) -> DicomPeer:
    peer = DicomPeer(**values)
    session.add(peer)
    session.flush()
    return peer


def by_ae_title(session: Session, ae_title: str) -> DicomPeer | None:
    return session.scalars(select(DicomPeer).where(DicomPeer.ae_title == ae_title)).first()


def all_peers(session: Session) -> Sequence[DicomPeer]:
    return session.scalars(select(DicomPeer).order_by(DicomPeer.ae_title)).all()


def remove(session: Session, ae_title: str) -> int:
    result = session.execute(delete(DicomPeer).where(DicomPeer.ae_title == ae_title))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
