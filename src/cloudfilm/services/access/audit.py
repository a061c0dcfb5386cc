"""The audit trail: every access decision, sign-in, grant change, link change and export.

Rows are append-only and chained: each stores ``prev_hash`` and
``hash = SHA-256(prev_hash + canonical JSON of the row)``, in ``seq`` order, so an edited,
deleted or reordered row breaks the chain at that row (``cloudfilm audit verify``). The
chain's head (last ``seq`` and ``hash``) is a single row, locked by every appender
(``SELECT ... FOR UPDATE`` on PostgreSQL, the one write lock of ``BEGIN IMMEDIATE`` on
SQLite), so concurrent writers from several processes extend one chain. Database triggers
refuse UPDATE and DELETE on ``audit_event`` (migration 0005); the chain catches whoever
drops them.

Where a record is written:

- ``record(conn, ...)`` appends inside the caller's write transaction (``Database.write()``
  or ``Database.writing()``): sign-ins, grant and link changes commit with their record.
- Read paths (QIDO, WADO, C-FIND, C-MOVE, C-GET) decide on a read-only connection and then
  call ``write(..., conn=)``, which commits the record *before* any data is returned (in
  the decision's own transaction on PostgreSQL, in a short write transaction on SQLite);
  if it fails the request fails (:class:`ResourceUnavailableError`): there is no access
  without its record. Searches, retrieves and the viewer's frame records decide on
  ``Database.auditing_read()``: committed before the answer, without waiting for the disk
  flush (a power loss may lose the last few; a process crash loses none).

No personal data goes into a record: ids, UIDs, hashed client addresses and reasons.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
from prometheus_client import Counter

from cloudfilm.infrastructure.db import access_repository as repo
from cloudfilm.infrastructure.db.session import Database, DatabaseUnavailableError, dialect_of
from cloudfilm.services.errors import NotAuthorizedError, ResourceUnavailableError
from cloudfilm.services.kernel.actor import Actor, Permission
from cloudfilm.services.kernel.time import aware

logger = logging.getLogger(__name__)

Outcome = Literal["allowed", "denied", "success", "failure"]

# Appended inside the caller's transaction: a rolled-back one still counted here (the chain
# length gauge of /metrics is the committed figure). Outcomes are a fixed set.
APPENDED = Counter("cloudfilm_audit_records_appended_total",
                   "Audit records appended by this process", ["outcome"])

_HASHED_FIELDS = (
    "seq", "at", "actor_kind", "actor_subject", "actor_hospital_id", "actor_hospital_code",
    "actor_display", "actor_department", "address_hash", "action", "resource_type",
    "resource_uid", "resident_id", "outcome", "reason", "detail", "prev_hash",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One record to append (the service adds time, sequence and hashes)."""

    actor: Actor
    action: str
    outcome: Outcome
    resource_type: str = ""
    resource_uid: str = ""
    resident_id: int | None = None
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    # Residents the record names besides ``resident_id`` (one record for an answer that
    # carries several residents' data): listed in ``detail["residents"]``, which the hash
    # covers, and indexed in ``audit_event_resident`` for their access logs.
    residents: tuple[int, ...] = ()


