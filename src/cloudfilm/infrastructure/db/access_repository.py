"""Queries of the access domain: what the policy needs to decide, the SQL restriction that
filters searches, and the hash-chained audit trail. No commits: the service owns the unit of
work (``Database.reading()`` for decisions, ``Database.writing()`` for audit records).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Table,
    Update,
    and_,
    bindparam,
    false,
    func,
    insert,
    literal,
    or_,
    select,
    union,
    update,
)
from sqlalchemy import Text as SqlText
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db.models import (
    AuditChainHead,
    AuditEvent,
    AuditEventResident,
    Hospital,
    PatientLink,
    Report,
    Study,
)
from cloudfilm.infrastructure.db.session import as_utc, dialect_of

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first audit row (and the hash of the empty chain)."""

_HEAD_ID = 1
_AUDIT = cast(Table, AuditEvent.__table__)
_HEAD = cast(Table, AuditChainHead.__table__)
_NAMED = cast(Table, AuditEventResident.__table__)

Executor = Connection | Session



# --- decisions -----------------------------------------------------------------------------


def study_facts(conn: Executor, study_uid: str) -> Any:
    """``(id, hospital_id, hospital_code, resident_id)`` of a study, None when absent.

    ``resident_id`` is the resident its patient record is *linked* to (a conflict or an
    unlinked record belongs to nobody yet, so only its hospital sees it). One indexed
    look-up: ``study.study_instance_uid`` and ``patient_link.patient_fk`` are unique.
    """
    return conn.execute(_STUDY_FACTS, {"study_uid": study_uid}).first()


# Built once (every WADO/metadata request decides on it): constructing it per call cost
# more CPU than running it.
_STUDY_FACTS = (
    select(Study.id, Study.hospital_id, Hospital.code, PatientLink.resident_id)
    .join(Hospital, Hospital.id == Study.hospital_id)
    .outerjoin(PatientLink, and_(PatientLink.patient_fk == Study.patient_fk,
                                 PatientLink.state == "linked"))
    .where(Study.study_instance_uid == bindparam("study_uid"))
)


def study_residents(conn: Executor, study_uids: Sequence[str]) -> dict[str, int | None]:
    """Each given study -> the resident its record is linked to (None: nobody yet), for
    the audit of an answer that carries several studies. One indexed query."""
    if not study_uids:
        return {}
    found: dict[str, int | None] = dict.fromkeys(study_uids)
    for start in range(0, len(study_uids), _IN_CHUNK):
        rows = conn.execute(
            select(Study.study_instance_uid, PatientLink.resident_id)
            .join(PatientLink, and_(PatientLink.patient_fk == Study.patient_fk,
                                    PatientLink.state == "linked"))
            .where(Study.study_instance_uid.in_(list(study_uids[start:start + _IN_CHUNK])))
        ).all()
        found.update({r[0]: r[1] for r in rows})
    return found


def patient_residents(conn: Executor, patient_fks: Sequence[int]) -> dict[int, int]:
    """Patient record id -> linked resident, for the given records (unlinked are left
    out)."""
    wanted = sorted(set(patient_fks))
    found: dict[int, int] = {}
    for start in range(0, len(wanted), _IN_CHUNK):
        rows = conn.execute(select(PatientLink.patient_fk, PatientLink.resident_id).where(
            PatientLink.patient_fk.in_(wanted[start:start + _IN_CHUNK]),
            PatientLink.state == "linked")).all()
        found.update({r[0]: r[1] for r in rows if r[1] is not None})
    return found


_IN_CHUNK = 1000
"""UIDs per IN list: a QIDO page is at most ``http.max_query_results`` long."""


def _linked_patients(resident_ids: Sequence[int]) -> Any:
    return select(PatientLink.patient_fk).where(
        PatientLink.resident_id.in_(list(resident_ids)), PatientLink.state == "linked")


