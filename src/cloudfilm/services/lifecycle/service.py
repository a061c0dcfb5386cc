"""Retention for 30 years, legal holds, and deletion only by two audited steps.

Nothing is ever deleted by the passing of time. When a study's retention ends
(services/lifecycle/rules.py) it appears on the **review list** for an administrator. A
deletion is two steps by two different people: one **proposes** (the request records
exactly which studies, how many objects and bytes: the report of what would be deleted),
another **executes** it; at execution each study is checked again (retention still over,
no legal hold) and the others are skipped with the reason. Every step is an audit record;
each deleted study is one record naming its resident.

A **legal hold** on a study or on a patient (hospital code + PatientID) blocks deletion,
tier moves and re-encoding of what it covers until released (both audited).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson

from cloudfilm.infrastructure.db import lifecycle_repository as repo
from cloudfilm.infrastructure.db import storage_repository as srepo
from cloudfilm.infrastructure.db.models import DeletionRequest, LegalHold, RetentionRule
from cloudfilm.infrastructure.db.session import Database
from cloudfilm.infrastructure.storage.base import BlobStore, BlobStoreError
from cloudfilm.services.access.audit import AuditEntry, AuditService
from cloudfilm.services.access.policy import AccessPolicy
from cloudfilm.services.errors import InvalidInputError, NotFoundError
from cloudfilm.services.kernel.actor import Actor, Permission
from cloudfilm.services.lifecycle.rules import Rule, add_years, parse_da, retention_end

logger = logging.getLogger(__name__)

_BATCH = 500


def who(actor: Actor) -> str:
    """The person behind an action, as recorded in the lifecycle tables."""
    return f"{actor.kind}:{actor.subject}"[:128]


@dataclass(frozen=True, slots=True)
class RuleInput:
    name: str
    years: int
    modality: str = ""
    hospital_code: str = ""
    study_kind: str = ""
    minor_age: int | None = None
    minor_years: int = 0


@dataclass(frozen=True, slots=True)
class RuleView:
    id: int
    name: str
    years: int
    modality: str
    hospital_code: str
    study_kind: str
    minor_age: int | None
    minor_years: int
    active: bool
    created_by: str


@dataclass(frozen=True, slots=True)
class DueStudy:
    study_instance_uid: str
    hospital_code: str
    study_date: str
    modalities: list[str]
    retention_end: str  # ISO date
    rule: str
    objects: int
    size_bytes: int
    held: bool


@dataclass(frozen=True, slots=True)
class HoldView:
    id: int
    scope: str
    study_instance_uid: str
    hospital_code: str
    patient_id: str
    reason: str
    placed_by: str
    placed_at: datetime
    released_by: str
    released_at: datetime | None


@dataclass(frozen=True, slots=True)
class DeletionView:
    id: int
    state: str
    reason: str
    proposed_by: str
    proposed_at: datetime
    decided_by: str
    decided_at: datetime | None
    studies: list[str]
    objects: int
    size_bytes: int
    result: dict[str, str] = field(default_factory=dict)


class LifecycleService:
    def __init__(self, db: Database, blobs: BlobStore, policy: AccessPolicy,
                 audit: AuditService, *, default: Rule) -> None:
        self._db = db
        self._blobs = blobs
        self._policy = policy
        self._audit = audit
        self.default = default

    # -- rules -------------------------------------------------------------------------------

    def rules(self, actor: Actor) -> list[RuleView]:
        self._policy.require(actor, Permission.MANAGE_RETENTION, action="retention.rules")
        with self._db.read() as session:
            return [_rule_view(r) for r in repo.rules(session, active_only=False)]

    def add_rule(self, actor: Actor, rule: RuleInput) -> RuleView:
        self._policy.require(actor, Permission.MANAGE_RETENTION, action="retention.rule_add")
        if not rule.name.strip() or not 1 <= rule.years <= 200:
            raise InvalidInputError("a retention rule needs a name and 1 to 200 years")
        if rule.minor_age is not None and not 0 < rule.minor_age <= 150:
            raise InvalidInputError("minor_age is an age in years (1-150)")
        with self._db.write() as session:
            row = RetentionRule(name=rule.name.strip()[:128], years=rule.years,
                                modality=rule.modality.strip().upper()[:16],
                                hospital_code=rule.hospital_code.strip()[:64],
                                study_kind=rule.study_kind.strip()[:64],
                                minor_age=rule.minor_age, minor_years=max(rule.minor_years, 0),
                                active=True, created_by=who(actor),
                                created_at=datetime.now(UTC))
            session.add(row)
            session.flush()
            self._audit.record(session, actor=actor, action="retention.rule_add",
                               outcome="success", resource_type="rule",
                               resource_uid=str(row.id), detail=_rule_detail(row))
            return _rule_view(row)

    def retire_rule(self, actor: Actor, rule_id: int) -> RuleView:
        self._policy.require(actor, Permission.MANAGE_RETENTION,
                             action="retention.rule_retire")
        with self._db.write() as session:
            row = session.get(RetentionRule, rule_id)
            if row is None:
                raise NotFoundError(f"no retention rule {rule_id}")
            row.active = False
            self._audit.record(session, actor=actor, action="retention.rule_retire",
                               outcome="success", resource_type="rule",
                               resource_uid=str(row.id), detail=_rule_detail(row))
            return _rule_view(row)

    def _active_rules(self, session: Any) -> list[Rule]:
        return [Rule(r.name, r.years, r.modality, r.hospital_code, r.study_kind, r.minor_age,
                     r.minor_years) for r in repo.rules(session)]

    # -- the review list ---------------------------------------------------------------------

    def review(self, actor: Actor, *, today: date | None = None,
               limit: int = 1000) -> list[DueStudy]:
        """Studies whose retention has ended (held ones too, marked: they stay)."""
        self._policy.require(actor, Permission.MANAGE_RETENTION, action="retention.review")
        today = today or datetime.now(UTC).date()
        out: list[DueStudy] = []
        with self._db.read() as session:
            rules = self._active_rules(session)
            held = srepo.active_holds(session)
            shortest = min([self.default.years, *(r.years for r in rules)])
            bound = add_years(today, -shortest)  # nothing done after it is due yet
            after = 0
            while len(out) < limit:
                batch = repo.studies_done_before(
                    session, date_before=(bound + timedelta(days=1)).strftime("%Y%m%d"),
                    received_before=datetime(bound.year, bound.month, bound.day, tzinfo=UTC)
                    + timedelta(days=1), after_id=after, limit=_BATCH)
                if not batch:
                    break
                after = batch[-1].id
                out.extend(self._due(session, batch, rules, held, today))
        self._audit.write([AuditEntry(actor, "retention.review", "success",
                                      detail={"due": len(out)})])
        return out[:limit]

    def _due(self, session: Any, rows: Any, rules: list[Rule],
             held: tuple[set[str], set[tuple[str, str]]], today: date) -> list[DueStudy]:
        mods = repo.modalities(session, [r.id for r in rows])
        due = []
        for r in rows:
            end, rule = self._end_of(r, rules, mods.get(r.id, set()))
            if end > today:
                continue
            due.append(DueStudy(
                r.study_instance_uid, r.hospital_code, r.study_date,
                sorted(mods.get(r.id, set())), end.isoformat(), rule, int(r.num_instances),
                int(r.size_bytes), r.study_instance_uid in held[0]
                or (r.hospital_code, r.patient_id) in held[1]))
        return due

    def _end_of(self, r: Any, rules: list[Rule], modalities: set[str]) -> tuple[date, str]:
        day = parse_da(r.study_date)
        if day is None:
            received = r.received_at
            day = received.date() if isinstance(received, datetime) else date.today()
        return retention_end(rules, self.default, study_day=day, birth=parse_da(r.birth_date),
                             modalities=modalities, hospital_code=r.hospital_code,
                             description=r.study_description)

    def retention_of(self, actor: Actor, study_uid: str) -> tuple[str, str, bool]:
        """(retention end ISO date, deciding rule, held) of one study."""
        self._policy.require(actor, Permission.MANAGE_RETENTION, action="retention.study")
        with self._db.read() as session:
            rows = repo.study_facts(session, [study_uid])
            if not rows:
                raise NotFoundError(f"study {study_uid} is not in the archive")
            r = rows[0]
            end, rule = self._end_of(r, self._active_rules(session),
                                     repo.modalities(session, [r.id]).get(r.id, set()))
            held = srepo.study_held(session, r.id)
        return end.isoformat(), rule, held

    # -- deletion in two steps ---------------------------------------------------------------

    def propose_deletion(self, actor: Actor, *, reason: str,
                         study_uids: list[str] | None = None,
                         today: date | None = None) -> DeletionView:
        """Step one: record what would be deleted (studies past retention, not held; all of
        the review list, or the named ones among it)."""
        self._policy.require(actor, Permission.MANAGE_RETENTION, action="retention.propose")
        if not reason.strip():
            raise InvalidInputError("say why these studies are to be deleted (reason)")
        due = [d for d in self.review(actor, today=today, limit=100_000) if not d.held]
        if study_uids is not None:
            wanted = set(study_uids)
            missing = wanted - {d.study_instance_uid for d in due}
            if missing:
                raise InvalidInputError(
                    f"{len(missing)} of the named studies are not due for deletion (still "
                    f"retained, under legal hold, or absent), e.g. {sorted(missing)[0]}")
            due = [d for d in due if d.study_instance_uid in wanted]
        if not due:
            raise InvalidInputError("no study is due for deletion")
        now = datetime.now(UTC)
        with self._db.write() as session:
            row = DeletionRequest(
                state="proposed", reason=reason.strip(), proposed_by=who(actor),
                proposed_at=now, decided_by="", studies_json=orjson.dumps(
                    [d.study_instance_uid for d in due]).decode(), result_json="{}",
                objects=sum(d.objects for d in due), size_bytes=sum(d.size_bytes for d in due))
            session.add(row)
            session.flush()
            self._audit.record(session, actor=actor, action="retention.propose",
                               outcome="success", resource_type="deletion",
                               resource_uid=str(row.id), reason=reason.strip()[:128],
                               detail={"studies": len(due), "objects": row.objects,
                                       "bytes": row.size_bytes})
            return _deletion_view(row)

    def cancel_deletion(self, actor: Actor, request_id: int) -> DeletionView:
        self._policy.require(actor, Permission.MANAGE_RETENTION, action="retention.cancel")
        with self._db.write() as session:
            row = self._proposed(session, request_id)
            row.state, row.decided_by, row.decided_at = "cancelled", who(actor), \
                datetime.now(UTC)
            self._audit.record(session, actor=actor, action="retention.cancel",
                               outcome="success", resource_type="deletion",
                               resource_uid=str(row.id))
            return _deletion_view(row)

    def execute_deletion(self, actor: Actor, request_id: int, *,
                         today: date | None = None) -> DeletionView:
        """Step two, by another administrator: delete each proposed study that is still
        past retention and not held (re-checked now); the others are skipped."""
        self._policy.require(actor, Permission.MANAGE_RETENTION, action="retention.execute")
        with self._db.read() as session:
            row = self._proposed(session, request_id)
            if row.proposed_by == who(actor):
                raise InvalidInputError("the deletion must be executed by another "
                                        "administrator than the one who proposed it")
            uids = orjson.loads(row.studies_json)
        today = today or datetime.now(UTC).date()
        result: dict[str, str] = {}
        for uid in uids:
            result[uid] = self._delete_one(actor, request_id, uid, today)
        with self._db.write() as session:
            row = self._proposed(session, request_id)
            row.state, row.decided_by, row.decided_at = "executed", who(actor), \
                datetime.now(UTC)
            row.result_json = orjson.dumps(result).decode()
            deleted = sum(1 for v in result.values() if v == "deleted")
            self._audit.record(session, actor=actor, action="retention.execute",
                               outcome="success", resource_type="deletion",
                               resource_uid=str(row.id),
                               detail={"deleted": deleted, "skipped": len(result) - deleted})
            return _deletion_view(row)

    def _delete_one(self, actor: Actor, request_id: int, uid: str, today: date) -> str:
        keys: list[str] = []
        with self._db.write() as session:
            rows = repo.study_facts(session, [uid])
            if not rows:
                return "gone"
            r = rows[0]
            end, _rule = self._end_of(r, self._active_rules(session),
                                      repo.modalities(session, [r.id]).get(r.id, set()))
            if end > today:
                return "retained"
            if srepo.study_held(session, r.id):
                return "legal-hold"
            owner = self._audit.study_owners(session, [uid]).get(uid)
            keys, objects, size = repo.delete_study(session, r.id)
            self._audit.record(session, actor=actor, action="retention.delete",
                               outcome="success", resource_type="study", resource_uid=uid,
                               resident_id=owner, reason=f"deletion request {request_id}",
                               detail={"objects": objects, "bytes": size,
                                       "retention_end": end.isoformat()})
        # After the commit: a crash here leaves unreferenced blobs for `storage sweep`.
        with self._db.read() as session:
            shared = repo.keys_in_use(session, keys)
        for key in keys:
            if key in shared:
                continue
            try:
                self._blobs.delete(key)
            except BlobStoreError:
                logger.warning("cloudfilm.lifecycle.blob_not_deleted", extra={"key": key})
        return "deleted"

    def _proposed(self, session: Any, request_id: int) -> DeletionRequest:
        row = session.get(DeletionRequest, request_id)
        if row is None:
            raise NotFoundError(f"no deletion request {request_id}")
        if row.state != "proposed":
            raise InvalidInputError(f"deletion request {request_id} is {row.state} already")
        return row  # type: ignore[no-any-return]

    def deletions(self, actor: Actor) -> list[DeletionView]:
        self._policy.require(actor, Permission.MANAGE_RETENTION, action="retention.requests")
        with self._db.read() as session:
            return [_deletion_view(r) for r in repo.deletion_requests(session)]

    # -- legal holds -------------------------------------------------------------------------

    def place_hold(self, actor: Actor, *, reason: str, study_uid: str = "",
                   hospital_code: str = "", patient_id: str = "") -> HoldView:
        self._policy.require(actor, Permission.LEGAL_HOLD, action="legal_hold.place")
        if not reason.strip():
            raise InvalidInputError("a legal hold needs a reason (the case or order)")
        if bool(study_uid) == bool(hospital_code and patient_id):
            raise InvalidInputError("name either a study, or a patient (hospital code and "
                                    "PatientID)")
        with self._db.write() as session:
            if study_uid and not repo.study_exists(session, study_uid):
                raise NotFoundError(f"study {study_uid} is not in the archive")
            patient = None
            if not study_uid:
                patient = repo.patient_exists(session, hospital_code, patient_id)
                if patient is None:
                    raise NotFoundError(f"no patient {patient_id} at hospital {hospital_code}")
            row = LegalHold(scope="study" if study_uid else "patient",
                            study_instance_uid=study_uid, hospital_code=hospital_code,
                            patient_id=patient_id, reason=reason.strip(),
                            placed_by=who(actor), placed_at=datetime.now(UTC), released_by="")
            session.add(row)
            session.flush()
            owner = self._audit.study_owners(session, [study_uid]).get(study_uid) \
                if study_uid else None
            self._audit.record(session, actor=actor, action="legal_hold.place",
                               outcome="success", resource_type=row.scope,
                               resource_uid=study_uid, resident_id=owner,
                               reason=reason.strip()[:128],
                               detail={"hold": row.id, "hospital": hospital_code,
                                       "patient": patient})
            return _hold_view(row)

    def release_hold(self, actor: Actor, hold_id: int, *, reason: str) -> HoldView:
        self._policy.require(actor, Permission.LEGAL_HOLD, action="legal_hold.release")
        if not reason.strip():
            raise InvalidInputError("say why the hold is released")
        with self._db.write() as session:
            row = session.get(LegalHold, hold_id)
            if row is None:
                raise NotFoundError(f"no legal hold {hold_id}")
            if row.released_at is not None:
                raise InvalidInputError(f"legal hold {hold_id} was released already")
            row.released_by, row.released_at = who(actor), datetime.now(UTC)
            self._audit.record(session, actor=actor, action="legal_hold.release",
                               outcome="success", resource_type=row.scope,
                               resource_uid=row.study_instance_uid,
                               reason=reason.strip()[:128], detail={"hold": row.id})
            return _hold_view(row)

    def holds(self, actor: Actor, *, active_only: bool = True) -> list[HoldView]:
        self._policy.require(actor, Permission.LEGAL_HOLD, action="legal_hold.list")
        with self._db.read() as session:
            return [_hold_view(h) for h in repo.holds(session, active_only=active_only)]


def _rule_view(r: RetentionRule) -> RuleView:
    return RuleView(r.id, r.name, r.years, r.modality, r.hospital_code, r.study_kind,
                    r.minor_age, r.minor_years, r.active, r.created_by)


def _rule_detail(r: RetentionRule) -> dict[str, Any]:
    return {"name": r.name, "years": r.years, "modality": r.modality,
            "hospital": r.hospital_code, "kind": r.study_kind, "minor_age": r.minor_age,
            "minor_years": r.minor_years, "active": r.active}


def _hold_view(h: LegalHold) -> HoldView:
    return HoldView(h.id, h.scope, h.study_instance_uid, h.hospital_code, h.patient_id,
                    h.reason, h.placed_by, h.placed_at, h.released_by, h.released_at)


def _deletion_view(d: DeletionRequest) -> DeletionView:
    return DeletionView(d.id, d.state, d.reason, d.proposed_by, d.proposed_at, d.decided_by,
                        d.decided_at, orjson.loads(d.studies_json), d.objects, d.size_bytes,
                        orjson.loads(d.result_json or "{}"))
