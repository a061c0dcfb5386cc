"""Heartbeats of the hospitals' edge gateways (``cloudfilm gateway``): last seen and backlog.

A gateway posts its queue figures every minute with its hospital's credential; the row is
keyed by the credential's hospital (never one named in the request) and the gateway's AE
title. Administrators list them to see which gateways went silent. Committed when
:meth:`GatewayService.heartbeat` returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.exc import IntegrityError

from cloudfilm.infrastructure.db import gateway_repository as repo
from cloudfilm.infrastructure.db.models import GatewayHeartbeat
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError
from cloudfilm.services.errors import (
    InvalidQueryError,
    NotAuthorizedError,
    ResourceUnavailableError,
)
from cloudfilm.services.kernel.actor import Actor, Permission
from cloudfilm.services.network.peers import InvalidPeerError, normalise_ae_title

# A gateway beats every 60 s by default; three missed beats mean "silent".
SILENT_AFTER = timedelta(minutes=3)
_MAX = 2**62


@dataclass(frozen=True, slots=True)
class Heartbeat:
    ae_title: str
    queued: int = 0
    refused: int = 0
    oldest_unsent_seconds: int | None = None
    bytes_queued: int = 0
    quota_bytes: int = 0


@dataclass(frozen=True, slots=True)
class GatewayView:
    hospital_code: str
    ae_title: str
    first_seen_at: datetime
    last_seen_at: datetime
    silent: bool
    queued: int
    refused: int
    oldest_unsent_seconds: int | None
    bytes_queued: int
    quota_bytes: int


class GatewayService:
    def __init__(self, db: Database) -> None:
        self._db = db

    def heartbeat(self, actor: Actor, beat: Heartbeat, *, _retry: bool = True) -> GatewayView:
        """Record a gateway's heartbeat for the actor's hospital; committed on return.

        Raises
        ------
        NotAuthorizedError
            The caller is not a hospital system (a gateway uses its hospital's credential).
        InvalidQueryError
            The AE title or a figure is out of range.
        """
        if not actor.can(Permission.SEND_HEARTBEAT) or actor.hospital_id is None:
            raise NotAuthorizedError("only a hospital's gateway, with the hospital's "
                                     "credential (cfh_...), sends heartbeats")
        try:
            title = normalise_ae_title(beat.ae_title)
        except InvalidPeerError as exc:
            raise InvalidQueryError(exc.message) from exc
        figures = {"queued": beat.queued, "refused": beat.refused,
                   "oldest_unsent_seconds": beat.oldest_unsent_seconds,
                   "bytes_queued": beat.bytes_queued, "quota_bytes": beat.quota_bytes}
        for name, value in figures.items():
            if value is not None and not 0 <= value < _MAX:
                raise InvalidQueryError(f"{name} must be a non-negative integer")
        now = datetime.now(UTC)
        try:
            with self._db.write() as session:
                row = repo.record(session, actor.hospital_id, title, now, figures)
                view = _view(row, actor.hospital_code or actor.subject, now)
        except IntegrityError:
            if not _retry:
                raise
            # Two first beats at once: the other one created the row; update it instead.
            return self.heartbeat(actor, beat, _retry=False)
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        return view

    def list(self, actor: Actor) -> list[GatewayView]:
        """Every gateway with its last heartbeat, longest silent first (administrators)."""
        if not actor.can(Permission.READ_GATEWAYS):
            raise NotAuthorizedError("only administrators list the hospitals' gateways")
        now = datetime.now(UTC)
        try:
            with self._db.read() as session:
                return [_view(row, code, now) for row, code in repo.all_with_hospital(session)]
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc


def _view(row: GatewayHeartbeat, code: str, now: datetime) -> GatewayView:
    last = row.last_seen_at if row.last_seen_at.tzinfo else row.last_seen_at.replace(tzinfo=UTC)
    first = (row.first_seen_at if row.first_seen_at.tzinfo
             else row.first_seen_at.replace(tzinfo=UTC))
    return GatewayView(hospital_code=code, ae_title=row.ae_title, first_seen_at=first,
                       last_seen_at=last, silent=now - last > SILENT_AFTER, queued=row.queued,
                       refused=row.refused, oldest_unsent_seconds=row.oldest_unsent_seconds,
                       bytes_queued=row.bytes_queued, quota_bytes=row.quota_bytes)