def linked_patient_ids(conn: Executor, resident_ids: Sequence[int]) -> dict[int, list[int]]:
    """resident id -> the ids of the hospital patient records linked to them (one query).

    A search passes them to :func:`visible_studies` as values: ``patient_fk = ANY(...)`` is
    an index condition PostgreSQL can OR with the hospital's own index (BitmapOr), where
    ``patient_fk IN (SELECT ...)`` is a filter on every study of a date range."""
    found: dict[int, list[int]] = {r: [] for r in resident_ids}
    if resident_ids:
        for resident, patient in conn.execute(
                select(PatientLink.resident_id, PatientLink.patient_fk).where(
                    PatientLink.resident_id.in_(sorted(set(resident_ids))),
                    PatientLink.state == "linked")):
            if resident is not None:
                found[int(resident)].append(int(patient))
    return found


def visible_studies(
    *,
    hospital_id: int | None = None,
    hospital_code: str | None = None,
    resident_ids: Sequence[int] = (),
    granted: Mapping[int, frozenset[str] | None] | None = None,
    patients: Mapping[int, Sequence[int]] | None = None,
) -> ColumnElement[bool]:
    """A WHERE clause on ``study`` that keeps only the studies an actor may see.

    Parameters
    ----------
    hospital_id, hospital_code
        Studies produced by this hospital (the code is resolved in SQL, so a DIMSE peer
        known only by its code costs no extra round trip).
    resident_ids
        Studies of patient records linked to these residents.
    granted
        resident id -> granted StudyInstanceUIDs (None: all of that resident's studies).
    patients
        resident id -> linked patient record ids (:func:`linked_patient_ids`), for every
        resident named above; None: looked up inside the statement (a subquery).

    Returns
    -------
    ColumnElement
        ``false()`` when nothing is visible: unknown means no.
    """
    if not resident_ids and not granted:
        return _hospital_studies(hospital_id, hospital_code)
    return _visible(Study.hospital_id, Study.patient_fk, Study.study_instance_uid,
                    hospital_id=hospital_id, hospital_code=hospital_code,
                    resident_ids=resident_ids, granted=granted, patients=patients)


@functools.lru_cache(maxsize=1024)
def _hospital_studies(hospital_id: int | None, hospital_code: str | None
                      ) -> ColumnElement[bool]:
    """A hospital's (or nobody's) restriction, built once per hospital: every search by a
    DIMSE peer or a hospital system uses it, and the same element object lets the search
    reuse its statement (``query_repository.search_studies``). Elements are immutable."""
    return _visible(Study.hospital_id, Study.patient_fk, Study.study_instance_uid,
                    hospital_id=hospital_id, hospital_code=hospital_code,
                    resident_ids=(), granted=None)


def visible_reports(
    *,
    hospital_id: int | None = None,
    hospital_code: str | None = None,
    resident_ids: Sequence[int] = (),
    granted: Mapping[int, frozenset[str] | None] | None = None,
) -> ColumnElement[bool]:
    """The same rules as :func:`visible_studies`, as a WHERE clause on ``report`` alone
    (no join, so a search walks the report table's own indexes): a linked report carries
    its study's hospital, ``patient_fk`` and ``study_instance_uid``. A *held* report (no
    study yet) is therefore visible to its own hospital, to the resident its patient record
    is linked to, and to a doctor with a grant to all of that resident's records; a grant
    naming studies names only linked reports.
    """
    return _visible(Report.hospital_id, Report.patient_fk, Report.study_instance_uid,
                    hospital_id=hospital_id, hospital_code=hospital_code,
                    resident_ids=resident_ids, granted=granted,
                    named_study=Report.study_fk.is_not(None))


