"""The recognition service: rules as data, the check an order entry calls, the doctor's
decision, the order feed's "performed", and what it saved.

Who may do what (permissions of ``services.kernel.Permission``, applied by
:func:`ordering_party` and :func:`require_rules_admin`):

- the check, decisions and "performed" (``CHECK_RECOGNITION``): a hospital system (its
  credential) or a doctor (his session), always *for his own hospital*; with
  ``MANAGE_RECOGNITION_RULES`` (the local operator, a platform administrator) only when
  naming the ordering hospital.
- rules (catalogue, code maps, terms, prices, QC flags): ``MANAGE_RECOGNITION_RULES``.
- figures: ``MANAGE_RECOGNITION_RULES`` every hospital, ``CHECK_RECOGNITION`` its own.

No fishing: a hospital can only check a patient it has a record of. By local ID that is
its own patient record; by national ID the resident must have a record *linked at the
ordering hospital* (register the patient first, HIS ADT / ``/api/v1/registrations``).
Anything else is "no patient record here", the same answer whether or not the person
exists elsewhere, and the attempt is audited as denied.

Transactions: a check, a decision and a rules change each run in one write transaction
that commits before the service returns: the classification cache, the check row and its
audit record (naming the resident) commit together.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import orjson
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db import identity_repository as ids
from cloudfilm.infrastructure.db import recognition_repository as repo
from cloudfilm.infrastructure.db.session import Database, as_utc
from cloudfilm.services.access.audit import AuditService
from cloudfilm.services.errors import (
    AlreadyExistsError,
    InvalidInputError,
    NotAuthorizedError,
    NotFoundError,
)
from cloudfilm.services.identity.mpi import NATIONAL_ID, parse_national_id
from cloudfilm.services.identity.protection import IdProtector
from cloudfilm.services.kernel.actor import Actor, Permission
from cloudfilm.services.recognition import catalogue
from cloudfilm.services.recognition.normalise import (
    FIELDS,
    StudyFacts,
    Term,
    Terms,
    classify,
    normalise_text,
)
from cloudfilm.services.transactions import guarded

logger = logging.getLogger(__name__)

REPEAT_REASONS = ("emergency", "condition_changed", "prior_quality_insufficient",
                  "different_protocol", "patient_request", "other")
DECISIONS = ("accepted", "repeat")
LEVELS = catalogue.LEVELS
RULES_TTL = 2.0  # seconds
_REPORT_STATUS = {2: "final", 1: "preliminary", 0: "cancelled"}


# --- who may -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Party:
    hospital_id: int | None
    hospital_code: str | None
    department: str


def ordering_party(actor: Actor, *, hospital_code: str | None = None,
                   department: str = "") -> Party:
    """The hospital (and department) an actor orders for.

    Raises NotAuthorizedError without ``CHECK_RECOGNITION`` (residents, unknown actors),
    and for another hospital named by a hospital or doctor.
    """
    if _any_hospital(actor):
        if not hospital_code:
            raise InvalidInputError("hospital_code: name the ordering hospital")
        return Party(None, hospital_code, department.strip()[:128])
    if actor.can(Permission.CHECK_RECOGNITION) and actor.hospital_id is not None:
        if hospital_code and hospital_code != actor.hospital_code:
            raise NotAuthorizedError("a hospital or doctor checks for its own hospital only")
        return Party(actor.hospital_id, actor.hospital_code,
                     (department or actor.department).strip()[:128])
    raise NotAuthorizedError("only a hospital system or a doctor may check an order")


def _any_hospital(actor: Actor) -> bool:
    """Platform administrators act for (and see) every hospital."""
    return actor.can(Permission.MANAGE_RECOGNITION_RULES)


def require_rules_admin(actor: Actor) -> None:
    if not actor.can(Permission.MANAGE_RECOGNITION_RULES):
        raise NotAuthorizedError("only platform administrators change recognition rules")


# --- inputs and outputs --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckRequest:
    national_id: str | None = None
    patient_id: str | None = None
    item_code: str | None = None
    procedure_code: str | None = None
    department: str = ""
    hospital_code: str | None = None
    order_ref: str = ""
    """The hospital's order number when the check comes through the order feed."""


@dataclass(frozen=True, slots=True)
class ItemView:
    code: str
    name_zh: str
    name_en: str
    modality: str
    body_region: str
    procedure: str
    window_days: int
    accept_levels: dict[str, list[str]]
    require_final_report: bool
    require_complete: bool
    require_qc: bool
    typical_dose_msv: float | None
    active: bool


@dataclass(frozen=True, slots=True)
class Prior:
    study_instance_uid: str
    study_date: str
    days_ago: int
    hospital_code: str
    hospital_name: str
    hospital_level: str
    item_code: str
    item_name_zh: str
    item_name_en: str
    report_status: str
    reason: str


@dataclass(frozen=True, slots=True)
class CheckResult:
    decision_id: str
    item_code: str
    item_name_zh: str
    item_name_en: str
    window_days: int
    priors: tuple[Prior, ...]
    not_offered: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SavingsRow:
    month: str
    hospital_code: str
    department: str
    item_code: str
    checks: int
    prompts: int
    accepted: int
    repeats: dict[str, int]
    accepted_then_performed: int
    undecided: int
    cost_avoided_yuan: float
    dose_avoided_msv: float


