"""Rows of ``share_link``: a resident's view-only links to one study."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from cloudfilm.infrastructure.db.models import ShareLink


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