def per_resident(actor: Actor, action: str, resource_type: str, resource_uid: str,
                 owners: Mapping[str, int | None], *, key: str, reason: str = "",
                 detail: Mapping[str, Any] | None = None) -> list[AuditEntry]:
    """The record of an answer that carries residents' data: one record naming them all.

    Parameters
    ----------
    owners
        Each UID (study, report) in the answer -> the resident it is linked to (None:
        unlinked, a conflict or unmatched).
    key
        Name of the UID list in ``detail`` (``studies``, ``reports``): every UID of the
        answer is listed, nothing is cut.
    detail
        What the record carries besides (matches, offset, the query's keys).

    Returns
    -------
    list[AuditEntry]
        One record (an empty answer is still a search that happened). With one resident
        (or none) in the answer it is that resident's record (``resident_id``) with
        ``detail["residents"]`` their count (0 or 1). With several, ``resident_id`` is
        None, ``detail["residents"]`` is the sorted list of their ids and
        ``detail["by_resident"]`` maps each (as text) to its UIDs; each of them finds the
        record in their access log (``AuditEntry.residents``). One chained record, where
        this wrote one per resident: ~54 hashes, rows and index entries for a 2-day range
        at province scale.
    """
    groups: dict[int | None, list[str]] = {}
    for uid, resident in owners.items():
        groups.setdefault(resident, []).append(uid)
    named = sorted(r for r in groups if r is not None)
    info: dict[str, Any] = {**(detail or {}), key: sorted(owners)}
    if len(named) <= 1:
        info["residents"] = len(named)
        return [AuditEntry(actor, action, "allowed", resource_type, resource_uid,
                           resident_id=named[0] if named else None, reason=reason,
                           detail=info)]
    info["residents"] = named
    info["by_resident"] = {str(r): sorted(groups[r]) for r in named}
    return [AuditEntry(actor, action, "allowed", resource_type, resource_uid,
                       resident_id=None, reason=reason, detail=info, residents=tuple(named))]


def named_residents(detail: str) -> set[int] | None:
    """The residents a record names in its ``detail`` besides ``resident_id`` (a list
    under ``residents``), or None."""
    if '"residents":[' not in detail:  # orjson writes no spaces: skip parsing the rest
        return None
    listed = orjson.loads(detail).get("residents")
    return {int(r) for r in listed} if isinstance(listed, list) else None

def _require_listed(entry: AuditEntry, detail: str) -> None:
    """A record naming several residents must list them in its hashed ``detail`` (what
    ``audit verify`` checks the ``audit_event_resident`` rows against)."""
    if entry.residents and named_residents(detail) != set(entry.residents):
        raise ValueError("an audit record naming several residents must list them in "
                         "detail['residents'] (use per_resident)")



@dataclass(frozen=True, slots=True)
class ChainReport:
    """Result of walking the chain: ``ok``, rows checked, and the first broken row."""

    ok: bool
    rows: int
    broken_seq: int | None = None
    broken_id: int | None = None
    problem: str = ""


@dataclass(frozen=True, slots=True)
class AccessLogEntry:
    """What a resident sees of one access to their data."""

    at: datetime
    who: str
    kind: str
    hospital: str
    department: str
    action: str
    resource_type: str
    resource_uid: str
    outcome: str


def _timestamp(at: datetime) -> str:
    # SQLite returns naive datetimes (stored as UTC); both dialects keep microseconds.
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical(values: dict[str, Any]) -> bytes:
    """The canonical JSON of a row's hashed fields (sorted keys, UTC time, no spaces)."""
    data = {k: values[k] for k in _HASHED_FIELDS}
    data["at"] = _timestamp(values["at"])
    return orjson.dumps(data, option=orjson.OPT_SORT_KEYS)


def _canonical_around_chain(values: dict[str, Any]) -> tuple[str, str]:
    """The canonical JSON of ``values`` as text, cut where ``prev_hash``'s value and
    ``seq``'s go: ``(up to the opening quote of prev_hash, from its closing quote up to
    seq's value)``; the JSON ends with ``}`` after seq (the last key). No key or string
    value can hold an unescaped ``"prev_hash":""`` (quotes inside strings are escaped), so
    the cut is unambiguous."""
    data = {k: values[k] for k in _HASHED_FIELDS}
    data["at"] = _timestamp(values["at"])
    data["prev_hash"], data["seq"] = "", 0
    text = orjson.dumps(data, option=orjson.OPT_SORT_KEYS).decode()
    head, found, tail = text.partition('"prev_hash":""')
    if not found or not tail.endswith('"seq":0}'):
        raise AssertionError("canonical JSON does not have the expected shape")
    return head + '"prev_hash":"', '"' + tail[: -len("0}")]


def row_hash(values: dict[str, Any]) -> str:
    """``SHA-256(prev_hash + canonical JSON)`` as hex."""
    return hashlib.sha256(values["prev_hash"].encode() + canonical(values)).hexdigest()