def _visible(hospital_col: Any, patient_col: Any, uid_col: Any, *,
             hospital_id: int | None, hospital_code: str | None, resident_ids: Sequence[int],
             granted: Mapping[int, frozenset[str] | None] | None,
             named_study: ColumnElement[bool] | None = None,
             patients: Mapping[int, Sequence[int]] | None = None) -> ColumnElement[bool]:
    """The visibility rules over a table's hospital, patient record and study UID columns."""

    def linked(residents: Sequence[int]) -> Any:
        if patients is None:
            return _linked_patients(residents)
        return sorted({p for r in residents for p in patients.get(r, ())})

    parts: list[ColumnElement[bool]] = []
    if hospital_id is not None:
        parts.append(hospital_col == hospital_id)
    elif hospital_code:
        parts.append(hospital_col == select(Hospital.id)
                     .where(Hospital.code == hospital_code).scalar_subquery())
    people = [*resident_ids, *(r for r, scope in (granted or {}).items() if scope is None)]
    if people:
        parts.append(patient_col.in_(linked(people)))
    for resident, scope in (granted or {}).items():
        if scope:
            # The UID must also belong to that resident: a grant cannot open someone else's
            # study by naming its UID.
            named = [uid_col.in_(sorted(scope)), patient_col.in_(linked([resident]))]
            if named_study is not None:
                named.insert(0, named_study)
            parts.append(and_(*named))
    if not parts:
        return false()
    return or_(*parts) if len(parts) > 1 else parts[0]


def patient_resident(conn: Executor, patient_fk: int | None) -> int | None:
    """The resident a hospital's patient record is linked to, if any."""
    if patient_fk is None:
        return None
    return conn.execute(select(PatientLink.resident_id).where(
        PatientLink.patient_fk == patient_fk, PatientLink.state == "linked")).scalar()


# --- audit chain ---------------------------------------------------------------------------


def lock_chain_head(conn: Executor) -> tuple[int, str]:
    """``(seq, hash)`` of the chain's last row, locked until the transaction ends.

    PostgreSQL: ``SELECT ... FOR UPDATE`` on the single head row serialises appenders.
    SQLite: the caller's ``BEGIN IMMEDIATE`` (``Database.writing()``) already holds the
    database's one write lock. A missing head row (fresh or truncated table) is created.
    """
    stmt = _LOCK_HEAD_PG if dialect_of(conn) == "postgresql" else _READ_HEAD
    row = conn.execute(stmt).first()
    if row is None:
        dialect_insert = pg_insert if dialect_of(conn) == "postgresql" else sqlite_insert
        conn.execute(dialect_insert(_HEAD).values(id=_HEAD_ID, seq=0, hash=GENESIS_HASH)
                     .on_conflict_do_nothing())
        row = conn.execute(stmt).first()
    assert row is not None
    return int(row[0]), str(row[1])


def append_audit(conn: Executor, rows: Sequence[dict[str, Any]], *, seq: int,
                 last_hash: str, named: Sequence[tuple[int, int]] = ()) -> None:
    """Insert chained rows (``seq``/``prev_hash``/``hash`` already set) and move the head.

    ``named``: ``(seq, resident_id)`` of the residents a record names besides its
    ``resident_id`` (one record for an answer with several residents' data), indexed in
    ``audit_event_resident`` for their access logs."""
    batch = list(rows)
    if dialect_of(conn) == "postgresql" and len(batch) == 1:
        # One statement (a data-modifying CTE): one round trip instead of two. Built once
        # per column set with bound parameters: ``.values(batch)`` embedded the row and was
        # compiled afresh for every record (a third of a QIDO request's CPU, measured).
        [row] = batch
        params = {f"a_{k}": v for k, v in row.items()}
        params.update(head_seq=seq, head_hash=last_hash)
        if named and all(s == row["seq"] for s, _ in named):
            # The residents' index rows in the same statement: still one round trip.
            params.update(n_seq=row["seq"], n_ids=[r for _, r in named])
            conn.execute(_append_one(tuple(row), named=True), params)
            return
        conn.execute(_append_one(tuple(row)), params)
        if named:
            _insert_named(conn, named)
        return
    if dialect_of(conn) == "postgresql" and batch:
        # Several records in one statement of fixed text: one array per column, unnested.
        # A multi-row VALUES (below) is new SQL for every row count, which psycopg parses
        # afresh each time (~50 records of a QIDO date range: ~1/3 of the request's CPU
        # at 10 M, measured), and costs a second round trip for the head.
        first = batch[0]
        columns = tuple(first)
        # Values shared by every record (who asked, what, when) go once, not as arrays:
        # psycopg escapes array elements one by one in Python.
        shared = frozenset(c for c in columns if all(row[c] == first[c] for row in batch))
        params = {f"a_{c}": first[c] if c in shared else [row[c] for row in batch]
                  for c in columns}
        params.update(head_seq=seq, head_hash=last_hash)
        conn.execute(_append_many_pg(columns, shared), params)
        if named:
            _insert_named(conn, named)
        return
    if len(batch) == 1:
        # One record (a search's, a retrieve's): statements built once, so SQLAlchemy
        # neither builds nor keys them again (a tenth of a C-FIND's server CPU, py-spy).
        conn.execute(_INSERT_AUDIT, batch[0])
        if named:
            _insert_named(conn, named)
        conn.execute(_MOVE_HEAD, {"head_seq": seq, "head_hash": last_hash})
        return
    move = update(_HEAD).where(_HEAD.c.id == _HEAD_ID).values(seq=seq, hash=last_hash)
    # Several records: SQLAlchemy's "insertmanyvalues" sends them as one multi-row
    # INSERT ... VALUES per batch (1,000 rows on PostgreSQL, up to 32,766 parameters on
    # SQLite). RETURNING is what turns it on; ``.values([...])`` would compile a new
    # statement per row count (76 ms for 100 rows measured here, against 13 ms).
    conn.execute(insert(_AUDIT).returning(_AUDIT.c.id), batch)
    if named:
        _insert_named(conn, named)
    conn.execute(move)


