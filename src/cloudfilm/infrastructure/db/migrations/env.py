"""Alembic environment: the URL comes from the caller (``cloudfilm db upgrade``), not a file."""

from __future__ import annotations

from alembic import context
from sqlalchemy import pool

from cloudfilm.infrastructure.db.models import Base
from cloudfilm.infrastructure.db.session import create_db_engine

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=True, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_db_engine(config.get_main_option("sqlalchemy.url") or "",
                              poolclass=pool.NullPool)
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # Batch migrations rebuild tables (copy, drop, rename); with foreign keys on,
            # dropping a referenced table fails. Set outside any transaction, where SQLite
            # honours it (Alembic's documented batch-mode recipe).
            conn.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        context.configure(connection=conn, target_metadata=target_metadata,
                          render_as_batch=True, compare_type=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; give a database URL")
run_migrations_online()
