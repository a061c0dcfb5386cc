"""The hospital registry: code, name, level and grade, region, active flag, where its
headers carry the national ID, and its DICOM AE titles (the ``dicom_peer`` rows with its
code). Every change commits when the call returns and is recorded as an identity event.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from cloudfilm.infrastructure.db import identity_repository as repo
from cloudfilm.infrastructure.db.models import Hospital
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError
from cloudfilm.services.access.actor import LOCAL_OPERATOR, Actor
from cloudfilm.services.errors import (
    AlreadyExistsError,
    InvalidInputError,
    NotFoundError,
    ResourceUnavailableError,
)
from cloudfilm.services.identity.roles import actor_label, require_hospital_admin
from cloudfilm.services.network.peers import Peer, PeerService, normalise_ae_title

_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
LEVELS = ("tertiary", "secondary", "primary")
# 甲/乙/丙 as A/B/C; tertiary hospitals may also be "special" (特等).
GRADES = ("", "A", "B", "C", "special")
ID_SOURCES = ("none", "patient_id", "other_patient_ids", "tag")
_TAG = re.compile(r"^[0-9A-F]{8}$")


@dataclass(frozen=True, slots=True)
class HospitalInput:
    """What an administrator gives to register or update a hospital."""

    code: str
    name: str
    level: str = ""
    grade: str = ""
    city: str = ""
    county: str = ""
    active: bool = True
    national_id_source: str = "none"
    national_id_issuer: str = ""
    national_id_tag: str = ""
    # Publicly owned (the commission's coverage figure), and who its alerts reach.
    public: bool = True
    contact_phone: str = ""
    alert_webhook: str = ""


@dataclass(frozen=True, slots=True)
class HospitalView:
    id: int
    code: str
    name: str
    level: str
    grade: str
    city: str
    county: str
    active: bool
    national_id_source: str
    national_id_issuer: str
    national_id_tag: str
    created_at: datetime
    ae_titles: tuple[Peer, ...] = field(default=())
    public: bool = True
    contact_phone: str = ""
    alert_webhook: str = ""


_UPDATABLE = frozenset(HospitalInput.__dataclass_fields__) - {"code"}


class HospitalService:
    def __init__(self, db: Database, peers: PeerService, *,
                 credentials_changed: Callable[[], None] = lambda: None) -> None:
        self._db = db
        self._peers = peers
        # Forgets this process's verified credentials (CredentialCache.forget_all): a
        # deactivated hospital's credentials stop working at once here.
        self._credentials_changed = credentials_changed

    def register(self, data: HospitalInput, *, actor: Actor = LOCAL_OPERATOR) -> HospitalView:
        """Register a hospital; committed when this returns.

        A code that ingest created on demand (a DIMSE peer's or ``LOCAL``, with no level
        yet) is completed instead of refused.

        Raises
        ------
        InvalidInputError
            A field is malformed (the message names it).
        AlreadyExistsError
            The code is registered already (use :meth:`update`).
        """
        require_hospital_admin(actor)
        values = _validated(_asdict(data))
        now = datetime.now(UTC)
        try:
            with self._db.write() as session:
                row = repo.hospital_by_code(session, values["code"])
                if row is not None and row.level:
                    raise AlreadyExistsError(
                        f"hospital code {values['code']!r} is already registered; use "
                        "`cloudfilm hospitals update` (PATCH /api/v1/hospitals/{code})")
                if row is None:
                    row = repo.add_hospital(session, {**values, "created_at": now})
                else:
                    for key, value in values.items():
                        setattr(row, key, value)
                    session.flush()
                repo.add_event(session, at=now, action="hospital.register",
                               actor=actor_label(actor), hospital_id=row.id,
                               detail={"code": row.code})
                view = _view(row, ())
        except IntegrityError:
            raise AlreadyExistsError(f"hospital code {values['code']!r} is already "
                                     "registered") from None
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        return view

    def update(self, code: str, changes: dict[str, Any], *,
               actor: Actor = LOCAL_OPERATOR) -> HospitalView:
        """Change some fields of a registered hospital (``active=False`` deactivates it:
        its credentials stop working); committed when this returns.

        Raises
        ------
        NotFoundError, InvalidInputError
        """
        require_hospital_admin(actor)
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise InvalidInputError(f"unknown hospital field(s): {', '.join(sorted(unknown))}; "
                                    f"accepted: {', '.join(sorted(_UPDATABLE))}")
        now = datetime.now(UTC)
        try:
            with self._db.write() as session:
                row = _require(session, code)
                merged = {k: getattr(row, k) for k in HospitalInput.__dataclass_fields__}
                merged.update({k: v for k, v in changes.items() if v is not None})
                values = _validated(merged)
                for key, value in values.items():
                    setattr(row, key, value)
                session.flush()
                repo.add_event(session, at=now, action="hospital.update",
                               actor=actor_label(actor), hospital_id=row.id,
                               detail={"fields": sorted(changes)})
                peers = repo.peers_of(session, [row.code]).get(row.code, [])
                view = _view(row, tuple(_peer(p) for p in peers))
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        finally:
            if "active" in changes:
                self._credentials_changed()
        return view

    def get(self, code: str, *, actor: Actor = LOCAL_OPERATOR) -> HospitalView:
        """Raises NotFoundError for an unknown code."""
        require_hospital_admin(actor)
        try:
            with self._db.read() as session:
                row = _require(session, code)
                peers = repo.peers_of(session, [row.code]).get(row.code, [])
                return _view(row, tuple(_peer(p) for p in peers))
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc

    def list(self, *, active_only: bool = False,
             actor: Actor = LOCAL_OPERATOR) -> list[HospitalView]:
        require_hospital_admin(actor)
        try:
            with self._db.read() as session:
                rows = repo.all_hospitals(session, active_only=active_only)
                peers = repo.peers_of(session, [r.code for r in rows])
                return [_view(r, tuple(_peer(p) for p in peers.get(r.code, []))) for r in rows]
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc

    def add_ae_title(self, code: str, ae_title: str, host: str, port: int,
                     description: str = "", *, actor: Actor = LOCAL_OPERATOR) -> Peer:
        """Register a DICOM AE title for a registered hospital (a ``dicom_peer`` row).

        Raises
        ------
        NotFoundError
            The hospital code is unknown: register the hospital first.
        InvalidPeerError, PeerExistsError
            From the peer registry.
        """
        self.get(code, actor=actor)
        return self._peers.register(ae_title, host, port, hospital_code=code,
                                    description=description)

    def remove_ae_title(self, code: str, ae_title: str, *,
                        actor: Actor = LOCAL_OPERATOR) -> None:
        """Remove one of the hospital's AE titles; refuses another hospital's."""
        require_hospital_admin(actor)
        title = normalise_ae_title(ae_title)
        peer = self._peers.lookup(title)
        if peer is None or peer.hospital_code != code:
            raise NotFoundError(f"hospital {code!r} has no AE title {title!r}")
        self._peers.remove(title)


def _asdict(data: HospitalInput) -> dict[str, Any]:
    return {k: getattr(data, k) for k in HospitalInput.__dataclass_fields__}


def _validated(raw: dict[str, Any]) -> dict[str, Any]:
    values = {k: raw[k] for k in HospitalInput.__dataclass_fields__}
    code = str(values["code"] or "").strip()
    if not _CODE.match(code):
        raise InvalidInputError(f"code {code[:80]!r} is not valid: 1-64 letters, digits, "
                                "'.', '_' or '-', starting with a letter or digit")
    values["code"] = code
    name = str(values["name"] or "").strip()
    if not name or len(name) > 256:
        raise InvalidInputError("name is required (1-256 characters)")
    values["name"] = name
    level = str(values["level"] or "").strip().lower()
    if level not in LEVELS:
        raise InvalidInputError(f"level {level!r} is not one of {', '.join(LEVELS)}")
    values["level"] = level
    grade = str(values["grade"] or "").strip()
    grade = grade if grade == "special" else grade.upper()
    if grade not in GRADES:
        raise InvalidInputError(f"grade {grade!r} is not one of A, B, C, special or empty")
    values["grade"] = grade
    for key, limit in (("city", 64), ("county", 64)):
        values[key] = str(values[key] or "").strip()
        if len(values[key]) > limit:
            raise InvalidInputError(f"{key} has more than {limit} characters")
    values["active"] = bool(values["active"])
    source = str(values["national_id_source"] or "none").strip()
    if source not in ID_SOURCES:
        raise InvalidInputError(f"national_id_source {source!r} is not one of "
                                f"{', '.join(ID_SOURCES)}")
    values["national_id_source"] = source
    values["national_id_issuer"] = str(values["national_id_issuer"] or "").strip()[:64]
    tag = str(values["national_id_tag"] or "").strip().upper().replace(",", "")
    tag = tag.strip("()")
    if source == "tag" and not _TAG.match(tag):
        raise InvalidInputError("national_id_tag must be a tag as 8 hex digits (GGGGEEEE, e.g. "
                                "00101002) when national_id_source is 'tag'")
    values["national_id_tag"] = tag if _TAG.match(tag) else ""
    values["public"] = bool(values["public"])
    values["contact_phone"] = str(values["contact_phone"] or "").strip()[:32]
    hook = str(values["alert_webhook"] or "").strip()
    if (hook and not hook.startswith(("http://", "https://"))) or len(hook) > 512:
        raise InvalidInputError("alert_webhook: an http(s) URL of at most 512 characters")
    values["alert_webhook"] = hook
    return values


def _require(session: Any, code: str) -> Hospital:
    row = repo.hospital_by_code(session, code.strip())
    if row is None:
        raise NotFoundError(f"unknown hospital code {code.strip()[:64]!r}; register it with "
                            "`cloudfilm hospitals add`")
    return row


def _view(row: Hospital, peers: tuple[Peer, ...]) -> HospitalView:
    return HospitalView(
        id=row.id, code=row.code, name=row.name, level=row.level, grade=row.grade,
        city=row.city, county=row.county, active=row.active,
        national_id_source=row.national_id_source, national_id_issuer=row.national_id_issuer,
        national_id_tag=row.national_id_tag, created_at=row.created_at, ae_titles=peers,
        public=row.public, contact_phone=row.contact_phone, alert_webhook=row.alert_webhook,
    )


def _peer(row: Any) -> Peer:
    return Peer(row.ae_title, row.host, row.port, row.hospital_code, row.description,
                row.created_at)