def _insert_named(conn: Executor, named: Sequence[tuple[int, int]]) -> None:
    conn.execute(insert(_NAMED).returning(_NAMED.c.seq),
                 [{"seq": s, "resident_id": r} for s, r in named])


def append_chained_pg(conn: Executor, row: Mapping[str, Any], *, before_prev: str,
                      before_seq: str, named: Sequence[int] = ()) -> tuple[int, str] | None:
    """PostgreSQL: lock the chain head, append one record after it and move the head, in
    one statement (one round trip where :func:`lock_chain_head` + :func:`append_audit` take
    two, and the head is locked only from this statement to the commit).

    The server computes what needs the head: ``seq`` (head + 1), ``prev_hash`` (the head's
    hash) and ``hash = SHA-256(prev_hash || before_prev || prev_hash || before_seq || seq ||
    '}')``, where ``before_prev`` and ``before_seq`` are the record's canonical JSON
    (``services.access.audit.canonical``) cut at the values of ``prev_hash`` and ``seq``:
    the same bytes as the Python hash, which ``audit verify`` recomputes. ``row``: the
    other columns. ``named``: the residents the record names (``audit_event_resident``).

    Returns the new head ``(seq, hash)``, or None when there is no head row (a fresh or
    truncated table: use :func:`lock_chain_head`, which creates it)."""
    columns = tuple(row)
    params = {f"a_{k}": v for k, v in row.items()}
    params.update(before_prev=before_prev, before_seq=before_seq)
    if named:
        params["n_ids"] = list(named)
    found = conn.execute(_append_chained(columns, named=bool(named)), params).first()
    return (int(found[0]), str(found[1])) if found is not None else None


_APPEND_CHAINED: dict[tuple[tuple[str, ...], bool], Update] = {}


def _append_chained(columns: tuple[str, ...], *, named: bool) -> Update:
    stmt = _APPEND_CHAINED.get((columns, named))
    if stmt is not None:
        return stmt
    head = select(_HEAD.c.seq, _HEAD.c.hash).where(_HEAD.c.id == _HEAD_ID).with_for_update()
    head_cte = head.cte("head")
    seq = head_cte.c.seq + 1
    canonical = (head_cte.c.hash + bindparam("before_prev", type_=SqlText)
                 + head_cte.c.hash + bindparam("before_seq", type_=SqlText)
                 + sql_cast(seq, SqlText) + literal("}", SqlText))
    digest = func.encode(func.sha256(func.convert_to(canonical, literal("UTF8"))),
                         literal("hex"))
    values = [bindparam(f"a_{c}", type_=_AUDIT.c[c].type) for c in columns]
    appended = (insert(_AUDIT)
                .from_select([*columns, "seq", "prev_hash", "hash"],
                             select(*values, seq, head_cte.c.hash, digest),
                             include_defaults=False)
                .returning(_AUDIT.c.seq, _AUDIT.c.hash).cte("appended"))
    # Scalar subqueries, not UPDATE ... FROM appended: no join to lint, and with no head
    # row there is nothing to update (RETURNING gives no row).
    stmt = (update(_HEAD)
            .where(_HEAD.c.id == _HEAD_ID)
            .values(seq=select(appended.c.seq).scalar_subquery(),
                    hash=select(appended.c.hash).scalar_subquery())
            .returning(_HEAD.c.seq, _HEAD.c.hash)
            .add_cte(head_cte))
    stmt = stmt.add_cte(appended)
    if named:
        ids = func.unnest(bindparam("n_ids", type_=ARRAY(BigInteger)))
        stmt = stmt.add_cte(insert(_NAMED).from_select(
            ["seq", "resident_id"], select(appended.c.seq, ids)).cte("named"))
    _APPEND_CHAINED[(columns, named)] = stmt
    return stmt