def _deciding(conn: Any) -> bool:
    options = getattr(conn, "get_execution_options", None)
    return bool(options is not None and options().get("cloudfilm_decide"))


class AuditService:
    """Append to, read and verify the audit trail.

    Parameters
    ----------
    db
        The index database (the trail lives beside what it protects, so a record commits
        atomically with the change it describes).
    address_key
        Key of the client-address hash (HMAC-SHA256): addresses can be correlated in the
        trail but not read back, and not brute-forced from the 2^32 IPv4 space without it.
    """

    def __init__(self, db: Database, *, address_key: bytes) -> None:
        self._db = db
        self._address_key = address_key

    # -- writing --------------------------------------------------------------------------

    def hash_address(self, address: str) -> str:
        """Keyed hash of a client address (first 32 hex digits); "" for no address."""
        if not address:
            return ""
        return hmac.new(self._address_key, address.encode(), hashlib.sha256).hexdigest()[:32]

    def record(self, conn: Any, *, actor: Actor, action: str, outcome: Outcome,
               resource_type: str = "", resource_uid: str = "",
               resident_id: int | None = None, reason: str = "",
               detail: dict[str, Any] | None = None) -> None:
        """Append one record inside the caller's write transaction.

        Parameters
        ----------
        conn
            A Session from ``Database.write()`` or a Connection from
            ``Database.writing()``; the record commits (or rolls back) with it.
        actor, action, outcome, resource_type, resource_uid, resident_id, reason, detail
            What happened; ``detail`` is JSON without personal data.

        Raises
        ------
        sqlalchemy.exc.SQLAlchemyError
            Propagated so that the caller's transaction fails with it.
        """
        self.record_many(conn, [AuditEntry(actor, action, outcome, resource_type,
                                           resource_uid, resident_id, reason,
                                           detail or {})])

    def record_many(self, conn: Any, entries: Sequence[AuditEntry], *,
                    at: datetime | None = None) -> None:
        """Append several records in one statement (one head lock, one INSERT), stamped
        now (``at``: a given time, for tests that replay a day)."""
        if not entries:
            return
        now = at or datetime.now(UTC)
        if len(entries) == 1 and dialect_of(conn) == "postgresql" and self._append_one_pg(
                conn, entries[0], now):
            return
        seq, prev = repo.lock_chain_head(conn)
        rows: list[dict[str, Any]] = []
        named: list[tuple[int, int]] = []
        for entry in entries:
            seq += 1
            values = _values(entry, seq=seq, at=now, prev_hash=prev)
            values["hash"] = prev = row_hash(values)
            rows.append(values)
            if entry.residents:
                _require_listed(entry, values["detail"])
                named.extend((seq, r) for r in entry.residents)
        repo.append_audit(conn, rows, seq=seq, last_hash=prev, named=named)
        for entry in entries:
            APPENDED.labels(entry.outcome).inc()

    def _append_one_pg(self, conn: Any, entry: AuditEntry, now: datetime) -> bool:
        """One record on PostgreSQL: head lock, append, head move in one statement, the
        hash computed by the server from the canonical JSON cut around the two values it
        fills in (``seq``, ``prev_hash``). False when the head row is missing."""
        values = _values(entry, seq=0, at=now, prev_hash="")
        before_prev, before_seq = _canonical_around_chain(values)
        _require_listed(entry, values["detail"])
        del values["seq"], values["prev_hash"]
        if repo.append_chained_pg(conn, values, before_prev=before_prev,
                                  before_seq=before_seq, named=entry.residents) is None:
            return False
        APPENDED.labels(entry.outcome).inc()
        return True

    def study_owners(self, conn: Any, study_uids: Sequence[str]) -> dict[str, int | None]:
        """Each study of an answer -> its linked resident, for :func:`per_resident`."""
        return repo.study_residents(conn, study_uids)

    def write(self, entries: Iterable[AuditEntry], *, conn: Any = None) -> None:
        """Append records and commit them before this returns.

        Read paths call this after deciding and before answering, passing the connection
        the decision was made on. The records join that transaction, which is then
        committed: the decision and its record in one transaction, with one commit, on
        PostgreSQL always and on SQLite for a ``Database.auditing_read()`` connection (a
        write transaction from its start). On an ``auditing_read()`` connection the commit
        does not wait for the disk flush (the connection refuses any other write); on any
        other, it does. SQLite cannot safely turn a read transaction into a
        write one (``SQLITE_BUSY_SNAPSHOT`` when another writer committed since it began),
        so records of a decision made on a ``reading()`` connection get their own short
        ``BEGIN IMMEDIATE`` transaction there.

        Raises
        ------
        ResourceUnavailableError
            The record could not be committed; the caller must not return data.
        """
        batch = list(entries)
        try:
            if conn is not None and (self._db.dialect == "postgresql" or _deciding(conn)):
                self.record_many(conn, batch)
                conn.commit()
            else:
                with self._db.writing() as own:
                    self.record_many(own, batch)
        except DatabaseUnavailableError as exc:
            logger.error("cloudfilm.audit.write_failed", extra={"error": str(exc)})
            raise ResourceUnavailableError(
                "the access could not be recorded in the audit trail, so it was refused; "
                "retry later") from exc
        except Exception as exc:
            logger.exception("cloudfilm.audit.write_failed")
            raise ResourceUnavailableError(
                "the access could not be recorded in the audit trail, so it was refused; "
                "retry later") from exc

    # -- reading --------------------------------------------------------------------------

    def access_log(self, actor: Actor, *, limit: int = 100,
                   before: int | None = None) -> list[AccessLogEntry]:
        """Who looked at the resident's data (theirs and their family members'), newest
        first; their own accesses are left out.

        Raises
        ------
        NotAuthorizedError
            ``actor`` is not a signed-in resident.
        """
        if not actor.can(Permission.READ_OWN_ACCESS_LOG) or not actor.resident_ids:
            raise NotAuthorizedError("only a signed-in resident can read their access log")
        limit = max(1, min(limit, 500))
        try:
            with self._db.reading() as conn:
                rows = repo.audit_events(conn, resident_ids=sorted(actor.resident_ids),
                                         exclude_subject=actor.subject, limit=limit,
                                         before_seq=before)
                names = repo.hospital_names(
                    conn, sorted({r.actor_hospital_id for r in rows if r.actor_hospital_id}))
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        out = []
        for r in rows:
            hospital = names.get(r.actor_hospital_id, (r.actor_hospital_code, ""))
            out.append(AccessLogEntry(
                at=aware(r.at), who=r.actor_display or _kind_label(r.actor_kind),
                kind=r.actor_kind, hospital=hospital[1] or hospital[0],
                department=r.actor_department, action=r.action,
                resource_type=r.resource_type, resource_uid=r.resource_uid,
                outcome=r.outcome))
        return out

    def events(self, actor: Actor, *, limit: int = 100, before: int | None = None,
               **filters: Any) -> list[dict[str, Any]]:
        """Audit records for administrators (``filters``: actor_subject, action, outcome,
        resource_uid, resident_id, since, until). The reading is itself recorded.

        Raises
        ------
        NotAuthorizedError
            ``actor`` is not an administrator or the local operator.
        """
        if not actor.can(Permission.READ_AUDIT):
            self.write([AuditEntry(actor, "audit.read", "denied", reason="not-admin")])
            raise NotAuthorizedError("only administrators can read the audit trail")
        resident = filters.pop("resident_id", None)
        limit = max(1, min(limit, 1000))
        self.write([AuditEntry(actor, "audit.read", "allowed", resident_id=resident,
                               detail={k: str(v) for k, v in filters.items() if v})])
        try:
            with self._db.reading() as conn:
                rows = repo.audit_events(
                    conn, resident_ids=[resident] if resident is not None else None,
                    limit=limit, before_seq=before,
                    **{k: v for k, v in filters.items() if v is not None})
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        return [_as_dict(r) for r in rows]

    def fhir_bundle(self, actor: Actor, **query: Any) -> dict[str, Any]:
        """The same records as :meth:`events`, as a FHIR R4 Bundle of AuditEvent resources.

        References
        ----------
        HL7 FHIR R4 AuditEvent; DICOM PS3.15 A.5 (audit message event IDs, DCM codes).
        """
        events = self.events(actor, **query)
        return {"resourceType": "Bundle", "type": "collection", "total": len(events),
                "entry": [{"resource": fhir_audit_event(e)} for e in events]}

    # -- verification ---------------------------------------------------------------------

    def verify(self) -> ChainReport:
        """Walk the chain from the first row; report the first row that does not hold.

        A row is broken when its ``seq`` is not the next number, its ``prev_hash`` is not
        the previous row's hash, or its hash is not what its content hashes to. The head
        must end where the rows end (a truncated tail is detected).
        """
        checked = 0
        expected_prev, expected_seq = repo.GENESIS_HASH, 1
        # Residents named by records (hashed) against their index rows, a window at a time.
        named: dict[int, set[int]] = {}
        window = 0
        try:
            with self._db.reading() as conn:
                for row in repo.chain_rows(conn):
                    values = dict(row._mapping)
                    problem = ""
                    if values["seq"] != expected_seq:
                        problem = f"sequence gap: expected {expected_seq}, found {values['seq']}"
                    elif values["prev_hash"] != expected_prev:
                        problem = "prev_hash does not match the previous row (row removed?)"
                    elif row_hash(values) != values["hash"]:
                        problem = "content does not match its hash (row edited)"
                    if problem:
                        return ChainReport(False, checked, values["seq"], values["id"], problem)
                    listed = named_residents(values["detail"] or "")
                    if listed is not None:
                        named[values["seq"]] = listed
                    checked += 1
                    expected_prev, expected_seq = values["hash"], expected_seq + 1
                    if checked % _NAMED_WINDOW == 0:
                        broken = _check_named(conn, window, expected_seq - 1, named)
                        if broken is not None:
                            return ChainReport(False, checked, broken, None, _NAMED_PROBLEM)
                        named.clear()
                        window = expected_seq - 1
                broken = _check_named(conn, window, None, named)
                if broken is not None:
                    return ChainReport(False, checked, broken, None, _NAMED_PROBLEM)
                head = repo.chain_head(conn)
        except DatabaseUnavailableError as exc:
            raise ResourceUnavailableError(str(exc)) from exc
        if head is not None and head != (expected_seq - 1, expected_prev):
            return ChainReport(False, checked, head[0], None,
                               f"chain head says seq {head[0]} but the rows end at "
                               f"{expected_seq - 1} (rows removed from the end?)")
        return ChainReport(True, checked)


