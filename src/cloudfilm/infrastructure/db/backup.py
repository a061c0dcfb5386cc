"""Consistent copies of the index: SQLite's online backup API, and a table-by-table copy
from the embedded SQLite index into PostgreSQL (``cloudfilm migrate-index``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, delete, func, insert, select, text
from sqlalchemy.engine import make_url

from cloudfilm.infrastructure.db import migrate
from cloudfilm.infrastructure.db.models import (
    Base,
    Hospital,
    Instance,
    InstanceVersion,
    ReconciliationItem,
)
from cloudfilm.infrastructure.db.session import normalise_url


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL, or None for another database."""
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def sqlite_snapshot(source: Path, target: Path) -> None:
    """Copy a live SQLite database consistently (writers may go on meanwhile)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(target)
    try:
        with dst:
            src.backup(dst, pages=4096)
    finally:
        dst.close()
        src.close()


def mark_all_hot(sqlite_file: Path) -> None:
    """A restore writes every blob into the main (hot) store: record that, so the tier jobs
    and the scrubber look for each blob where it is (an index from before tiers has no
    ``storage_tier`` yet: its migration defaults it to hot)."""
    conn = sqlite3.connect(sqlite_file)
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(instance)")}
        if "storage_tier" in columns:
            with conn:
                conn.execute("UPDATE instance SET storage_tier = 'hot' "
                             "WHERE storage_tier != 'hot'")
    finally:
        conn.close()


def blobs_of(sqlite_file: Path) -> Iterator[tuple[str, str, int]]:
    """(blob key, SHA-256, size) of every blob the index file references."""
    engine = create_engine(f"sqlite:///{sqlite_file}")
    try:
        with engine.connect() as conn:
            for r in conn.execute(select(Instance.blob_key, Instance.sha256,
                                         Instance.size_bytes)):
                yield r[0], r[1], r[2]
            for r in conn.execute(
                    select(InstanceVersion.blob_key, InstanceVersion.sha256,
                           InstanceVersion.size_bytes).where(InstanceVersion.blob_key != "")):
                yield r[0], r[1], r[2]
            for r in conn.execute(select(ReconciliationItem.blob_key, ReconciliationItem.sha256,
                                         ReconciliationItem.size_bytes)):
                yield r[0], r[1], r[2]
    finally:
        engine.dispose()


def copy_index(source_url: str, target_url: str, *, batch: int = 2000) -> dict[str, int]:
    """Copy every table of the index at ``source_url`` into an empty, migrated database
    at ``target_url`` (primary keys kept; PostgreSQL sequences moved past them).

    Raises
    ------
    ValueError
        The target already holds data.
    """
    migrate.upgrade(target_url)
    src = create_engine(normalise_url(source_url))
    dst = create_engine(normalise_url(target_url))
    counts: dict[str, int] = {}
    try:
        with src.connect() as read, dst.begin() as write:
            for model in (Hospital, Instance):
                if write.execute(select(func.count()).select_from(model)).scalar_one():
                    raise ValueError(f"the target database already holds "
                                     f"{model.__tablename__} rows; migrate into an empty one")
            # Rows the migrations seed (e.g. the audit chain's head) come from the source.
            for table in reversed(Base.metadata.sorted_tables):
                write.execute(delete(table))
            for table in Base.metadata.sorted_tables:
                n = 0
                result = read.execution_options(yield_per=batch).execute(select(table))
                for rows in result.mappings().partitions(batch):
                    write.execute(insert(table), [dict(r) for r in rows])
                    n += len(rows)
                counts[table.name] = n
                if write.dialect.name == "postgresql" and "id" in table.c and n:
                    write.execute(text(
                        f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                        f"(SELECT max(id) FROM \"{table.name}\"))"))
    finally:
        src.dispose()
        dst.dispose()
    return counts
