"""Registry of hospitals' DICOM application entities (AE title, host, port, hospital).

The DIMSE door accepts an association only from a registered calling AE title, records
every object it receives for the peer's hospital, and sends C-MOVE sub-operations to a
registered destination's host and port. Changes commit when the call returns; the
listener reads the registry per association, so a peer added by ``cloudfilm peers add`` in
another process is accepted at its next association.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from cloudfilm.infrastructure.db import peer_repository as repo
from cloudfilm.infrastructure.db.models import DicomPeer
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError
from cloudfilm.services.errors import (
    CloudfilmError,
    NotFoundError,
    ResourceUnavailableError,
)

# PS3.5 Table 6.2-1, AE: 16 characters of the default repertoire, no backslash or controls.
_AE_TITLE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")


class InvalidPeerError(CloudfilmError):
    """A peer's AE title, host or port is not acceptable."""

    code = "invalid-peer"


class PeerExistsError(CloudfilmError):
    code = "peer-exists"


@dataclass(frozen=True, slots=True)
class Peer:
    ae_title: str
    host: str
    port: int
    hospital_code: str
    description: str
    created_at: datetime


class PeerService:
    def __init__(self, db: Database) -> None:
        self._db = db

    def register(self, ae_title: str, host: str, port: int, *, hospital_code: str,
                 description: str = "") -> Peer:
        """Register a peer; committed when this returns.

        Raises
        ------
        InvalidPeerError
            The AE title is not 1-16 default-repertoire characters, the host is empty, the
            port is not 1-65535 or the hospital code is empty.
        PeerExistsError
            The AE title is already registered (remove it first to change it).
        ResourceUnavailableError
        """
        title = normalise_ae_title(ae_title)
        host = host.strip()
        if not host or len(host) > 255:
            raise InvalidPeerError("the peer's host must be a host name or IP address")
        if not 1 <= int(port) <= 65535:
            raise InvalidPeerError(f"port {port} is not a TCP port (1-65535)")
        code = hospital_code.strip()
        if not code or len(code) > 64:
            raise InvalidPeerError("the peer needs a hospital code of 1 to 64 characters")
        values = {"ae_title": title, "host": host, "port": int(port), "hospital_code": code,
                  "description": description[:256], "created_at": datetime.now(UTC)}
        try:
            with self._db.write() as session:
                if repo.by_ae_title(session, title) is not None:
                    raise PeerExistsError(f"AE title {title!r} is already registered; "
                                          f"remove it first to change its address")
                row = repo.add(session, values)
                peer = _peer(row)
        except IntegrityError:
            raise PeerExistsError(f"AE title {title!r} is already registered") from None
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        return peer

    def list(self) -> list[Peer]:
        try:
            with self._db.read() as session:
                return [_peer(row) for row in repo.all_peers(session)]
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc

    def remove(self, ae_title: str) -> None:
        """Remove a peer; committed when this returns.

        Raises
        ------
        NotFoundError
            No peer has this AE title.
        """
        title = normalise_ae_title(ae_title)
        try:
            with self._db.write() as session:
                removed = repo.remove(session, title)
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        if not removed:
            raise NotFoundError(f"no DICOM peer has the AE title {title!r}")

    def lookup(self, ae_title: str) -> Peer | None:
        """The registered peer with this AE title, or None.

        Raises
        ------
        ResourceUnavailableError
            The registry cannot be read (the caller must not treat this as "unknown").
        """
        title = ae_title.strip()
        try:
            with self._db.read() as session:
                row = repo.by_ae_title(session, title)
                return _peer(row) if row is not None else None
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc


def normalise_ae_title(ae_title: str) -> str:
    """Strip the padding spaces an AE title may carry; raise InvalidPeerError if invalid.

    AE titles compare case-sensitively (PS3.5 6.2), so the case is kept.
    """
    title = ae_title.strip()
    if not _AE_TITLE.match(title):
        raise InvalidPeerError(
            f"AE title {ae_title!r} is not valid: 1 to 16 printable ASCII characters, no "
            "backslash (PS3.5 Table 6.2-1)"
        )
    return title


def _peer(row: DicomPeer) -> Peer:
    return Peer(row.ae_title, row.host, row.port, row.hospital_code, row.description,
                row.created_at)
