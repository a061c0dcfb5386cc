"""Rows of ``share_link`` (a resident's view-only links to one study) and of
``portal_preference``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update

from cloudfilm.infrastructure.db.models import PortalPreference, ShareLink


def add(conn: Any, **values: Any) -> int:
    return int(conn.execute(insert(ShareLink).values(uses=0, failed_pins=0, revoked_at=None,
                                                     **values)).inserted_primary_key[0])


def by_token_hash(conn: Any, token_hash: str) -> Any:
    return conn.execute(select(ShareLink).where(ShareLink.token_hash == token_hash)).first()


def of_residents(conn: Any, resident_ids: list[int]) -> list[Any]:
    return list(conn.execute(select(ShareLink).where(ShareLink.resident_id.in_(resident_ids))
                             .order_by(ShareLink.created_at.desc(), ShareLink.id.desc())
                             .limit(100)).all())


def revoke(conn: Any, link_id: int, resident_ids: list[int], at: datetime) -> int:
    return int(conn.execute(update(ShareLink).where(
        ShareLink.id == link_id, ShareLink.resident_id.in_(resident_ids),
        ShareLink.revoked_at.is_(None)).values(revoked_at=at)).rowcount)


def count_use(conn: Any, link_id: int) -> None:
    conn.execute(update(ShareLink).where(ShareLink.id == link_id)
                 .values(uses=ShareLink.uses + 1))


def count_failed_pin(conn: Any, link_id: int) -> None:
    conn.execute(update(ShareLink).where(ShareLink.id == link_id)
                 .values(failed_pins=ShareLink.failed_pins + 1))


def elderly(conn: Any, account_id: int) -> bool | None:
    value = conn.execute(select(PortalPreference.elderly)
                         .where(PortalPreference.account_id == account_id)).scalar()
    return None if value is None else bool(value)


def set_elderly(conn: Any, account_id: int, value: bool, at: datetime) -> None:
    # Delete and insert: one statement pair that works the same on SQLite and PostgreSQL.
    conn.execute(delete(PortalPreference).where(PortalPreference.account_id == account_id))
    conn.execute(insert(PortalPreference).values(account_id=account_id, elderly=value,
                                                 updated_at=at))