_NAMED_WINDOW = 2000
_NAMED_PROBLEM = ("the residents indexed for this record (audit_event_resident) are not the "
                  "ones its hashed detail names (index row added or removed)")


def _check_named(conn: Any, after: int, upto: int | None,
                 expected: dict[int, set[int]]) -> int | None:
    """The first seq in ``(after, upto]`` whose residents' index rows differ from what
    its record names (``upto`` None: to the end), or None."""
    found = repo.named_residents(conn, after, upto if upto is not None else 2**62)
    if found == expected:
        return None
    return min(s for s in found.keys() | expected.keys() if found.get(s) != expected.get(s))


def _values(entry: AuditEntry, *, seq: int, at: datetime, prev_hash: str) -> dict[str, Any]:
    actor = entry.actor
    return {
        "seq": seq, "at": at, "actor_kind": actor.kind, "actor_subject": actor.subject[:128],
        "actor_hospital_id": actor.hospital_id, "actor_hospital_code": (actor.hospital_code
                                                                        or "")[:64],
        "actor_display": actor.display[:256], "actor_department": actor.department[:128],
        "address_hash": actor.address[:64], "action": entry.action[:32],
        "resource_type": entry.resource_type[:16], "resource_uid": entry.resource_uid[:64],
        "resident_id": entry.resident_id, "outcome": entry.outcome, "reason": entry.reason[:128],
        "detail": orjson.dumps(entry.detail, option=orjson.OPT_SORT_KEYS).decode(),
        "prev_hash": prev_hash,
    }