@dataclass(slots=True)
class _Rules:
    version: int
    items: dict[str, ItemView]
    terms: Terms
    by_kind: dict[tuple[str, str, str], str]  # (modality, region, procedure) -> item


@dataclass(frozen=True, slots=True)
class _Hospital:
    id: int
    code: str
    name: str
    level: str


def _item_view(row: Any) -> ItemView:
    return ItemView(row.code, row.name_zh, row.name_en, row.modality, row.body_region,
                    row.procedure, row.window_days, orjson.loads(row.accept_levels),
                    row.require_final_report, row.require_complete, row.require_qc,
                    row.typical_dose_msv, row.active)


def _snapshot(row: Any) -> dict[str, Any]:
    if row is None:
        return {}
    return {c.name: (v.isoformat() if isinstance(v, datetime) else v)
            for c in row.__table__.columns if c.name not in ("id", "updated_at")
            for v in [getattr(row, c.name)]}


class RecognitionService:
    """Parameters: the index database, the national-ID protector (to find a resident by
    national ID), the audit service, the province's zone (dates of exams), and how long a
    study must be quiet to count as complete."""

    def __init__(self, db: Database, protector: IdProtector, audit: AuditService, *,
                 zone: ZoneInfo, settle_minutes: int = 30,
                 clock: Callable[[], datetime] | None = None) -> None:
        self._db = db
        self._protector = protector
        self._audit = audit
        self._zone = zone
        self._settle = timedelta(minutes=settle_minutes)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._cache: _Rules | None = None
        self._hospitals: dict[tuple[int | None, str | None], tuple[_Hospital, float]] = {}
        self._cached_at = 0.0

    # -- rules --------------------------------------------------------------------------

    def _seed(self, session: Session) -> None:
        """Write the seeded catalogue once, as changes by ``seed`` (first use)."""
        if repo.item_count(session) or repo.rules_version(session):
            return
        now = self._clock()
        for values in catalogue.items():
            values = {**values, "accept_levels": orjson.dumps(values["accept_levels"]).decode()}
            row = repo.add(session, "item", {**values, "updated_at": now,
                                             "updated_by": catalogue.SEED_BY})
            self._change(session, catalogue.SEED_BY, "item", row.code, "create", None, row)
        for field_name, pattern, value, match in catalogue.terms():
            row = repo.add(session, "term", {"field": field_name,
                                             "pattern": normalise_text(pattern), "value": value,
                                             "match": match, "updated_at": now,
                                             "updated_by": catalogue.SEED_BY})
        for code, level, price in catalogue.prices():
            repo.add(session, "price", {"item_code": code, "level": level, "price_yuan": price,
                                        "updated_at": now, "updated_by": catalogue.SEED_BY})
        repo.add_change(session, {"at": now, "actor": catalogue.SEED_BY, "entity": "term",
                                  "key": "*", "action": "create", "before_json": "{}",
                                  "after_json": orjson.dumps({"terms": len(catalogue.terms()),
                                                              "prices": len(catalogue.prices())
                                                              }).decode()})

    def _rules(self, session: Session) -> _Rules:
        cached = self._cache
        # Another process's rule change is seen within RULES_TTL seconds (one round trip
        # fewer per check); this process's own changes drop the cache at once.
        if cached is not None and time.monotonic() - self._cached_at < RULES_TTL:
            return cached
        version = repo.rules_version(session)
        if version == 0:
            self._seed(session)
            version = repo.rules_version(session)
        cached = self._cache
        if cached is not None and cached.version == version:
            self._cached_at = time.monotonic()
            return cached
        items = {r.code: _item_view(r) for r in repo.rows(session, "item")}
        terms = Terms(Term(t.field, t.pattern, t.value, t.match)
                      for t in repo.rows(session, "term"))
        by_kind = {(i.modality, i.body_region, i.procedure): i.code
                   for i in items.values() if i.active}
        rules = _Rules(version, items, terms, by_kind)
        with self._lock:
            self._cache, self._cached_at = rules, time.monotonic()
        return rules

    def _change(self, session: Session, actor: str, entity: str, key: str, action: str,
                before: Any, after: Any) -> None:
        self._cache = None  # re-read after this transaction
        repo.add_change(session, {
            "at": self._clock(), "actor": actor[:128], "entity": entity, "key": key[:160],
            "action": action,
            "before_json": orjson.dumps(before if isinstance(before, dict)
                                        else _snapshot(before)).decode(),
            "after_json": orjson.dumps(after if isinstance(after, dict)
                                       else _snapshot(after)).decode()})

    def items(self, *, include_inactive: bool = True) -> list[ItemView]:
        with guarded(self._db.write()) as session:
            rules = self._rules(session)
            return [i for i in sorted(rules.items.values(), key=lambda i: i.code)
                    if include_inactive or i.active]

    def put_item(self, actor: Actor, values: dict[str, Any]) -> ItemView:
        """Create or change an item (by ``code``). Raises InvalidInputError,
        NotAuthorizedError."""
        require_rules_admin(actor)
        code = str(values.get("code", "")).strip().upper()
        if not code:
            raise InvalidInputError("code: give the item code")
        accept = values.get("accept_levels")
        if accept is not None and (not isinstance(accept, dict) or any(
                k not in LEVELS or not isinstance(v, list) or any(x not in LEVELS for x in v)
                for k, v in accept.items())):
            raise InvalidInputError("accept_levels: {level: [levels]} with levels "
                                    f"{', '.join(LEVELS)}")
        if "window_days" in values and not 1 <= int(values["window_days"]) <= 3650:
            raise InvalidInputError("window_days: 1 to 3650")
        if values.get("procedure") not in (None, "plain", "contrast", "any"):
            raise InvalidInputError("procedure: plain, contrast or any")
        with guarded(self._db.write()) as session:
            self._rules(session)
            row = repo.find(session, "item", code=code)
            before = _snapshot(row)
            fields = ("name_zh", "name_en", "modality", "body_region", "procedure",
                      "window_days", "require_final_report", "require_complete", "require_qc",
                      "typical_dose_msv", "active")
            update = {k: values[k] for k in fields if k in values}
            for k in ("modality", "body_region"):
                if k in update:
                    update[k] = normalise_text(str(update[k]))
            if accept is not None:
                update["accept_levels"] = orjson.dumps(accept).decode()
            now = self._clock()
            if row is None:
                missing = [k for k in ("name_zh", "name_en", "modality", "body_region",
                                       "window_days") if k not in update]
                if missing:
                    raise InvalidInputError(f"a new item needs {', '.join(missing)}")
                row = repo.add(session, "item", {
                    "code": code, "procedure": "any", "require_final_report": True,
                    "require_complete": True, "require_qc": False, "typical_dose_msv": None,
                    "active": True, "accept_levels": orjson.dumps(
                        catalogue.ACCEPT_DEFAULT).decode(),
                    **update, "updated_at": now, "updated_by": actor.subject})
                action = "create"
            else:
                for k, v in update.items():
                    setattr(row, k, v)
                row.updated_at, row.updated_by = now, actor.subject
                session.flush()
                action = "update"
            self._change(session, _who(actor), "item", code, action, before, row)
            return _item_view(row)

    def put_code_map(self, actor: Actor, hospital_code: str, procedure_code: str,
                     item_code: str | None) -> None:
        """Map (or, with ``item_code`` None, unmap) a hospital's own procedure code."""
        require_rules_admin(actor)
        code = procedure_code.strip()
        if not code:
            raise InvalidInputError("procedure_code: give the hospital's code")
        with guarded(self._db.write()) as session:
            rules = self._rules(session)
            hospital = repo.hospital(session, code=hospital_code.strip())
            if hospital is None:
                raise NotFoundError(f"unknown hospital code {hospital_code.strip()[:64]!r}")
            if item_code is not None and item_code.upper() not in rules.items:
                raise InvalidInputError(f"item_code: {item_code!r} is not in the catalogue")
            row = repo.find(session, "code_map", hospital_id=hospital.id, procedure_code=code)
            before = _snapshot(row)
            key = f"{hospital.code}:{code}"
            if item_code is None:
                if row is None:
                    raise NotFoundError(f"{key} is not mapped")
                repo.remove(session, row)
                self._change(session, _who(actor), "code_map", key, "delete", before, {})
                return
            now = self._clock()
            if row is None:
                row = repo.add(session, "code_map", {
                    "hospital_id": hospital.id, "procedure_code": code,
                    "item_code": item_code.upper(), "updated_at": now,
                    "updated_by": actor.subject})
            else:
                row.item_code, row.updated_at, row.updated_by = (item_code.upper(), now,
                                                                 actor.subject)
                session.flush()
            repo.clear_unmapped(session, "order_code", key)
            self._change(session, _who(actor), "code_map", key,
                         "update" if before else "create", before, row)

    def put_term(self, actor: Actor, field_name: str, pattern: str, value: str | None,
                 match: str = "exact") -> None:
        """Add or change (``value`` None: remove) a normalisation entry."""
        require_rules_admin(actor)
        if field_name not in FIELDS:
            raise InvalidInputError(f"field: one of {', '.join(FIELDS)}")
        if match not in ("exact", "contains"):
            raise InvalidInputError("match: exact or contains")
        norm = normalise_text(pattern)
        if not norm:
            raise InvalidInputError("pattern: give the text to map")
        with guarded(self._db.write()) as session:
            self._rules(session)
            row = repo.find(session, "term", field=field_name, pattern=norm)
            before = _snapshot(row)
            key = f"{field_name}:{norm}"
            if value is None:
                if row is None:
                    raise NotFoundError(f"no term {key}")
                repo.remove(session, row)
                self._change(session, _who(actor), "term", key, "delete", before, {})
                return
            # An item code keeps its hyphens (normalise_text makes them spaces).
            mapped = (value.strip() if field_name == "technique"
                      else value.strip().upper() if field_name == "procedure_code"
                      else normalise_text(value))
            now = self._clock()
            if row is None:
                row = repo.add(session, "term", {"field": field_name, "pattern": norm,
                                                 "value": mapped, "match": match,
                                                 "updated_at": now, "updated_by": actor.subject})
            else:
                row.value, row.match, row.updated_at, row.updated_by = (mapped, match, now,
                                                                        actor.subject)
                session.flush()
            repo.clear_unmapped(session, field_name, norm)
            self._change(session, _who(actor), "term", key, "update" if before else "create",
                         before, row)

    def put_price(self, actor: Actor, item_code: str, level: str, price_yuan: float) -> None:
        require_rules_admin(actor)
        if level not in LEVELS:
            raise InvalidInputError(f"level: one of {', '.join(LEVELS)}")
        if not 0 <= price_yuan <= 1_000_000:
            raise InvalidInputError("price_yuan: 0 to 1,000,000")
        code = item_code.strip().upper()
        with guarded(self._db.write()) as session:
            if code not in self._rules(session).items:
                raise InvalidInputError(f"item_code: {item_code!r} is not in the catalogue")
            row = repo.find(session, "price", item_code=code, level=level)
            before = _snapshot(row)
            now = self._clock()
            if row is None:
                row = repo.add(session, "price", {"item_code": code, "level": level,
                                                  "price_yuan": price_yuan, "updated_at": now,
                                                  "updated_by": actor.subject})
            else:
                row.price_yuan, row.updated_at, row.updated_by = price_yuan, now, actor.subject
                session.flush()
            self._change(session, _who(actor), "price", f"{code}:{level}",
                         "update" if before else "create", before, row)

    def prices(self) -> list[dict[str, Any]]:
        with guarded(self._db.write()) as session:
            self._rules(session)
            return [{"item_code": p.item_code, "level": p.level, "price_yuan": p.price_yuan}
                    for p in repo.rows(session, "price")]

    def terms(self, *, field_name: str | None = None) -> list[dict[str, str]]:
        with guarded(self._db.write()) as session:
            self._rules(session)
            found = repo.rows(session, "term", **({"field": field_name} if field_name else {}))
            return [{"field": t.field, "pattern": t.pattern, "value": t.value,
                     "match": t.match} for t in found]

    def code_maps(self, hospital_code: str) -> list[dict[str, str]]:
        with guarded(self._db.read()) as session:
            hospital = repo.hospital(session, code=hospital_code)
            if hospital is None:
                raise NotFoundError(f"unknown hospital code {hospital_code[:64]!r}")
            return [{"procedure_code": m.procedure_code, "item_code": m.item_code}
                    for m in repo.rows(session, "code_map", hospital_id=hospital.id)]

    def history(self, *, entity: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        with guarded(self._db.read()) as session:
            return [{"id": c.id, "at": as_utc(c.at).isoformat(), "actor": c.actor,
                     "entity": c.entity, "key": c.key, "action": c.action,
                     "before": orjson.loads(c.before_json), "after": orjson.loads(c.after_json)}
                    for c in repo.changes(session, entity=entity, limit=limit)]

    def regions(self) -> list[str]:
        """Body regions the rules know (terms and items): the choices of "map to"."""
        with guarded(self._db.write()) as session:
            rules = self._rules(session)
            found = {i.body_region for i in rules.items.values()}
            found |= {t.value for t in repo.rows(session, "term")
                      if t.field in ("body_part", "description")}
            return sorted(v for v in found if v)

    def map_unmapped(self, actor: Actor, field_name: str, value: str, target: str) -> None:
        """Map one listed value to what an administrator chose (never a guess):

        - ``body_part`` / ``description``: to a body region (a description is matched by
          *contains*, so the longer text wins over the shorter patterns inside it and an
          ambiguous text like 胸腹部 gets one answer);
        - ``modality``: to a catalogue modality; ``procedure_code`` (``scheme:code`` of
          ProcedureCodeSequence): to an item;
        - ``order_code`` (``HOSPITAL:code``, a hospital's own order code): to an item through
          that hospital's code map.

        Raises InvalidInputError (an unknown field or target), NotAuthorizedError,
        NotFoundError (an unknown hospital).
        """
        require_rules_admin(actor)
        target = target.strip()
        if not target:
            raise InvalidInputError("target: choose what the value means")
        if field_name == "order_code":
            hospital_code, sep, code = value.partition(":")
            if not sep or not code:
                raise InvalidInputError("value: HOSPITAL:code")
            self.put_code_map(actor, hospital_code, code, target)
        elif field_name == "procedure_code":
            if target.upper() not in {i.code for i in self.items()}:
                raise InvalidInputError(f"target: {target!r} is not a catalogue item")
            self.put_term(actor, "procedure_code", value, target.upper(), "exact")
        elif field_name in ("body_part", "description"):
            if normalise_text(target) not in self.regions():
                raise InvalidInputError(f"target: {target!r} is not a known body region")
            self.put_term(actor, field_name, value, target,
                          "exact" if field_name == "body_part" else "contains")
        elif field_name == "modality":
            if normalise_text(target) not in {i.modality for i in self.items()}:
                raise InvalidInputError(f"target: {target!r} is not a catalogue modality")
            self.put_term(actor, "modality", value, target, "exact")
        else:
            raise InvalidInputError(f"field: {field_name!r} cannot be mapped")

    def unmapped(self, *, field_name: str | None = None, limit: int = 200
                 ) -> list[dict[str, Any]]:
        """Values normalisation could not map, most seen first."""
        with guarded(self._db.read()) as session:
            return [{"field": r[0].field, "value": r[0].value, "problem": r[0].problem,
                     "hospital_code": r.hospital_code or "", "seen": r[0].seen,
                     "last_seen": as_utc(r[0].last_seen).isoformat()}
                    for r in repo.unmapped(session, field_name=field_name, limit=limit)]

    def set_qc(self, actor: Actor, study_uid: str, qc: str) -> None:
        """Record the optional quality-control flag of a classified study."""
        require_rules_admin(actor)
        if qc not in ("", "passed", "failed"):
            raise InvalidInputError("qc: passed, failed or empty")
        with guarded(self._db.write()) as session:
            rules = self._rules(session)
            self._classify_uid(session, rules, study_uid)
            if not repo.set_qc(session, study_uid, qc):
                raise NotFoundError("no such study")
            self._audit.record(session, actor=actor, action="recognition.qc",
                               outcome="success", resource_type="study",
                               resource_uid=study_uid, detail={"qc": qc})

    def _classify_uid(self, session: Session, rules: _Rules, study_uid: str) -> None:
        fk = repo.study_fk(session, study_uid)
        if fk is not None:
            self._classify(session, rules, [int(fk)])

    # -- classification -----------------------------------------------------------------

    def _classify(self, session: Session, rules: _Rules, study_fks: Sequence[int]
                  ) -> dict[int, str]:
        """Classify studies under the current rules, save, list unmapped values."""
        facts = repo.study_facts(session, study_fks)
        now = self._clock()
        saved: list[dict[str, Any]] = []
        seen: list[tuple[str, str, int, str]] = []
        found: dict[int, str] = {}
        for fk, f in facts.items():
            result = classify(StudyFacts(f["modalities"], f["body_parts"], f["description"],
                                         _procedure_codes(f["attributes"])), rules.terms)
            item = result.item_code if result.item_code in rules.items else ""
            if not item and result.modality and result.body_region:
                item = (rules.by_kind.get((result.modality, result.body_region,
                                           result.technique))
                        or rules.by_kind.get((result.modality, result.body_region, "any"), ""))
            found[fk] = item
            seen += [(u.field, u.value, int(f["hospital_id"]), u.problem)
                     for u in result.unmapped]
            saved.append({"study_fk": fk, "patient_fk": f["patient_fk"],
                          "study_date": f["study_date"], "item_code": item,
                          "modality": result.modality, "body_region": result.body_region,
                          "procedure": result.technique, "rules_version": rules.version,
                          "classified_at": now})
        repo.save_classifications(session, saved)
        if seen:
            repo.note_unmapped(session, seen, now)
        return found

    def classify_all(self, *, batch: int = 500) -> int:
        """Classify every study not classified under the current rules (a backfill; the
        check also classifies what it meets). Returns how many were classified."""
        done = 0
        while True:
            with guarded(self._db.write()) as session:
                rules = self._rules(session)
                fks = repo.unclassified(session, rules.version, batch)
                if not fks:
                    return done
                self._classify(session, rules, [int(f) for f in fks])
                done += len(fks)

    # -- the check ----------------------------------------------------------------------

    def check(self, actor: Actor, request: CheckRequest) -> CheckResult:
        """Comparable priors the rules say the ordering hospital should recognise.

        Commits the classification of the patient's recent studies, the check row (its id
        is the decision id) and an audit record naming the resident before returning.

        Raises
        ------
        InvalidInputError
            No patient key, no item, an unknown item or an unmapped procedure code (which
            is then listed for an administrator).
        NotFoundError
            The ordering hospital has no record of this patient (audited as denied).
        NotAuthorizedError
            The actor may not check orders (a resident), or names another hospital.
        """
        party = ordering_party(actor, hospital_code=request.hospital_code,
                               department=request.department)
        if not (request.national_id or request.patient_id):
            raise InvalidInputError("give the patient's national_id or patient_id")
        if not (request.item_code or request.procedure_code):
            raise InvalidInputError("give item_code or the hospital's procedure_code")
        nid_hash = None
        if request.national_id:
            nid_hash = self._protector.lookup_hash(
                NATIONAL_ID, parse_national_id(request.national_id).number)
        refused: NotFoundError | InvalidInputError | None = None
        result: CheckResult | None = None
        with guarded(self._db.write()) as session:
            rules = self._rules(session)
            local = None
            if request.patient_id:  # the hospital and its records in one round trip
                local = repo.hospital_and_local_patients(
                    session, hospital_id=party.hospital_id, code=party.hospital_code,
                    patient_id=request.patient_id.strip())
                if not local:
                    raise NotFoundError(f"unknown hospital {party.hospital_code!r}")
                h = local[0]
                hospital = _Hospital(int(h.id), h.code, h.name, h.level or "")
                local = [r for r in local if r.patient_fk is not None]
            else:
                hospital = self._hospital(session, party)
            resident_id, own_fk = self._patient(session, hospital.id, request, nid_hash,
                                                local)
            item, item_problem = self._item(session, rules, hospital.id, hospital.code,
                                             request)
            if own_fk is None:
                refused = NotFoundError(
                    "this hospital has no record of the patient: register the patient "
                    "(HIS registration feed) before checking")
            elif item is None:
                refused = InvalidInputError(item_problem)
            if refused is not None:
                self._audit.record(session, actor=actor, action="recognition.check",
                                   outcome="denied", resident_id=resident_id,
                                   reason="no-local-record" if own_fk is None else "no-item",
                                   detail={"hospital": hospital.code})
            else:
                assert item is not None and own_fk is not None
                result = self._run(session, rules, actor, party, hospital, item,
                                   resident_id, own_fk, request.order_ref.strip()[:64])
        if refused is not None:
            raise refused
        assert result is not None
        return result

    def _hospital(self, session: Session, party: Party) -> _Hospital:
        """The ordering hospital, cached for RULES_TTL seconds like the rules (a level
        change is seen within that): one round trip fewer per check."""
        key = (party.hospital_id, party.hospital_code if party.hospital_id is None else None)
        now = time.monotonic()
        cached = self._hospitals.get(key)
        if cached is not None and now - cached[1] < RULES_TTL:
            return cached[0]
        row = repo.hospital(session, hospital_id=party.hospital_id, code=party.hospital_code)
        if row is None:
            raise NotFoundError(f"unknown hospital {party.hospital_code!r}")
        found = _Hospital(int(row.id), row.code, row.name, row.level or "")
        if len(self._hospitals) > 10_000:
            self._hospitals.clear()
        self._hospitals[key] = (found, now)
        return found

    def _patient(self, session: Session, hospital_id: int, request: CheckRequest,
                 nid_hash: str | None, local: Sequence[Any] | None = None
                 ) -> tuple[int | None, int | None]:
        """(resident, the ordering hospital's own patient record) or (…, None);
        ``local``: the hospital's records of ``request.patient_id`` when already read."""
        if request.patient_id:
            found = (local if local is not None
                     else repo.local_patients(session, hospital_id, request.patient_id.strip()))
            if len(found) != 1:
                return None, None
            fk, state, resident = found[0][-3:]
            resident_id = int(resident) if state == "linked" and resident is not None else None
            if nid_hash is not None:  # both given: they must agree
                other = ids.resident_by_national_id(session, nid_hash)
                if other is None or other.id != resident_id:
                    return resident_id, None
            return resident_id, int(fk)
        assert nid_hash is not None
        resident = ids.resident_by_national_id(session, nid_hash)
        if resident is None:
            return None, None
        rid = int(resident.merged_into or resident.id)
        own = [fk for fk, h in repo.linked_patients(session, rid) if h == hospital_id]
        return rid, (own[0] if own else None)

    def _item(self, session: Session, rules: _Rules, hospital_id: int, hospital_code: str,
              request: CheckRequest) -> tuple[ItemView | None, str]:
        code = (request.item_code or "").strip().upper()
        if not code:
            proc = (request.procedure_code or "").strip()
            mapped = repo.code_map(session, hospital_id, proc)
            if mapped is None:
                repo.note_unmapped(session, [("order_code", f"{hospital_code}:{proc}"[:256],
                                              hospital_id, "unmapped")], self._clock())
                return None, (f"procedure_code {proc[:64]!r} of {hospital_code} is not mapped "
                              "to a catalogue item; it is listed for an administrator")
            code = mapped
        item = rules.items.get(code)
        if item is None or not item.active:
            return None, f"item_code {code[:32]!r} is not an active catalogue item"
        return item, ""

    def _run(self, session: Session, rules: _Rules, actor: Actor, party: Party,
             hospital: _Hospital, item: ItemView, resident_id: int | None, own_fk: int,
             order_ref: str = "") -> CheckResult:
        now = self._clock()
        today = now.astimezone(self._zone).date()
        since = today - timedelta(days=item.window_days)
        # Every record linked to the resident, in a sub-select (one round trip fewer).
        patients = (repo.resident_patients(resident_id) if resident_id is not None
                    else [own_fk])
        window = (f"{since:%Y%m%d}", f"{today:%Y%m%d}")
        # One round trip for the window's studies, their cached classification and report
        # status; only a study never classified (or under older rules) is classified now.
        rows = repo.candidates(session, patients, *window)
        stale = [int(r.id) for r in rows
                 if r.item_code is None or r.rules_version != rules.version
                 or r.classified_for != r.patient_fk]
        fresh = self._classify(session, rules, stale) if stale else {}
        matches = [r for r in rows
                   if fresh.get(int(r.id), r.item_code) == item.code]
        accepts = set(item.accept_levels.get(hospital.level, []))
        priors: list[Prior] = []
        skipped: Counter[str] = Counter()
        for c in matches:
            status = _REPORT_STATUS.get(c.report_rank, "none")
            if c.hospital_id == hospital.id:
                level_why = "a result of this hospital"
            elif c.hospital_level in accepts:
                level_why = (f"{hospital.level or 'unregistered'} hospitals recognise "
                             f"{c.hospital_level} results")
            else:
                skipped["level"] += 1
                continue
            if item.require_final_report and status != "final":
                skipped["no_final_report"] += 1
                continue
            # A final report says the exam is done; without one the study must have been
            # quiet for the settle time (DICOM has no "complete" flag without MPPS).
            if item.require_complete and (c.num_instances <= 0 or (
                    status != "final" and as_utc(c.updated_at) > now - self._settle)):
                skipped["incomplete"] += 1
                continue
            if item.require_qc and (c.qc or "") != "passed":
                skipped["qc"] += 1
                continue
            exam = date(int(c.study_date[:4]), int(c.study_date[4:6]), int(c.study_date[6:8]))
            days = (today - exam).days
            priors.append(Prior(
                c.study_instance_uid, c.study_date, days, c.hospital_code, c.hospital_name,
                c.hospital_level, item.code, item.name_zh, item.name_en, status,
                f"{item.name_en} {days} day(s) ago, within the {item.window_days}-day window; "
                f"report {status}; {level_why}"))
        uids = [p.study_instance_uid for p in priors]
        # An order feed may send the same order again (an MLLP resend, a HIS retry): the
        # order keeps its one check and decision id, so it is counted once.
        resent = repo.check_by_order(session, hospital.id, order_ref) if order_ref else None
        if resent is not None:
            repo.refresh_check(session, resent, len(priors), orjson.dumps(uids).decode())
            self._audit.record(session, actor=actor, action="recognition.check",
                               outcome="allowed", resource_type="decision",
                               resource_uid=resent, resident_id=resident_id,
                               reason="resent" if priors else "no-prior",
                               detail={"hospital": hospital.code, "item": item.code,
                                       "priors": uids, "order": order_ref})
            return CheckResult(resent, item.code, item.name_zh, item.name_en,
                               item.window_days, tuple(priors), dict(skipped))
        decision_id = str(uuid.uuid4())
        repo.add_check(session, {
            "public_id": decision_id, "at": now, "month": f"{today:%Y-%m}",
            "hospital_id": hospital.id, "hospital_level": hospital.level,
            "department": party.department, "actor_subject": actor.subject[:128],
            "resident_id": resident_id, "patient_fk": own_fk, "item_code": item.code,
            "priors": len(priors), "prior_uids": orjson.dumps(uids).decode(), "decision": "",
            "reason": "", "reason_text": "", "decided_at": None, "decided_by": "",
            "performed_at": None, "order_ref": order_ref})
        self._audit.record(session, actor=actor, action="recognition.check",
                           outcome="allowed", resource_type="decision",
                           resource_uid=decision_id, resident_id=resident_id,
                           reason="prompt" if priors else "no-prior",
                           detail={"hospital": hospital.code, "item": item.code,
                                   "priors": uids, "not_offered": dict(skipped),
                                   **({"order": order_ref} if order_ref else {})})
        return CheckResult(decision_id, item.code, item.name_zh, item.name_en,
                           item.window_days, tuple(priors), dict(skipped))

    # -- decisions ------------------------------------------------------------------------

    def _own_check(self, session: Session, actor: Actor, decision_id: str) -> Any:
        row = repo.check_by_public_id(session, decision_id.strip()[:36])
        if row is None or (not _any_hospital(actor)
                           and row.hospital_id != ordering_party(actor).hospital_id):
            # Another hospital's decision id looks exactly like an unknown one.
            raise NotFoundError("no such decision")
        return row

    def decide(self, actor: Actor, decision_id: str, decision: str, *, reason: str = "",
               text: str = "") -> None:
        """Record the doctor's decision once: ``accepted`` (a prior was offered) or
        ``repeat`` with a reason of :data:`REPEAT_REASONS` (``other`` needs ``text``).

        Raises InvalidInputError, NotFoundError (unknown or another hospital's decision),
        AlreadyExistsError (decided before).
        """
        if not _any_hospital(actor):
            ordering_party(actor)
        if decision not in DECISIONS:
            raise InvalidInputError(f"decision: {' or '.join(DECISIONS)}")
        if decision == "repeat" and reason not in REPEAT_REASONS:
            raise InvalidInputError(f"reason: one of {', '.join(REPEAT_REASONS)}")
        if decision == "repeat" and reason == "other" and not text.strip():
            raise InvalidInputError("text: say why (reason 'other')")
        with guarded(self._db.write()) as session:
            row = self._own_check(session, actor, decision_id)
            if row.decision:
                raise AlreadyExistsError(f"decision {decision_id} was recorded already "
                                         f"({row.decision})")
            if decision == "accepted" and row.priors == 0:
                raise InvalidInputError("no prior was offered for this check; nothing to "
                                        "accept")
            row.decision = decision
            row.reason = reason if decision == "repeat" else ""
            row.reason_text = text.strip()[:256] if decision == "repeat" else ""
            row.decided_at, row.decided_by = self._clock(), actor.subject[:128]
            session.flush()
            self._audit.record(session, actor=actor, action="recognition.decide",
                               outcome="success", resource_type="decision",
                               resource_uid=row.public_id, resident_id=row.resident_id,
                               reason=decision, detail={"reason": row.reason})

    def performed(self, actor: Actor, decision_id: str, *, at: datetime | None = None) -> None:
        """An order feed reports that the exam of this check was done (after all)."""
        if not _any_hospital(actor):
            ordering_party(actor)
        with guarded(self._db.write()) as session:
            row = self._own_check(session, actor, decision_id)
            if row.performed_at is None:
                row.performed_at = as_utc(at) if at else self._clock()
                session.flush()
                self._audit.record(session, actor=actor, action="recognition.performed",
                                   outcome="success", resource_type="decision",
                                   resource_uid=row.public_id, resident_id=row.resident_id,
                                   detail={"decision": row.decision})

    def performed_order(self, actor: Actor, order_ref: str, *,
                        at: datetime | None = None) -> str:
        """The order feed says the exam of the hospital's order ``order_ref`` was done:
        the latest check of that order (the actor's own hospital) is marked performed.
        Returns its decision id. Raises NotFoundError when no check has that order."""
        party = ordering_party(actor)
        ref = order_ref.strip()[:64]
        if not ref:
            raise InvalidInputError("order: give the hospital's order number")
        with guarded(self._db.read()) as session:
            hospital = self._hospital(session, party)
            decision_id = repo.check_by_order(session, hospital.id, ref)
        if decision_id is None:
            # Another hospital's order number looks exactly like an unknown one.
            raise NotFoundError(f"no check of order {ref!r} at this hospital")
        self.performed(actor, decision_id, at=at)
        return decision_id

    # -- figures --------------------------------------------------------------------------

    def savings(self, actor: Actor, *, months: Sequence[str] = (),
                hospital_code: str | None = None) -> list[SavingsRow]:
        """Per month, hospital, department and item: checks, prompts, decisions, repeats by
        reason, "accepted but performed anyway", cost and dose avoided (accepted and not
        performed; price of the ordering hospital's level)."""
        for m in months:
            if len(m) != 7 or m[4] != "-" or not (m[:4] + m[5:]).isdigit():
                raise InvalidInputError("month: YYYY-MM")
        with guarded(self._db.read()) as session:
            hospital_id = None
            if not _any_hospital(actor):
                if not actor.can(Permission.CHECK_RECOGNITION) or actor.hospital_id is None:
                    raise NotAuthorizedError("figures are for hospitals and administrators")
                hospital_id = actor.hospital_id
                if hospital_code and hospital_code != actor.hospital_code:
                    raise NotAuthorizedError("a hospital sees its own figures only")
            elif hospital_code:
                found = repo.hospital(session, code=hospital_code)
                if found is None:
                    raise NotFoundError(f"unknown hospital code {hospital_code[:64]!r}")
                hospital_id = found.id
            prices = {(p.item_code, p.level): p.price_yuan for p in repo.rows(session, "price")}
            doses = {i.code: i.typical_dose_msv for i in repo.rows(session, "item")}
            table: dict[tuple[str, str, str, str], dict[str, Any]] = {}
            for r in repo.savings(session, months=months, hospital_id=hospital_id):
                key = (r.month, r.hospital_code, r.department, r.item_code)
                acc = table.setdefault(key, {"checks": 0, "prompts": 0, "accepted": 0,
                                             "repeats": Counter(), "performed_after": 0,
                                             "undecided": 0, "cost": 0.0, "dose": 0.0})
                acc["checks"] += int(r.checks)
                acc["prompts"] += int(r.prompts or 0)
                if r.decision == "accepted":
                    kept = int(r.checks) - int(r.performed or 0)
                    acc["accepted"] += int(r.checks)
                    acc["performed_after"] += int(r.performed or 0)
                    acc["cost"] += kept * prices.get((r.item_code, r.hospital_level), 0.0)
                    acc["dose"] += kept * (doses.get(r.item_code) or 0.0)
                elif r.decision == "repeat":
                    acc["repeats"][r.reason] += int(r.checks)
                else:
                    acc["undecided"] += int(r.checks)
            return [SavingsRow(k[0], k[1], k[2], k[3], v["checks"], v["prompts"],
                               v["accepted"], dict(v["repeats"]), v["performed_after"],
                               v["undecided"], round(v["cost"], 2), round(v["dose"], 3))
                    for k, v in sorted(table.items())]


def _who(actor: Actor) -> str:
    """The history's "who": the subject, and the name people know when there is one."""
    if actor.display and actor.display != actor.subject:
        return f"{actor.subject} ({actor.display})"[:128]
    return actor.subject[:128]


def _procedure_codes(attributes_json: str) -> list[tuple[str, str, str]]:
    """(scheme, code, meaning) of ProcedureCodeSequence (0008,1032) in a study's DICOM JSON."""
    try:
        attrs = orjson.loads(attributes_json or "{}")
    except orjson.JSONDecodeError:
        return []
    found = []
    for item in (attrs.get("00081032") or {}).get("Value") or []:
        def one(tag: str, item: dict[str, Any] = item) -> str:
            values = (item.get(tag) or {}).get("Value") or [""]
            return str(values[0] or "")
        found.append((one("00080102"), one("00080100"), one("00080104")))
    return found