_INSERT_AUDIT = insert(_AUDIT)
_MOVE_HEAD = (update(_HEAD).where(_HEAD.c.id == _HEAD_ID)
              .values(seq=bindparam("head_seq"), hash=bindparam("head_hash")))
_READ_HEAD = select(AuditChainHead.seq, AuditChainHead.hash).where(AuditChainHead.id == _HEAD_ID)
_LOCK_HEAD_PG = _READ_HEAD.with_for_update()
_APPEND_ONE: dict[tuple[tuple[str, ...], bool], Update] = {}


def _append_one(columns: tuple[str, ...], *, named: bool = False) -> Update:
    """``WITH appended AS (INSERT one audit row) UPDATE head``, bound parameters only
    (``a_<column>``, ``head_seq``, ``head_hash``): one statement object per column set, so
    SQLAlchemy compiles it once. The names are prefixed because the head table's own
    columns (seq, hash) are reserved for its SET clause. ``named``: also insert the
    record's residents (``n_seq``, the array ``n_ids``) into ``audit_event_resident``."""
    stmt = _APPEND_ONE.get((columns, named))
    if stmt is None:
        appended = insert(_AUDIT).values(
            {c: bindparam(f"a_{c}", type_=_AUDIT.c[c].type) for c in columns}).cte("appended")
        stmt = (update(_HEAD).where(_HEAD.c.id == _HEAD_ID)
                .values(seq=bindparam("head_seq"), hash=bindparam("head_hash"))
                .add_cte(appended))
        if named:
            ids = func.unnest(bindparam("n_ids", type_=ARRAY(BigInteger)))
            residents = insert(_NAMED).from_select(
                ["seq", "resident_id"],
                select(bindparam("n_seq", type_=BigInteger), ids)).cte("named")
            stmt = stmt.add_cte(residents)
        _APPEND_ONE[(columns, named)] = stmt
    return stmt


_APPEND_MANY_PG: dict[tuple[tuple[str, ...], frozenset[str]], Update] = {}


def _append_many_pg(columns: tuple[str, ...], shared: frozenset[str]) -> Update:
    """``WITH appended AS (INSERT ... SELECT FROM unnest(arrays)) UPDATE head``: one array
    parameter per column (``a_<column>``), a plain value for the ``shared`` columns, so the
    SQL text is the same for any number of records (compiled once by SQLAlchemy, parsed
    once by psycopg, prepared by the server). Needs a column that differs (``seq`` does)."""
    key = (columns, shared)
    stmt = _APPEND_MANY_PG.get(key)
    if stmt is None:
        varying = [c for c in columns if c not in shared]
        arrays = [bindparam(f"a_{c}", type_=ARRAY(_AUDIT.c[c].type)) for c in varying]
        rows = func.unnest(*arrays).table_valued(*varying).render_derived(name="appending")
        picked = [rows.c[c] if c not in shared
                  else bindparam(f"a_{c}", type_=_AUDIT.c[c].type) for c in columns]
        appended = insert(_AUDIT).from_select(list(columns), select(*picked)).cte("appended")
        stmt = (update(_HEAD).where(_HEAD.c.id == _HEAD_ID)
                .values(seq=bindparam("head_seq"), hash=bindparam("head_hash"))
                .add_cte(appended))
        _APPEND_MANY_PG[key] = stmt
    return stmt


