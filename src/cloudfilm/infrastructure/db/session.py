"""Engine and transactions for SQLite (embedded) and PostgreSQL (production).

Services use :meth:`Database.write` and :meth:`Database.read` (ORM Sessions), or
:meth:`Database.reading` and :meth:`Database.writing` (Core connections, hot paths); a write
block commits on exit.
SQLite runs in WAL mode with ``synchronous=FULL`` (a commit is on disk when it returns) and
write transactions start with ``BEGIN IMMEDIATE``, so concurrent writers queue on the
busy timeout instead of failing when a reader upgrades to a writer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker


def dialect_of(conn: Connection | Session) -> str:
    """``sqlite`` or ``postgresql``, for a Core connection or an ORM session."""
    if isinstance(conn, Session):
        return conn.get_bind().dialect.name
    return conn.dialect.name


def as_utc(at: datetime) -> datetime:
    """``at`` in UTC; a naive value is taken as UTC already (SQLite returns stored UTC
    timestamps without an offset)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


class DatabaseUnavailableError(Exception):
    """The database cannot be reached or is out of resources.

    ``disconnected``: the connection turned out to be dead (a restarted server, a dropped
    idle connection); the pool has been renewed, so a caller whose work had not committed
    may retry it once on a fresh connection."""

    def __init__(self, message: str, *, disconnected: bool = False) -> None:
        super().__init__(message)
        self.disconnected = disconnected


def _unavailable(exc: OperationalError) -> DatabaseUnavailableError:
    return DatabaseUnavailableError(f"database unavailable: {exc.orig}",
                                    disconnected=bool(exc.connection_invalidated))


def normalise_url(url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and use the psycopg 3 driver for them."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    url = normalise_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(
            url, connect_args={"timeout": 60, "check_same_thread": False}, **kwargs
        )
        _configure_sqlite(engine)
        return engine
    if "poolclass" not in kwargs:
        # No pre-ping on every checkout: it was one of a search's five round trips. A
        # connection idle for longer than PING_AFTER_IDLE_S is pinged when checked out
        # (what a pre-ping is for: a server restarted or a connection dropped while idle),
        # and none is kept longer than RECYCLE_S (idle-connection timeouts of firewalls and
        # proxies). A busy connection that died anyway (the server restarted under load)
        # fails its statement; SQLAlchemy then renews the whole pool, and the read paths
        # retry once (``DatabaseUnavailableError.disconnected``).
        kwargs.update(pool_size=10, max_overflow=20, pool_recycle=RECYCLE_S)
        engine = create_engine(url, **kwargs)
        _ping_when_idle(engine, PING_AFTER_IDLE_S)
        return engine
    return create_engine(url, **kwargs)


PING_AFTER_IDLE_S = 10.0
"""A pooled PostgreSQL connection idle for longer is pinged before it is handed out."""
RECYCLE_S = 1800
"""Pooled PostgreSQL connections are replaced after this long (seconds)."""


def _ping_when_idle(engine: Engine, idle_s: float) -> None:
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
        if record is not None:
            record.info["cloudfilm_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        # ``info`` belongs to the DBAPI connection: a fresh connection has no stamp.
        since = record.info.pop("cloudfilm_idle_since", None)
        if getattr(dbapi_conn, "closed", False) or getattr(dbapi_conn, "broken", False):
            raise DisconnectionError("connection closed while in the pool")
        if since is None or time.monotonic() - since <= idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            # The pool discards this connection and checks out another (or a new one).
            raise DisconnectionError(f"idle connection is dead: {exc}") from exc


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from pysqlite so that BEGIN is ours to emit.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get("cloudfilm_write") else ""
        conn.exec_driver_sql(f"BEGIN {mode}".strip())


class Database:
    """The index database: an engine and the two kinds of transaction services use."""

    def __init__(self, url: str, **engine_kwargs: Any) -> None:
        self.url = normalise_url(url)
        self.engine = create_db_engine(self.url, **engine_kwargs)
        self.dialect = self.engine.dialect.name
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A read-write transaction, committed when the block ends without error."""
        with self._session(write=True) as session:
            yield session

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only unit of work (rolled back at the end)."""
        with self._session(write=False) as session:
            yield session

    @contextmanager
    def reading(self) -> Iterator[Connection]:
        """A read-only Core connection (rolled back at the end).

        For hot read paths (QIDO, C-FIND, WADO lookups): an ORM Session's set-up and
        tear-down cost about a fifth of a C-FIND's CPU time (profiled).
        """
        try:
            with self.engine.connect() as conn:
                yield conn
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    @contextmanager
    def deciding(self) -> Iterator[Connection]:
        """A Core connection for a read that ends with its audit record (QIDO, C-FIND,
        C-MOVE/C-GET lookups): ``AuditService.write(conn=...)`` appends the record in this
        transaction and commits it, so the decision, what it read and its record are one
        transaction with one commit. On SQLite that needs a write transaction from the start
        (``BEGIN IMMEDIATE``; a read one cannot safely become a write one); on PostgreSQL it
        is an ordinary transaction. Rolled back at the end if nothing committed it.
        """
        try:
            with self.engine.connect() as conn:
                conn.execution_options(cloudfilm_write=self.dialect == "sqlite",
                                       cloudfilm_decide=True)
                yield conn
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    @contextmanager
    def writing(self) -> Iterator[Connection]:
        """A read-write Core connection in a transaction, committed when the block ends
        without error (``BEGIN IMMEDIATE`` on SQLite).

        For short hot writes (the audit record of each QIDO/WADO request): no ORM Session
        set-up, one transaction.
        """
        try:
            with self.engine.connect() as conn:
                conn.execution_options(cloudfilm_write=True)
                with conn.begin():
                    yield conn
        except OperationalError as exc:
            raise _unavailable(exc) from exc

    @contextmanager
    def _session(self, *, write: bool) -> Iterator[Session]:
        session = self._sessions()
        try:
            session.connection(execution_options={"cloudfilm_write": write})
            yield session
            if write:
                session.commit()
            else:
                session.rollback()
        except OperationalError as exc:
            session.rollback()
            raise _unavailable(exc) from exc
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def check(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except DBAPIError as exc:
            raise DatabaseUnavailableError(f"database unavailable: {exc.orig}") from exc

    def dispose(self) -> None:
        self.engine.dispose()
