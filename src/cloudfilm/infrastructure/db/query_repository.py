"""QIDO-style searches over the index: conditions in, rows out, one SQL statement per level.

The service decides what each query parameter means (:class:`Condition`); this module only
turns conditions into SQL on the right column. Text matching uses ``LIKE`` with an escape
character so that ``%`` and ``_`` in values are literal.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    bindparam,
    exists,
    false,
    func,
    select,
)
from sqlalchemy.orm import aliased

from cloudfilm.infrastructure.db.models import Instance, Patient, PatientLink, Series, Study

Kind = Literal["exact", "wildcard", "list", "range", "words", "contains"]


@dataclass(frozen=True, slots=True)
class Condition:
    """``kind``: exact; wildcard (SQL LIKE pattern); list (IN); range ((low, high), either
    may be ""); words (match whole words of a search-key column, LIKE pattern per word);
    contains (substring, case-insensitive)."""

    keyword: str
    kind: Kind
    value: Any


COLUMNS: dict[str, Any] = {
    "PatientID": Patient.patient_id,
    "IssuerOfPatientID": Patient.issuer_of_patient_id,
    "PatientName": Patient.name_search,
    "PatientBirthDate": Patient.birth_date,
    "PatientSex": Patient.sex,
    "StudyInstanceUID": Study.study_instance_uid,
    "StudyDate": Study.study_date,
    "StudyTime": Study.study_time,
    "AccessionNumber": Study.accession_number,
    "ReferringPhysicianName": Study.referring_physician_name,
    "StudyDescription": Study.study_description,
    "StudyID": Study.study_id,
    "InstitutionName": Study.institution_name,
    "SeriesInstanceUID": Series.series_instance_uid,
    "Modality": Series.modality,
    "SeriesNumber": Series.series_number,
    "SeriesDescription": Series.series_description,
    "BodyPartExamined": Series.body_part_examined,
    "PerformedProcedureStepStartDate": Series.performed_procedure_step_start_date,
    "PerformedProcedureStepStartTime": Series.performed_procedure_step_start_time,
    "SOPInstanceUID": Instance.sop_instance_uid,
    "SOPClassUID": Instance.sop_class_uid,
    "InstanceNumber": Instance.instance_number,
    "NumberOfFrames": Instance.number_of_frames,
    "Rows": Instance.rows,
    "Columns": Instance.columns,
}

STUDY_KEYS = frozenset(k for k, c in COLUMNS.items() if c.class_ in (Patient, Study)) | {
    "ModalitiesInStudy"
}
SERIES_KEYS = frozenset(k for k, c in COLUMNS.items() if c.class_ is Series)
INSTANCE_KEYS = frozenset(k for k, c in COLUMNS.items() if c.class_ is Instance)


def _where(cond: Condition, column: Any = None) -> ColumnElement[bool]:
    if cond.keyword == "ModalitiesInStudy":
        # An alias of series: in a series or instance search the outer query already has
        # `series`, and correlating it away left the EXISTS without a FROM (a 500 found by
        # tests/integration/fuzz).
        other = aliased(Series)
        inner = Condition("Modality", cond.kind, cond.value)
        return exists().where(other.study_fk == Study.id, _where(inner, other.modality))
    col = COLUMNS[cond.keyword]
    if column is not None:
        col = column
    if cond.kind == "exact":
        return col == cond.value  # type: ignore[no-any-return]
    if cond.kind == "list":
        return col.in_(list(cond.value)) if cond.value else false()
    if cond.kind == "wildcard":
        return col.like(cond.value, escape="\\")  # type: ignore[no-any-return]
    if cond.kind == "range":
        low, high = cond.value
        parts = []
        if low:
            parts.append(col >= low)
        if high:
            parts.append(col <= high)
        # An open range still excludes empty values (PS3.4 C.2.2.2.5).
        return and_(col != "", *parts)
    if cond.kind == "words":
        return and_(*(col.like(f"% {w} %", escape="\\") for w in cond.value))
    if cond.kind == "contains":
        return func.upper(col).like(f"%{cond.value}%", escape="\\")
    raise ValueError(f"unknown condition kind {cond.kind}")


def search_studies(
    conn: Connection, conditions: Sequence[Condition], *, limit: int, offset: int,
    visible: ColumnElement[bool] | None = None,
) -> list[Any]:
    """Matching studies, newest first; ``visible`` is the access policy's restriction on
    ``study`` (applied in the statement so that LIMIT/OFFSET count visible rows only).

    Each row also carries ``modalities`` (the study's series modalities joined by ``\\``,
    None without any; :func:`split_modalities`) and ``resident_id`` (the resident its record
    is linked to, for the audit): one round trip instead of three."""
    bound = _bound_conditions(conditions)
    if bound is not None:
        shape, params = bound
        stmt = _study_statement(shape, bool(offset), visible)
        params.update(page_limit=limit, page_offset=offset)
        return list(conn.execute(stmt, params).all())
    stmt = _study_search_base().where(*(_where(c) for c in conditions)).limit(limit)
    if offset:
        stmt = stmt.offset(offset)
    needs_series = [c for c in conditions if c.keyword in SERIES_KEYS]
    if needs_series:
        stmt = stmt.where(exists().where(Series.study_fk == Study.id, *map(_where, needs_series)))
    if visible is not None:
        stmt = stmt.where(visible)
    return list(conn.execute(stmt).all())


# A condition's shape: what its SQL depends on besides the values (which are bound).
_Shape = tuple[tuple[str, str, int], ...]
_STUDY_COLUMN_KEYS = frozenset(k for k, c in COLUMNS.items() if c.class_ in (Patient, Study))
# (shape, paged, id(visible)) -> (visible, statement); cleared when it grows past the limit.
_STUDY_STATEMENTS: dict[tuple[_Shape, bool, int], tuple[Any, Select[Any]]] = {}
_STATEMENTS_KEPT = 512


def _bound_conditions(conditions: Sequence[Condition]) -> tuple[_Shape, dict[str, Any]] | None:
    """The conditions' shape and their values as bound parameters (``c0``, ``c1_0``, ...);
    None for a condition the statement cache does not cover (modalities, series keys)."""
    shape: list[tuple[str, str, int]] = []
    params: dict[str, Any] = {}
    for i, cond in enumerate(conditions):
        if cond.keyword not in _STUDY_COLUMN_KEYS:
            return None
        name, size = f"c{i}", 0
        if cond.kind in ("exact", "wildcard"):
            params[name] = cond.value
        elif cond.kind == "contains":
            params[name] = f"%{cond.value}%"
        elif cond.kind == "list":
            size = len(cond.value)
            params[name] = list(cond.value)
        elif cond.kind == "range":
            low, high = cond.value
            size = (1 if low else 0) | (2 if high else 0)
            params.update({f"{name}_0": low, f"{name}_1": high})
        elif cond.kind == "words":
            size = len(cond.value)
            params.update({f"{name}_{j}": f"% {w} %" for j, w in enumerate(cond.value)})
        else:
            return None
        shape.append((cond.keyword, cond.kind, size))
    return tuple(shape), params


def _bound_where(index: int, keyword: str, kind: str, size: int) -> ColumnElement[bool]:
    """:func:`_where` of a condition of this shape with its values as bound parameters."""
    col, name = COLUMNS[keyword], f"c{index}"
    if kind == "exact":
        return col == bindparam(name)  # type: ignore[no-any-return]
    if kind == "wildcard":
        return col.like(bindparam(name), escape="\\")  # type: ignore[no-any-return]
    if kind == "contains":
        return func.upper(col).like(bindparam(name), escape="\\")
    if kind == "list":
        return col.in_(bindparam(name, expanding=True)) if size else false()
    if kind == "range":
        parts = []
        if size & 1:
            parts.append(col >= bindparam(f"{name}_0"))
        if size & 2:
            parts.append(col <= bindparam(f"{name}_1"))
        return and_(col != "", *parts)
    return and_(*(col.like(bindparam(f"{name}_{j}"), escape="\\") for j in range(size)))


def _study_statement(shape: _Shape, paged: bool, visible: Any) -> Select[Any]:
    """The study search of this shape, built once per shape and restriction object: the
    same statement object skips SQLAlchemy's construction and cache key (a quarter of a
    C-FIND's search, py-spy). A restriction built afresh per call (a doctor's) misses and
    costs what building did before."""
    key = (shape, paged, id(visible))
    found = _STUDY_STATEMENTS.get(key)
    if found is not None and found[0] is visible:
        return found[1]
    stmt = _study_search_base().where(
        *(_bound_where(i, *part) for i, part in enumerate(shape))
    ).limit(bindparam("page_limit"))
    if paged:
        stmt = stmt.offset(bindparam("page_offset"))
    if visible is not None:
        stmt = stmt.where(visible)
    if len(_STUDY_STATEMENTS) >= _STATEMENTS_KEPT:
        _STUDY_STATEMENTS.clear()
    _STUDY_STATEMENTS[key] = (visible, stmt)
    return stmt


@functools.cache
def _study_search_base() -> Select[Any]:
    """The study search without its conditions and page, built once (columns, joins, the
    modalities subquery and the order: constructing them was a sixth of a date-range
    QIDO's CPU); each search adds its WHERE and LIMIT to a copy."""
    modalities = (
        select(func.aggregate_strings(Series.modality, "\\"))
        .where(Series.study_fk == Study.id, Series.modality != "")
        .scalar_subquery()
    )
    return (
        select(*Study.__table__.c, Patient.patient_id, modalities.label("modalities"),
               PatientLink.resident_id)
        .join(Patient, Patient.id == Study.patient_fk)
        .outerjoin(PatientLink, and_(PatientLink.patient_fk == Study.patient_fk,
                                     PatientLink.state == "linked"))
        .order_by(Study.study_date.desc(), Study.study_time.desc(), Study.id.desc())
    )


def split_modalities(joined: str | None) -> list[str]:
    """The distinct modalities of :func:`search_studies`' ``modalities`` column, sorted."""
    return sorted(set(joined.split("\\"))) if joined else []


def modalities_by_study(conn: Connection, study_ids: Sequence[int]) -> dict[int, list[str]]:
    if not study_ids:
        return {}
    rows = conn.execute(
        select(Series.study_fk, Series.modality)
        .where(Series.study_fk.in_(study_ids), Series.modality != "")
        .distinct()
        .order_by(Series.study_fk, Series.modality)
    ).all()
    found: dict[int, list[str]] = {}
    for study_fk, modality in rows:
        found.setdefault(study_fk, []).append(modality)
    return found


def search_series(
    conn: Connection, conditions: Sequence[Condition], *, limit: int, offset: int,
    visible: ColumnElement[bool] | None = None,
) -> list[Any]:
    stmt: Select[Any] = (
        select(*Series.__table__.c, Study.study_instance_uid)
        .join(Study, Study.id == Series.study_fk)
        .where(*(_where(c) for c in conditions if c.keyword not in STUDY_KEYS))
        .order_by(Study.id, Series.series_number, Series.id)
        .limit(limit)
        .offset(offset)
    )
    stmt = _with_study_filters(stmt, conditions)
    if visible is not None:
        stmt = stmt.where(visible)
    return list(conn.execute(stmt).all())


def search_instances(
    conn: Connection, conditions: Sequence[Condition], *, limit: int, offset: int,
    with_metadata: bool = False, visible: ColumnElement[bool] | None = None,
) -> list[Any]:
    columns: list[Any] = [
        Instance.id, Instance.sop_instance_uid, Instance.sop_class_uid, Instance.instance_number,
        Instance.number_of_frames, Instance.rows, Instance.columns, Instance.transfer_syntax_uid,
        Series.series_instance_uid, Series.modality, Study.study_instance_uid,
    ]  # fmt: skip
    if with_metadata:
        columns.append(Instance.metadata_json)
    stmt: Select[Any] = (
        select(*columns)
        .join(Series, Series.id == Instance.series_fk)
        .join(Study, Study.id == Instance.study_fk)
        .where(*(_where(c) for c in conditions if c.keyword not in STUDY_KEYS))
        .order_by(Series.id, Instance.instance_number, Instance.id)
        .limit(limit)
        .offset(offset)
    )
    stmt = _with_study_filters(stmt, conditions)
    if visible is not None:
        stmt = stmt.where(visible)
    return list(conn.execute(stmt).all())


def _with_study_filters(stmt: Select[Any], conditions: Sequence[Condition]) -> Select[Any]:
    study_conds = [c for c in conditions if c.keyword in STUDY_KEYS]
    if not study_conds:
        return stmt
    if any(c.keyword in COLUMNS and COLUMNS[c.keyword].class_ is Patient for c in study_conds):
        stmt = stmt.join(Patient, Patient.id == Study.patient_fk)
    return stmt.where(*(_where(c) for c in study_conds))
