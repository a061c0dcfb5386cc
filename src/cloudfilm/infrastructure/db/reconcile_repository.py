"""Queries behind the reconciliation queue (objects stored but kept out of the index).

Repositories never commit; the calling service owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Row, Table, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db.models import Hospital, ReconciliationItem

_item = cast(Table, ReconciliationItem.__table__)
_hospital = cast(Table, Hospital.__table__)
_INSERT: dict[str, Any] = {}

_COLUMNS = (*_item.c, _hospital.c.code.label("hospital_code"),
            _hospital.c.name.label("hospital_name"))


def hold(session: Session, values: dict[str, Any]) -> bool:
    """Add an item unless this hospital already sent these exact bytes under this SOP
    Instance UID (a resend); True when this call added it."""
    dialect = session.get_bind().dialect.name
    stmt = _INSERT.get(dialect)
    if stmt is None:
        ins = postgresql.insert if dialect == "postgresql" else sqlite.insert
        # RETURNING, not rowcount: psycopg reports -1 for ON CONFLICT DO NOTHING.
        stmt = _INSERT[dialect] = ins(_item).on_conflict_do_nothing().returning(_item.c.id)
    return session.connection().execute(stmt, values).first() is not None


def items(session: Session, *, hospital_id: int | None, state: str | None, limit: int,
          after_id: int = 0) -> Sequence[Row[Any]]:
    """Items in id order, of one hospital (or all when ``hospital_id`` is None)."""
    stmt = (select(*_COLUMNS).join(_hospital, _hospital.c.id == _item.c.hospital_id)
            .where(_item.c.id > after_id).order_by(_item.c.id).limit(limit))
    if hospital_id is not None:
        stmt = stmt.where(_item.c.hospital_id == hospital_id)
    if state is not None:
        stmt = stmt.where(_item.c.state == state)
    return session.connection().execute(stmt).all()


def item(session: Session, item_id: int) -> Row[Any] | None:
    stmt = (select(*_COLUMNS).join(_hospital, _hospital.c.id == _item.c.hospital_id)
            .where(_item.c.id == item_id))
    return session.connection().execute(stmt).first()


def resolve(session: Session, item_id: int, *, state: str, by: str, result_json: str,
            now: datetime) -> bool:
    """Settle an open item; False when it was no longer open (settled concurrently)."""
    result = session.connection().execute(
        update(_item).where(_item.c.id == item_id, _item.c.state == "open")
        .values(state=state, resolved_by=by[:128], result_json=result_json, resolved_at=now))
    return bool(result.rowcount)


def open_counts(session: Session) -> dict[str, int]:
    """Open items per reason (for /metrics: a bounded label set)."""
    rows = session.connection().execute(
        select(_item.c.reason, func.count()).where(_item.c.state == "open")
        .group_by(_item.c.reason))
    return {str(r[0]): int(r[1]) for r in rows}