def chain_head(conn: Executor) -> tuple[int, str] | None:
    row = conn.execute(select(AuditChainHead.seq, AuditChainHead.hash)
                       .where(AuditChainHead.id == _HEAD_ID)).first()
    return (int(row[0]), str(row[1])) if row is not None else None


def chain_rows(conn: Connection, *, batch: int = 2000) -> Iterator[Any]:
    """Every audit row in chain order, fetched in batches (keyset on ``seq``)."""
    last = 0
    while True:
        rows = conn.execute(select(_AUDIT).where(_AUDIT.c.seq > last)
                            .order_by(_AUDIT.c.seq).limit(batch)).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def audit_events(
    conn: Executor,
    *,
    resident_ids: Sequence[int] | None = None,
    exclude_subject: str | None = None,
    actor_subject: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    resource_uid: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    before_seq: int | None = None,
) -> list[Any]:
    """Audit rows, newest first, filtered; ``before_seq`` pages backwards.

    ``resident_ids``: records naming any of them, in ``resident_id`` or, for a record that
    names several residents, in ``audit_event_resident``. Each of the two is its own index
    scan (newest first, ``limit`` rows at most, every filter applied), and the newest
    ``limit`` of both are returned: a plain ``OR`` of the two would be one backwards scan
    of the whole trail for a resident with few records."""
    conds = []
    if exclude_subject is not None:
        conds.append(_AUDIT.c.actor_subject != exclude_subject)
    if actor_subject:
        conds.append(_AUDIT.c.actor_subject == actor_subject)
    if action:
        conds.append(_AUDIT.c.action == action)
    if outcome:
        conds.append(_AUDIT.c.outcome == outcome)
    if resource_uid:
        conds.append(_AUDIT.c.resource_uid == resource_uid)
    # UTC: SQLite keeps timestamps without an offset, so bounds must be UTC too.
    if since is not None:
        conds.append(_AUDIT.c.at >= as_utc(since))
    if until is not None:
        conds.append(_AUDIT.c.at < as_utc(until))
    if before_seq is not None:
        conds.append(_AUDIT.c.seq < before_seq)
    newest = _AUDIT.c.seq.desc()
    if resident_ids is None:
        stmt = select(_AUDIT).where(*conds)
        return list(conn.execute(stmt.order_by(newest).limit(limit)).all())
    wanted = list(resident_ids)
    own = (select(_AUDIT.c.seq).where(_AUDIT.c.resident_id.in_(wanted), *conds)
           .order_by(newest).limit(limit).subquery())
    named = (select(_NAMED.c.seq).join(_AUDIT, _AUDIT.c.seq == _NAMED.c.seq)
             .where(_NAMED.c.resident_id.in_(wanted), *conds)
             .order_by(_NAMED.c.seq.desc()).limit(limit).subquery())
    seqs = union(select(own.c.seq), select(named.c.seq))
    stmt = select(_AUDIT).where(_AUDIT.c.seq.in_(seqs))
    return list(conn.execute(stmt.order_by(newest).limit(limit)).all())


def named_residents(conn: Executor, after_seq: int, upto_seq: int) -> dict[int, set[int]]:
    """seq -> the residents indexed for it in ``audit_event_resident``, for records with
    ``after_seq < seq <= upto_seq`` (``audit verify`` compares them with the records)."""
    found: dict[int, set[int]] = {}
    rows = conn.execute(select(_NAMED.c.seq, _NAMED.c.resident_id)
                        .where(_NAMED.c.seq > after_seq, _NAMED.c.seq <= upto_seq))
    for seq, resident in rows:
        found.setdefault(int(seq), set()).add(int(resident))
    return found



def hospital_names(conn: Executor, ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    """hospital id -> (code, name), for showing who looked."""
    if not ids:
        return {}
    rows = conn.execute(select(Hospital.id, Hospital.code, Hospital.name)
                        .where(Hospital.id.in_(list(ids)))).all()
    return {r[0]: (r[1], r[2]) for r in rows}
