"""Lookups behind retrieval: which blobs make up a study, series or instance, and metadata."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from cloudfilm.infrastructure.db.models import Instance, Series, Study


def _scoped(stmt: Any, study_uid: str, series_uid: str | None,
            sop_uid: str | None) -> Any:
    stmt = stmt.join(Series, Series.id == Instance.series_fk).join(
        Study, Study.id == Instance.study_fk
    ).where(Study.study_instance_uid == study_uid)
    if series_uid is not None:
        stmt = stmt.where(Series.series_instance_uid == series_uid)
    if sop_uid is not None:
        stmt = stmt.where(Instance.sop_instance_uid == sop_uid)
    return stmt.order_by(Series.series_number, Series.id, Instance.instance_number, Instance.id)


def instances(conn: Connection, study_uid: str, series_uid: str | None = None,
              sop_uid: str | None = None) -> list[Any]:
    stmt: Any = select(  # 12 columns: past the typed arity of Select
        Instance.sop_instance_uid, Instance.sop_class_uid, Instance.transfer_syntax_uid,
        Instance.blob_key, Instance.size_bytes, Instance.sha256, Instance.number_of_frames,
        Series.series_instance_uid, Study.study_instance_uid, Study.hospital_id,
        Instance.original_transfer_syntax_uid, Instance.storage_tier,
    )  # fmt: skip
    return list(conn.execute(_scoped(stmt, study_uid, series_uid, sop_uid)).all())


def metadata(conn: Connection, study_uid: str, series_uid: str | None = None,
             sop_uid: str | None = None) -> list[str]:
    stmt = select(Instance.metadata_json)
    return list(conn.scalars(_scoped(stmt, study_uid, series_uid, sop_uid)).all())


def referenced_blob_keys(conn: Connection, keys: list[str]) -> set[str]:
    from cloudfilm.infrastructure.db.models import InstanceVersion, ReconciliationItem

    found = set(conn.scalars(select(Instance.blob_key).where(Instance.blob_key.in_(keys))))
    found |= set(
        conn.scalars(select(InstanceVersion.blob_key).where(InstanceVersion.blob_key.in_(keys)))
    )
    # Objects held for reconciliation (and kept after it: the original as received).
    found |= set(conn.scalars(select(ReconciliationItem.blob_key)
                              .where(ReconciliationItem.blob_key.in_(keys))))
    return found
