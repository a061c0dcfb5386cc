"""Queries of diagnostic reports: find, record, link, read, search, and measure timeliness.

No commits: the service (or ingest, for reports that arrive as DICOM objects) owns the
transaction. Rows are returned as SQLAlchemy ``Row`` objects.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    Table,
    bindparam,
    case,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import TSQUERY, TSVECTOR
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db.archive_repository import STUDY_COLUMNS
from cloudfilm.infrastructure.db.models import (
    Hospital,
    Patient,
    Report,
    ReportVersion,
    Study,
)
from cloudfilm.infrastructure.db.session import as_utc, dialect_of

Executor = Connection | Session
_REPORT = cast(Table, Report.__table__)
_VERSION = cast(Table, ReportVersion.__table__)




# --- finding what a new version belongs to --------------------------------------------------


def report_by_key(conn: Executor, hospital_id: int, report_key: str) -> Any:
    return conn.execute(select(_REPORT).where(_REPORT.c.hospital_id == hospital_id,
                                              _REPORT.c.report_key == report_key)).first()


def report_by_version_sop(conn: Executor, hospital_id: int, sop_uid: str) -> Any:
    """The report one of whose versions came as DICOM object ``sop_uid``."""
    return conn.execute(
        select(_REPORT).join(_VERSION, _VERSION.c.report_fk == _REPORT.c.id)
        .where(_VERSION.c.sop_instance_uid == sop_uid, _REPORT.c.hospital_id == hospital_id)
        .limit(1)).first()


def studies_by_accession(conn: Executor, hospital_id: int, accession: str) -> list[Any]:
    """Up to two studies of a hospital under one accession number (two: ambiguous)."""
    return list(conn.execute(select(*STUDY_COLUMNS).where(Study.hospital_id == hospital_id,
                                                          Study.accession_number == accession)
                             .limit(2)).all())


def patient_by_local_id(conn: Executor, hospital_id: int, patient_id: str) -> int | None:
    return conn.execute(select(Patient.id).where(Patient.hospital_id == hospital_id,
                                                 Patient.patient_id == patient_id)
                        .order_by(Patient.id).limit(1)).scalar()


def has_version(conn: Executor, report_id: int, content_sha256: str) -> bool:
    return conn.execute(select(_VERSION.c.id).where(
        _VERSION.c.report_fk == report_id,
        _VERSION.c.content_sha256 == content_sha256).limit(1)).first() is not None


def lock_link_keys(conn: Executor, keys: Sequence[str]) -> None:
    """Serialise "is the study there?" with "create the study" on PostgreSQL.

    Without it, a report received while the transaction creating its study is still open
    would see no study (and stay held), and that transaction would see no held report:
    neither would link them. Both sides take transaction-scoped advisory locks on the
    same keys (``uid:<StudyInstanceUID>``, ``acc:<hospital>:<accession>``) in sorted
    order, so one waits for the other's commit. SQLite has one writer at a time anyway.
    """
    if dialect_of(conn) != "postgresql":
        return
    for key in sorted(set(keys)):
        conn.execute(select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0))))


def link_keys(hospital_id: int, study_uid: str, accession: str) -> list[str]:
    keys = [f"uid:{study_uid}"] if study_uid else []
    if accession:
        keys.append(f"acc:{hospital_id}:{accession}")
    return keys


# --- writing -------------------------------------------------------------------------------


_TSV = "search_tsv_literal"
_INSERT_REPORT: dict[str, Any] = {}


def _vector_value(conn: Executor) -> Any:
    # PostgreSQL: the literal cast to tsvector in SQL; SQLite searches search_text instead.
    return sql_cast(bindparam(_TSV), TSVECTOR) if dialect_of(conn) == "postgresql" else None


def insert_report(conn: Executor, values: dict[str, Any], *, vector: str) -> int:
    dialect = dialect_of(conn)
    stmt = _INSERT_REPORT.get(dialect)
    if stmt is None:
        # Built once per dialect, values passed to execute(): its compiled form is cached.
        stmt = _INSERT_REPORT[dialect] = (insert(_REPORT).values(search_tsv=_vector_value(conn))
                                          .returning(_REPORT.c.id))
    params = {**values, _TSV: vector} if dialect == "postgresql" else values
    return int(conn.execute(stmt, params).scalar_one())


def update_report(conn: Executor, report_id: int, values: dict[str, Any], *,
                  vector: str | None = None) -> None:
    stmt = update(_REPORT).where(_REPORT.c.id == report_id).values(**values)
    if vector is not None and dialect_of(conn) == "postgresql":
        stmt = stmt.values(search_tsv=sql_cast(vector, TSVECTOR))
    conn.execute(stmt)


def insert_version(conn: Executor, values: dict[str, Any]) -> None:
    conn.execute(insert(_VERSION), values)


def held_reports(conn: Executor, hospital_id: int, study_uids: Sequence[str],
                 accessions: Sequence[str]) -> list[Any]:
    """Held reports of a hospital naming one of these studies or accession numbers."""
    match: list[ColumnElement[bool]] = []
    if study_uids:
        match.append(_REPORT.c.study_instance_uid.in_(list(study_uids)))
    accessions = [a for a in accessions if a]
    if accessions:
        match.append(_REPORT.c.accession_number.in_(accessions))
    if not match:
        return []
    return list(conn.execute(
        select(_REPORT.c.id, _REPORT.c.study_instance_uid, _REPORT.c.accession_number,
               _REPORT.c.exam_at, _REPORT.c.received_at)
        .where(_REPORT.c.hospital_id == hospital_id, _REPORT.c.study_fk.is_(None),
               or_(*match))).all())


# --- reading -------------------------------------------------------------------------------


def _with_names(reports: Any) -> Any:
    """Report rows (a table or a subquery of it) with the hospital's code and name and the
    linked study's UID (a report keeps its study's UID once linked)."""
    linked = case((reports.c.study_fk.is_not(None), reports.c.study_instance_uid), else_="")
    return (select(reports, linked.label("linked_study_uid"),
                   Hospital.code.label("hospital_code"), Hospital.name.label("hospital_name"))
            .join(Hospital, Hospital.id == reports.c.hospital_id))


def report_by_public_id(conn: Executor, public_id: str) -> Any:
    return conn.execute(_with_names(_REPORT).where(_REPORT.c.public_id == public_id)).first()


def reports_of_study(conn: Executor, study_uid: str) -> list[Any]:
    """The reports linked to a study, newest first."""
    study = select(Study.id).where(Study.study_instance_uid == study_uid).scalar_subquery()
    return list(conn.execute(_with_names(_REPORT).where(_REPORT.c.study_fk == study)
                             .order_by(_REPORT.c.received_at.desc(), _REPORT.c.id.desc()))
                .all())


def versions(conn: Executor, report_id: int) -> list[Any]:
    return list(conn.execute(select(_VERSION).where(_VERSION.c.report_fk == report_id)
                             .order_by(_VERSION.c.version)).all())


def version(conn: Executor, report_id: int, number: int) -> Any:
    return conn.execute(select(_VERSION).where(_VERSION.c.report_fk == report_id,
                                               _VERSION.c.version == number)).first()


def patient_of(conn: Executor, patient_fk: int | None) -> Any:
    if patient_fk is None:
        return None
    return conn.execute(select(Patient.patient_id, Patient.patient_name, Patient.sex,
                               Patient.birth_date).where(Patient.id == patient_fk)).first()


def study_summary(conn: Executor, study_fk: int | None) -> Any:
    if study_fk is None:
        return None
    return conn.execute(select(Study.study_instance_uid, Study.study_date,
                               Study.study_description, Study.accession_number,
                               Study.exam_at).where(Study.id == study_fk)).first()


def search(
    conn: Executor,
    *,
    visible: ColumnElement[bool] | None,
    tsquery: str | None,
    like_patterns: Sequence[str],
    hospital_code: str | None = None,
    status: str | None = None,
    link_state: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 50,
    offset: int = 0,
) -> list[Any]:
    """Reports matching a text query and filters, newest exam first.

    PostgreSQL matches ``tsquery`` against the GIN-indexed ``search_tsv``; SQLite every
    ``like_patterns`` against ``search_text`` (a scan, correct for any characters). Every
    filter is on ``report`` itself and the page is cut before the hospital join, so a
    frequent term walks the ``(listed_at, id)`` index backwards and stops after a page.
    """
    stmt = select(_REPORT)
    if visible is not None:
        stmt = stmt.where(visible)
    if dialect_of(conn) == "postgresql":
        if tsquery is not None:
            stmt = stmt.where(_REPORT.c.search_tsv.op("@@")(sql_cast(tsquery, TSQUERY)))
    else:
        for pattern in like_patterns:
            stmt = stmt.where(_REPORT.c.search_text.like(pattern, escape="\\"))
    if hospital_code:
        stmt = stmt.where(_REPORT.c.hospital_id == select(Hospital.id)
                          .where(Hospital.code == hospital_code).scalar_subquery())
    if status:
        stmt = stmt.where(_REPORT.c.status == status)
    if link_state:
        stmt = stmt.where(_REPORT.c.link_state == link_state)
    if since is not None:
        stmt = stmt.where(_REPORT.c.listed_at >= as_utc(since))
    if until is not None:
        stmt = stmt.where(_REPORT.c.listed_at < as_utc(until))
    page = (stmt.order_by(_REPORT.c.listed_at.desc(), _REPORT.c.id.desc())
            .limit(limit).offset(offset).subquery("page"))
    return list(conn.execute(_with_names(page)
                             .order_by(page.c.listed_at.desc(), page.c.id.desc())).all())


# --- timeliness ----------------------------------------------------------------------------


def _delay_seconds(conn: Executor, received: Any, exam: Any) -> ColumnElement[Any]:
    if dialect_of(conn) == "postgresql":
        return func.extract("epoch", received - exam)
    # SQLite keeps UTC timestamps as text that julianday() reads.
    return (func.julianday(received) - func.julianday(exam)) * literal_column("86400.0")


def timeliness(conn: Executor, *, since: datetime, until: datetime, deadline_seconds: int,
               hospital_id: int | None = None) -> dict[int, dict[str, Any]]:
    """Per hospital, for exams in ``[since, until)``: studies and reports received, on
    time and late against ``deadline_seconds``, and studies that have no report yet."""
    out: dict[int, dict[str, Any]] = {}

    def row(hospital: int) -> dict[str, Any]:
        return out.setdefault(hospital, {
            "studies": 0, "studies_on_time": 0, "studies_late": 0,
            "studies_max_delay_s": None, "studies_without_report": 0,
            "reports": 0, "reports_on_time": 0, "reports_late": 0,
            "reports_max_delay_s": None, "studies_without_exam_time": 0})

    for table, prefix in ((Study, "studies"), (Report, "reports")):
        delay = _delay_seconds(conn, table.received_at, table.exam_at)
        on_time = func.sum(case((delay <= deadline_seconds, 1), else_=0))
        stmt = (select(table.hospital_id, func.count(), on_time,
                       func.max(sql_cast(delay, Float)))
                .where(table.exam_at >= as_utc(since), table.exam_at < as_utc(until))
                .group_by(table.hospital_id))
        if hospital_id is not None:
            stmt = stmt.where(table.hospital_id == hospital_id)
        for hospital, count, timely, worst in conn.execute(stmt):
            entry = row(hospital)
            entry[prefix] = int(count)
            entry[f"{prefix}_on_time"] = int(timely or 0)
            entry[f"{prefix}_late"] = int(count) - int(timely or 0)
            entry[f"{prefix}_max_delay_s"] = round(float(worst), 1) if worst is not None else None
    missing = (select(Study.hospital_id, func.count())
               .where(Study.exam_at >= as_utc(since), Study.exam_at < as_utc(until),
                      ~select(_REPORT.c.id).where(_REPORT.c.study_fk == Study.id).exists())
               .group_by(Study.hospital_id))
    undated = (select(Study.hospital_id, func.count())
               .where(Study.exam_at.is_(None), Study.received_at >= as_utc(since),
                      Study.received_at < as_utc(until))
               .group_by(Study.hospital_id))
    if hospital_id is not None:
        missing = missing.where(Study.hospital_id == hospital_id)
        undated = undated.where(Study.hospital_id == hospital_id)
    for hospital, count in conn.execute(missing):
        row(hospital)["studies_without_report"] = int(count)
    for hospital, count in conn.execute(undated):
        row(hospital)["studies_without_exam_time"] = int(count)
    return out


def hospital_by_code(conn: Executor, code: str) -> int | None:
    return conn.execute(select(Hospital.id).where(Hospital.code == code)).scalar()

