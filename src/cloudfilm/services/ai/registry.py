"""Which AI algorithms exist, who approved them, which hospitals run them.

An algorithm is registered by a platform administrator (``ai.manage``) with its intended
use, version and filters, approved by *another* administrator (four eyes, as research
projects), and enabled per hospital by that hospital's administrator (``ai.enable``) or a
platform administrator. Only then are workitems made for it. An external engine gets a
``cfa_`` credential at registration (shown once; only its SHA-256 is kept).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from cloudfilm.infrastructure.ai.plugin import PluginError, load
from cloudfilm.infrastructure.db import ai_repository as repo
from cloudfilm.infrastructure.db.models import AiAlgorithm
from cloudfilm.infrastructure.db.session import Database
from cloudfilm.services.access.audit import AuditService
from cloudfilm.services.errors import InvalidInputError, NotAuthorizedError, NotFoundError
from cloudfilm.services.identity.protection import IdProtector
from cloudfilm.services.kernel.actor import Actor, Permission, Role

TOKEN_PREFIX = "cfa_"
KEY_KIND = "ai-algorithm-key"
Kind = Literal["plugin", "external"]


@dataclass(frozen=True, slots=True)
class AlgorithmInput:
    name: str
    version: str
    intended_use: str
    kind: Kind
    vendor: str = ""
    plugin: str = ""
    """For ``kind="plugin"``: ``builtin:lung-nodules``, ``entry:<name>`` or a name of the
    ``ai.plugins`` setting (a configured ``module:callable``)."""
    modalities: tuple[str, ...] = ()
    body_parts: tuple[str, ...] = ()
    input: Literal["original", "deidentified"] = "original"
    """What the approval lets it read: the original images, or de-identified copies."""


@dataclass(frozen=True, slots=True)
class AlgorithmView:
    id: str
    name: str
    version: str
    vendor: str
    intended_use: str
    kind: str
    plugin: str
    modalities: list[str]
    body_parts: list[str]
    status: str
    input: str
    registered_by: str
    approved_by: str
    hospitals: list[str]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def view(row: AiAlgorithm, hospitals: list[str]) -> AlgorithmView:
    return AlgorithmView(id=row.public_id, name=row.name, version=row.version,
                         vendor=row.vendor, intended_use=row.intended_use, kind=row.kind,
                         plugin=row.plugin, modalities=row.modalities.split(),
                         body_parts=row.body_parts.split(), status=row.status,
                         input=row.input,
                         registered_by=row.registered_by, approved_by=row.approved_by,
                         hospitals=hospitals)


def actor_of(row: Any, *, address: str = "") -> Actor:
    """The system actor an algorithm reads as (what residents see in their access log)."""
    return Actor(kind="algorithm", subject=f"ai:{row.public_id}",
                 display=f"AI algorithm «{row.name}» {row.version}", address=address,
                 algorithm_id=row.public_id)


class AlgorithmRegistry:
    def __init__(self, db: Database, audit: AuditService, *,
                 plugins: Mapping[str, str] | None = None,
                 protector: IdProtector | None = None) -> None:
        self._protector = protector
        self._db = db
        self._audit = audit
        self._plugins = dict(plugins or {})

    def plugin_spec(self, plugin: str) -> str:
        """The loadable spec of a registered plug-in name (configured names first)."""
        return self._plugins.get(plugin, plugin)

    def _check_plugin(self, plugin: str) -> None:
        # Only shipped, installed (entry point) or configured callables: an administrator
        # cannot make the platform import an arbitrary module through the API.
        if not (plugin in self._plugins or plugin.startswith(("builtin:", "entry:"))):
            raise InvalidInputError("a plug-in is builtin:<name>, entry:<name> or a name "
                                    f"configured in ai.plugins ({sorted(self._plugins)})")
        try:
            load(self.plugin_spec(plugin))
        except PluginError as exc:
            raise InvalidInputError(str(exc)) from exc

    def register(self, actor: Actor, data: AlgorithmInput) -> tuple[AlgorithmView, str]:
        """Register an algorithm; returns it and, for an external engine, its credential
        (shown once)."""
        _need(actor, Permission.MANAGE_AI, "register AI algorithms")
        for field in ("name", "version", "intended_use"):
            if not str(getattr(data, field)).strip():
                raise InvalidInputError(f"{field} is required")
        if data.kind not in ("plugin", "external"):
            raise InvalidInputError("kind is plugin or external")
        if data.kind == "plugin":
            self._check_plugin(data.plugin)
        if data.input not in ("original", "deidentified"):
            raise InvalidInputError("input is original or deidentified")
        key_enc = ""
        if data.input == "deidentified":
            if self._protector is None:
                raise InvalidInputError("de-identified input needs the platform's keys")
            key_enc = self._protector.encrypt(KEY_KIND, secrets.token_hex(32))
        token = TOKEN_PREFIX + secrets.token_urlsafe(32) if data.kind == "external" else ""
        now = datetime.now(UTC)
        with self._db.write() as s:
            row = AiAlgorithm(
                public_id=secrets.token_hex(8), name=data.name.strip()[:128],
                version=data.version.strip()[:32], vendor=data.vendor.strip()[:128],
                intended_use=data.intended_use.strip(), kind=data.kind,
                plugin=data.plugin if data.kind == "plugin" else "",
                modalities=" ".join(sorted({m.strip().upper() for m in data.modalities
                                            if m.strip()})),
                body_parts=" ".join(sorted({b.strip().upper() for b in data.body_parts
                                            if b.strip()})),
                status="registered", token_hash=token_hash(token) if token else "",
                input=data.input, key_enc=key_enc,
                registered_by=actor.subject, registered_at=now, approved_by="")
            s.add(row)
            s.flush()
            self._audit.record(s, actor=actor, action="ai.register", outcome="success",
                               resource_type="ai_algorithm", resource_uid=row.public_id,
                               detail={"name": row.name, "version": row.version})
            return view(row, []), token

    def approve(self, actor: Actor, algorithm_id: str) -> AlgorithmView:
        _need(actor, Permission.MANAGE_AI, "approve AI algorithms")
        with self._db.write() as s:
            row = _row(s, algorithm_id, lock=True)
            if row.status == "approved":
                raise InvalidInputError("the algorithm is approved already")
            if row.registered_by == actor.subject and actor.has(Role.ADMIN):
                raise NotAuthorizedError("an algorithm is approved by another administrator "
                                         "than the one who registered it")
            row.status, row.approved_by = "approved", actor.subject
            row.approved_at = datetime.now(UTC)
            self._audit.record(s, actor=actor, action="ai.approve", outcome="success",
                               resource_type="ai_algorithm", resource_uid=algorithm_id)
            return view(row, repo.enabled_hospitals(s, row.id))

    def suspend(self, actor: Actor, algorithm_id: str) -> AlgorithmView:
        """Stop an algorithm: no new workitems, no claims, no reads (the policy re-reads the
        status per request)."""
        _need(actor, Permission.MANAGE_AI, "suspend AI algorithms")
        with self._db.write() as s:
            row = _row(s, algorithm_id, lock=True)
            row.status = "suspended"
            self._audit.record(s, actor=actor, action="ai.suspend", outcome="success",
                               resource_type="ai_algorithm", resource_uid=algorithm_id)
            return view(row, repo.enabled_hospitals(s, row.id))

    def enable(self, actor: Actor, algorithm_id: str, hospital_code: str,
               enabled: bool = True) -> AlgorithmView:
        """A hospital starts (or stops) running an approved algorithm on its new studies."""
        own = actor.can(Permission.ENABLE_AI) and actor.hospital_code == hospital_code
        if not (own or actor.can(Permission.MANAGE_AI)):
            raise NotAuthorizedError("only the hospital's administrator or a platform "
                                     "administrator enables an AI algorithm for a hospital")
        with self._db.write() as s:
            row = _row(s, algorithm_id)
            if enabled and row.status != "approved":
                raise InvalidInputError(f"the algorithm is {row.status}, not approved")
            hospital = repo.hospital_id(s, hospital_code)
            if hospital is None:
                raise NotFoundError(f"no hospital {hospital_code!r}")
            repo.set_enabled(s, row.id, hospital, enabled, by=actor.subject,
                             now=datetime.now(UTC))
            self._audit.record(s, actor=actor, action="ai.enable", outcome="success",
                               resource_type="ai_algorithm", resource_uid=algorithm_id,
                               detail={"hospital": hospital_code, "enabled": enabled})
            return view(row, repo.enabled_hospitals(s, row.id))

    def list(self, actor: Actor) -> list[AlgorithmView]:
        if not (actor.can(Permission.MANAGE_AI) or actor.can(Permission.ENABLE_AI)
                or actor.can(Permission.CONFIRM_AI_RESULT)):
            raise NotAuthorizedError("you may not list AI algorithms")
        with self._db.read() as s:
            return [view(r, repo.enabled_hospitals(s, r.id)) for r in repo.algorithms(s)]

    def actor_for_token(self, token: str, *, address: str = "") -> Actor | None:
        """The algorithm behind a ``cfa_`` credential (None: unknown)."""
        with self._db.read() as s:
            row = repo.algorithm_by_token(s, token_hash(token))
            return actor_of(row, address=address) if row is not None else None


def _need(actor: Actor, permission: Permission, what: str) -> None:
    if not actor.can(permission):
        raise NotAuthorizedError(f"only a platform administrator may {what}")


def _row(session: object, algorithm_id: str, *, lock: bool = False) -> AiAlgorithm:
    row = repo.algorithm(session, algorithm_id, lock=lock)  # type: ignore[arg-type]
    if row is None:
        raise NotFoundError("no such AI algorithm")
    return row