def _kind_label(kind: str) -> str:
    return {"operator": "platform operator", "admin": "administrator",
            "hospital": "hospital system", "doctor": "doctor",
            "resident": "resident"}.get(kind, kind)


def _as_dict(row: Any) -> dict[str, Any]:
    data = dict(row._mapping)
    data["at"] = _timestamp(data["at"])
    data["detail"] = orjson.loads(data["detail"] or "{}")
    return data


# DICOM audit event IDs (PS3.15 A.5.3 / DCM): what each action is, and FHIR's action code.
_EVENT_TYPES: dict[str, tuple[str, str, str]] = {
    "search": ("110112", "Query", "E"),
    "retrieve": ("110103", "DICOM Instances Accessed", "R"),
    "metadata": ("110103", "DICOM Instances Accessed", "R"),
    "render": ("110103", "DICOM Instances Accessed", "R"),
    "frames": ("110103", "DICOM Instances Accessed", "R"),
    "bulkdata": ("110103", "DICOM Instances Accessed", "R"),
    "export": ("110106", "Export", "R"),
    "store": ("110107", "Import", "C"),
    "sign_in": ("110114", "User Authentication", "E"),
    "audit.read": ("110101", "Audit Log Used", "R"),
}


def fhir_audit_event(event: dict[str, Any]) -> dict[str, Any]:
    """One audit record (as returned by :meth:`AuditService.events`) as a FHIR R4
    AuditEvent."""
    code, display, action = _EVENT_TYPES.get(
        event["action"], ("110110", "Patient Record", "E"))
    ok = event["outcome"] in ("allowed", "success")
    agent: dict[str, Any] = {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                             "extra-security-role-type", "code": "humanuser"
                             if event["actor_kind"] in ("doctor", "resident", "admin")
                             else "datacollector", "display": event["actor_kind"]}]},
        "who": {"identifier": {"system": "urn:cloudfilm:actor",
                               "value": event["actor_subject"]},
                "display": event["actor_display"] or event["actor_kind"]},
        "requestor": True,
    }
    if event["actor_hospital_code"]:
        agent["location"] = {"display": event["actor_hospital_code"]}
    if event["address_hash"]:
        agent["network"] = {"address": event["address_hash"], "type": "5"}  # 5: URI
    entities: list[dict[str, Any]] = []
    if event["resource_uid"]:
        entities.append({
            "what": {"identifier": {"system": "urn:dicom:uid",
                                    "value": f"urn:oid:{event['resource_uid']}"}},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                     "code": "2", "display": "System Object"},
            "name": event["resource_type"]})
    # The record's resident, or each of the residents one record names (an answer with
    # several residents' data: ``per_resident``).
    named = event["detail"].get("residents") if isinstance(event["detail"], dict) else None
    people = ([event["resident_id"]] if event["resident_id"] is not None
              else named if isinstance(named, list) else [])
    for person in people:
        entities.append({
            "what": {"reference": f"Patient/{person}"},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type",
                     "code": "1", "display": "Person"}})
    return {
        "resourceType": "AuditEvent",
        "id": str(event["seq"]),
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": code,
                 "display": display},
        "subtype": [{"system": "urn:cloudfilm:action", "code": event["action"]}],
        "action": action,
        "recorded": event["at"],
        # 0 success, 4 minor failure (a refused access is the system working as meant).
        "outcome": "0" if ok else "4",
        "outcomeDesc": event["reason"],
        "agent": [agent],
        "source": {"observer": {"display": "cloudfilm"},
                   "type": [{"system": "http://terminology.hl7.org/CodeSystem/"
                             "security-source-type", "code": "4",
                             "display": "Application Server"}]},
        "entity": entities,
    }
