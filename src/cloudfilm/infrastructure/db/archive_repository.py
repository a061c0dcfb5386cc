"""Queries behind ingest: find-or-create hospitals, patients, studies, series; store instances.

Repositories never commit; the calling service owns the transaction. Creation races between
concurrent ingests are settled by the unique constraints: ``INSERT .. ON CONFLICT DO
NOTHING`` then ``SELECT``, on SQLite and PostgreSQL alike.

The statements are built once at import and run as Core statements on the session's
connection: building SQLAlchemy expressions and going through the ORM per call cost more
CPU than the database work itself (about 5 of the 10 ms a C-STORE took, profiled).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    BigInteger,
    Row,
    String,
    Table,
    bindparam,
    insert,
    literal,
    literal_column,
    null,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy import cast as cast_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db.models import (
    Hospital,
    Instance,
    InstanceVersion,
    Patient,
    ReconciliationItem,
    Series,
    Study,
)

_hospital = cast(Table, Hospital.__table__)
_patient = cast(Table, Patient.__table__)
_study = cast(Table, Study.__table__)
_series = cast(Table, Series.__table__)
_instance = cast(Table, Instance.__table__)
_version = cast(Table, InstanceVersion.__table__)
_held = cast(Table, ReconciliationItem.__table__)

_HOSPITAL_BY_CODE = select(_hospital.c.id).where(_hospital.c.code == bindparam("code"))
_PATIENT_BY_KEY = select(
    _patient.c.id, _patient.c.patient_name, _patient.c.birth_date, _patient.c.sex
).where(
    _patient.c.hospital_id == bindparam("hospital_id"),
    _patient.c.patient_id == bindparam("patient_id"),
    _patient.c.issuer_of_patient_id == bindparam("issuer_of_patient_id"),
)
# What ingest and report linking need of a study (one row shape for both).
STUDY_COLUMNS = (
    _study.c.id, _study.c.study_instance_uid, _study.c.patient_fk, _study.c.hospital_id,
    _study.c.accession_number, _study.c.exam_at,
)
_STUDIES_BY_UID = select(*STUDY_COLUMNS).where(
    _study.c.study_instance_uid.in_(bindparam("uids", expanding=True))
)
_SERIES_COLUMNS = (_series.c.id, _series.c.series_instance_uid, _series.c.study_fk)
# With the hospital of the series' study: a series UID another hospital holds is a clash
# for the reconciliation queue (one primary-key join, no extra round trip).
_SERIES_BY_UID = (
    select(*_SERIES_COLUMNS, _study.c.hospital_id)
    .join(_study, _study.c.id == _series.c.study_fk)
    .where(_series.c.series_instance_uid.in_(bindparam("uids", expanding=True)))
)
_INSTANCES_BY_UID = select(
    _instance.c.id, _instance.c.sop_instance_uid, _instance.c.sha256, _instance.c.series_fk,
    _instance.c.study_fk, _instance.c.hospital_id, _instance.c.blob_key,
    _instance.c.size_bytes, _instance.c.received_at,
).where(_instance.c.sop_instance_uid.in_(bindparam("uids", expanding=True)))  # fmt: skip
_CURRENT_SHAS = select(_instance.c.sop_instance_uid, _instance.c.sha256,
                       _instance.c.hospital_id).where(
    _instance.c.sop_instance_uid.in_(bindparam("uids", expanding=True))
)
_OLD_SHAS = select(_version.c.sop_instance_uid, _version.c.sha256, _version.c.hospital_id).where(
    _version.c.sop_instance_uid.in_(bindparam("uids", expanding=True))
)
_SERIES_COUNT = (
    update(_series)
    .where(_series.c.id == bindparam("fk"))
    .values(num_instances=_series.c.num_instances + bindparam("n"), updated_at=bindparam("now"))
)
_STUDY_COUNT = (
    update(_study)
    .where(_study.c.id == bindparam("fk"))
    .values(
        num_instances=_study.c.num_instances + bindparam("n"),
        num_series=_study.c.num_series + bindparam("new_series"),
        size_bytes=_study.c.size_bytes + bindparam("size"),
        updated_at=bindparam("now"),
    )
)
_INSERT_INSTANCE = insert(_instance)
_BLOB_IN_USE = select(_instance.c.id).where(_instance.c.blob_key == bindparam("key")).limit(1)
_BLOB_KEPT = select(_version.c.id).where(_version.c.blob_key == bindparam("key")).limit(1)
_BLOB_HELD = select(_held.c.id).where(_held.c.blob_key == bindparam("key")).limit(1)


def _insert_ignore(session: Session, table: Any, values: dict[str, Any]) -> None:
    """Insert unless a unique key exists already. Says nothing about which happened:
    psycopg reports rowcount -1 for ON CONFLICT DO NOTHING (``_insert_returning`` tells)."""
    dialect = session.get_bind().dialect.name
    key = (dialect, table.name)
    stmt = _INSERT_IGNORE.get(key)
    if stmt is None:
        ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = _INSERT_IGNORE[key] = ins(table).on_conflict_do_nothing()
    # Values as execute() parameters, not .values(**values): the statement is built once
    # and its compiled form cached (~0.5 ms of coercion saved per new patient/study/series).
    session.connection().execute(stmt, values)


_INSERT_IGNORE: dict[tuple[str, str], Any] = {}
_INSERT_RETURNING: dict[tuple[str, str], Any] = {}


def _insert_returning(session: Session, table: Any, values: dict[str, Any],
                      columns: Sequence[Any]) -> Row[Any] | None:
    """Insert unless a unique key exists already; the new row's ``columns``, or None when
    another row was there first. One statement instead of insert-then-select (both
    dialects support RETURNING with ON CONFLICT DO NOTHING)."""
    dialect = session.get_bind().dialect.name
    key = (dialect, table.name)
    stmt = _INSERT_RETURNING.get(key)
    if stmt is None:
        ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = _INSERT_RETURNING[key] = ins(table).on_conflict_do_nothing().returning(*columns)
    return session.connection().execute(stmt, values).first()


def hospital_id(session: Session, code: str, *, name: str, now: datetime) -> int:
    conn = session.connection()
    found = conn.execute(_HOSPITAL_BY_CODE, {"code": code}).scalar()
    if found is not None:
        return int(found)
    _insert_ignore(session, _hospital, {"code": code, "name": name, "created_at": now})
    return int(conn.execute(_HOSPITAL_BY_CODE, {"code": code}).scalar_one())


_NOT_LOOKED_UP: Any = object()


def upsert_patient(session: Session, *, hospital_id: int, values: dict[str, Any],
                   found: Any = _NOT_LOOKED_UP) -> int:
    """Create or refresh one hospital's patient record; the latest header's values win.

    ``found``: the patient's row (or None) when the caller read it in this transaction
    already (:func:`look_up`), saving the look-up.
    """
    conn = session.connection()
    key = {
        "hospital_id": hospital_id,
        "patient_id": values["patient_id"],
        "issuer_of_patient_id": values["issuer_of_patient_id"],
    }
    row = conn.execute(_PATIENT_BY_KEY, key).one_or_none() if found is _NOT_LOOKED_UP \
        else found
    if row is None:
        created = _insert_returning(session, _patient, {"hospital_id": hospital_id, **values},
                                    [_patient.c.id])
        if created is not None:
            return int(created.id)
        return int(conn.execute(_PATIENT_BY_KEY, key).one().id)
    changed = (row.patient_name, row.birth_date, row.sex) != (
        values["patient_name"],
        values["birth_date"],
        values["sex"],
    )
    if changed:
        conn.execute(update(_patient).where(_patient.c.id == row.id).values(**values))
    return int(row.id)


class Found(NamedTuple):
    """What :func:`look_up` found, by key."""

    instances: dict[str, InstanceRow]
    studies: dict[str, StudyRow]
    series: dict[str, SeriesRow]
    patients: dict[tuple[str, str], PatientRow]


class InstanceRow(NamedTuple):
    id: int
    sop_instance_uid: str
    sha256: str
    series_fk: int
    study_fk: int
    hospital_id: int
    blob_key: str
    size_bytes: int
    received_at: datetime


class StudyRow(NamedTuple):
    id: int
    study_instance_uid: str
    patient_fk: int
    hospital_id: int
    accession_number: str
    exam_at: datetime | None


class SeriesRow(NamedTuple):
    id: int
    series_instance_uid: str
    study_fk: int
    hospital_id: int


class PatientRow(NamedTuple):
    id: int
    patient_name: str
    birth_date: str
    sex: str


def _look_up_statement() -> Any:
    """Instances, studies and series by UID and one hospital's patients by key, as one
    UNION ALL (one round trip instead of four; each branch an index probe). Columns:
    kind, id, key, hospital_id, two foreign keys, four texts, a size and two times, typed
    by the first branch (SQLite's result processing reads its types)."""
    i, st, se, p = _instance, _study, _series, _patient
    text = String()
    when = i.c.received_at.type

    def none(type_: Any) -> Any:
        return cast_(null(), type_)

    def branch(kind: str, table: Any, key: Any, hospital: Any, fk1: Any, fk2: Any,
               t1: Any, t2: Any, t3: Any, t4: Any, size: Any, at1: Any, at2: Any) -> Any:
        return select(literal_column(f"'{kind}'").label("kind"), table.c.id.label("id"),
                      key.label("key"), hospital.label("hospital_id"), fk1.label("fk1"),
                      fk2.label("fk2"), t1.label("t1"), t2.label("t2"), t3.label("t3"),
                      t4.label("t4"), size.label("size"), at1.label("at1"), at2.label("at2"))

    no_id, no_size = none(BigInteger()), none(BigInteger())
    return union_all(
        branch("i", i, i.c.sop_instance_uid, i.c.hospital_id, i.c.series_fk, i.c.study_fk,
               i.c.sha256, i.c.blob_key, none(text), none(text), i.c.size_bytes,
               i.c.received_at, none(when))
        .where(i.c.sop_instance_uid.in_(bindparam("sops", expanding=True))),
        branch("s", st, st.c.study_instance_uid, st.c.hospital_id, st.c.patient_fk, no_id,
               st.c.accession_number, none(text), none(text), none(text), no_size,
               none(when), st.c.exam_at)
        .where(st.c.study_instance_uid.in_(bindparam("studies", expanding=True))),
        branch("r", se, se.c.series_instance_uid, st.c.hospital_id, se.c.study_fk, no_id,
               none(text), none(text), none(text), none(text), no_size, none(when), none(when))
        .select_from(se.join(st, st.c.id == se.c.study_fk))
        .where(se.c.series_instance_uid.in_(bindparam("series", expanding=True))),
        branch("p", p, p.c.patient_id, p.c.hospital_id, no_id, no_id, p.c.patient_name,
               p.c.birth_date, p.c.sex, p.c.issuer_of_patient_id, no_size, none(when),
               none(when))
        .where(p.c.hospital_id == bindparam("hospital"),
               tuple_(p.c.patient_id, p.c.issuer_of_patient_id).in_(
                   bindparam("patients", expanding=True))),
    )


_LOOK_UP = _look_up_statement()


def look_up(session: Session, *, sops: Iterable[str], studies: Iterable[str],
            series: Iterable[str], hospital_id: int,
            patients: Iterable[tuple[str, str]]) -> Found:
    """What ingest reads before writing, in one statement: instances by SOP Instance UID,
    studies by Study Instance UID, series by Series Instance UID (with their study's
    hospital) and ``hospital_id``'s patients by (PatientID, issuer)."""
    found = Found({}, {}, {}, {})
    rows = session.connection().execute(_LOOK_UP, {
        "sops": list(sops), "studies": list(studies), "series": list(series),
        "hospital": hospital_id, "patients": list(patients)})
    for r in rows:
        if r.kind == "i":
            found.instances[r.key] = InstanceRow(r.id, r.key, r.t1, r.fk1, r.fk2,
                                                 r.hospital_id, r.t2, r.size, r.at1)
        elif r.kind == "s":
            found.studies[r.key] = StudyRow(r.id, r.key, r.fk1, r.hospital_id, r.t1, r.at2)
        elif r.kind == "r":
            found.series[r.key] = SeriesRow(r.id, r.key, r.fk1, r.hospital_id)
        else:
            found.patients[(r.key, r.t4)] = PatientRow(r.id, r.t1, r.t2, r.t3)
    return found


def studies_by_uid(session: Session, uids: Iterable[str]) -> dict[str, Any]:
    rows = session.connection().execute(_STUDIES_BY_UID, {"uids": list(uids)})
    return {r.study_instance_uid: r for r in rows}


def series_by_uid(session: Session, uids: Iterable[str]) -> dict[str, Any]:
    rows = session.connection().execute(_SERIES_BY_UID, {"uids": list(uids)})
    return {r.series_instance_uid: r for r in rows}


def instances_by_uid(session: Session, uids: Iterable[str]) -> dict[str, Any]:
    rows = session.connection().execute(_INSTANCES_BY_UID, {"uids": list(uids)})
    return {r.sop_instance_uid: r for r in rows}


def known_versions(session: Session | Connection, pairs: Sequence[tuple[str, str]], *,
                   hospital_id: int | None = None) -> set[tuple[str, str]]:
    """Which (SOP Instance UID, SHA-256) pairs were stored before, as current or superseded
    versions (a late resend of an old version then changes nothing); with ``hospital_id``,
    only pairs that hospital holds. In an ORM session's transaction or on a Core
    connection (ingest's look-ahead, ``Database.reading``)."""
    if not pairs:
        return set()
    conn = session if isinstance(session, Connection) else session.connection()
    wanted = set(pairs)
    current = {
        (r.sop_instance_uid, r.sha256)
        for r in conn.execute(_CURRENT_SHAS, {"uids": list({u for u, _ in pairs})})
        if hospital_id is None or r.hospital_id == hospital_id
    }
    found = current & wanted
    # Superseded versions exist only under a UID with a current version of other content.
    other = {uid for uid, _ in current} - {uid for uid, _ in found}
    if other:
        found |= {
            (r.sop_instance_uid, r.sha256) for r in conn.execute(_OLD_SHAS, {"uids": list(other)})
            if hospital_id is None or r.hospital_id == hospital_id
        } & wanted
    return found


def create_study(session: Session, values: dict[str, Any]) -> Row[Any]:
    created = _insert_returning(session, _study, values, STUDY_COLUMNS)
    if created is not None:
        return created
    found: Row[Any] = studies_by_uid(session, [values["study_instance_uid"]])[
        values["study_instance_uid"]]
    return found


def create_series(session: Session, values: dict[str, Any]) -> tuple[Row[Any], bool]:
    """The series row, and whether this call created it (a concurrent ingest may have)."""
    created = _insert_returning(session, _series, values, _SERIES_COLUMNS)
    if created is not None:
        return created, True
    uid = values["series_instance_uid"]
    return series_by_uid(session, [uid])[uid], False


def add_instances(session: Session, rows: list[dict[str, Any]]) -> None:
    """Insert new instances (one multi-row statement) and bump the series and study counters.

    ``rows`` carry an extra key ``_new_series`` (bool) that is not a column.
    """
    if not rows:
        return
    conn = session.connection()
    now = rows[-1]["received_at"]
    per_series: dict[int, int] = {}
    per_study: dict[int, list[int]] = {}
    for row in rows:
        per_series[row["series_fk"]] = per_series.get(row["series_fk"], 0) + 1
        counts = per_study.setdefault(row["study_fk"], [0, 0, 0])
        counts[0] += 1
        counts[1] += 1 if row["_new_series"] else 0
        counts[2] += row["size_bytes"]
    if len(rows) == 1 and conn.dialect.name == "postgresql":
        # One object (C-STORE, single STOW-RS): the row and both counters in one statement,
        # one round trip instead of three.
        row = rows[0]
        values = {f"i_{k}": v for k, v in row.items() if k[0] != "_"}
        values["new_series"] = 1 if row["_new_series"] else 0
        conn.execute(_insert_one_statement(tuple(k for k in row if k[0] != "_")), values)
        return
    conn.execute(_INSERT_INSTANCE, [{k: v for k, v in r.items() if k[0] != "_"} for r in rows])
    conn.execute(_SERIES_COUNT, [{"fk": fk, "n": n, "now": now} for fk, n in per_series.items()])
    conn.execute(
        _STUDY_COUNT,
        [
            {"fk": fk, "n": n, "new_series": new, "size": size, "now": now}
            for fk, (n, new, size) in per_study.items()
        ],
    )


@lru_cache(maxsize=8)
def _insert_one_statement(columns: tuple[str, ...]) -> Any:
    """PostgreSQL: ``WITH new_instance AS (INSERT ...), series_count AS (UPDATE series ...)
    UPDATE study ...`` for one instance (data-modifying CTEs run exactly once each)."""
    values: dict[Any, Any] = {_instance.c[name]: bindparam(f"i_{name}") for name in columns}
    # Column defaults as values: SQLAlchemy fills them in for a top-level INSERT only.
    values.update({c: literal(cast(Any, c.default).arg, c.type) for c in _instance.c
                   if c.name not in columns and c.default is not None and c.default.is_scalar})
    row = insert(_instance).values(values).cte("new_instance")
    series = (update(_series).where(_series.c.id == bindparam("i_series_fk"))
              .values(num_instances=_series.c.num_instances + 1,
                      updated_at=bindparam("i_received_at"))
              .cte("series_count"))
    return (update(_study).where(_study.c.id == bindparam("i_study_fk"))
            .values(num_instances=_study.c.num_instances + 1,
                    num_series=_study.c.num_series + bindparam("new_series"),
                    size_bytes=_study.c.size_bytes + bindparam("i_size_bytes"),
                    updated_at=bindparam("i_received_at"))
            .add_cte(row).add_cte(series))


def replace_instance(
    session: Session, current: Row[Any], values: dict[str, Any], *, now: datetime
) -> None:
    """Keep the current version in ``instance_version`` and point the row at the new one."""
    conn = session.connection()
    conn.execute(
        insert(_version).values(
            sop_instance_uid=current.sop_instance_uid,
            hospital_id=current.hospital_id,
            blob_key=current.blob_key,
            size_bytes=current.size_bytes,
            sha256=current.sha256,
            received_at=current.received_at,
            superseded_at=now,
            superseded_by_sha256=values["sha256"],
        )
    )
    conn.execute(
        update(_instance)
        .where(_instance.c.id == current.id)
        .values(**{k: v for k, v in values.items() if k[0] != "_"})
    )
    conn.execute(
        _STUDY_COUNT,
        {"fk": current.study_fk, "n": 0, "new_series": 0, "now": now,
         "size": values["size_bytes"] - current.size_bytes},
    )


def blob_is_referenced(session: Session, key: str) -> bool:
    conn = session.connection()
    if conn.execute(_BLOB_IN_USE, {"key": key}).first() is not None:
        return True
    if conn.execute(_BLOB_KEPT, {"key": key}).first() is not None:
        return True
    return conn.execute(_BLOB_HELD, {"key": key}).first() is not None
