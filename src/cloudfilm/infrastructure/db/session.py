"""Engine and transactions for SQLite (embedded) and PostgreSQL (production).

Services use :meth:`Database.write` and :meth:`Database.read` (ORM Sessions), or
:meth:`Database.reading` and :meth:`Database.writing` (Core connections, hot paths); a write
block commits on exit.
SQLite runs in WAL mode with ``synchronous=FULL`` (a commit is on disk when it returns) and
write transactions start with ``BEGIN IMMEDIATE``, so concurrent writers queue on the
busy timeout instead of failing when a reader upgrades to a writer.

The one exception to "a commit is on disk when it returns": :meth:`Database.auditing_read`,
the connection of a read (search, retrieve, view) that ends with its audit record. Its
transactions may write nothing but audit records (any other write is refused), and they
commit without waiting for the disk flush: ``synchronous_commit=off`` on PostgreSQL (in the
WAL, flushed by the WAL writer within ~3 x ``wal_writer_delay``), ``synchronous=NORMAL`` on
SQLite in WAL mode (written to the OS, survives a process crash, on disk with the next full
commit or checkpoint). A power loss can lose the last such records (a suffix of the chain,
which stays consistent); every other write keeps full durability.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
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
        _guard_audit_reads(engine)
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
    else:
        engine = create_engine(url, **kwargs)
    _guard_audit_reads(engine)
    return engine


AUDIT_TABLES = frozenset({"audit_event", "audit_event_resident", "audit_chain_head"})
"""What a :meth:`Database.auditing_read` transaction may write."""

_AUDIT_READ = "cloudfilm_audit_read"
_WRITES = re.compile(
    r"\b(INSERT\s+(?:OR\s+\w+\s+)?INTO|REPLACE\s+INTO|UPDATE|DELETE\s+FROM|MERGE\s+INTO"
    r"|TRUNCATE|CREATE|DROP|ALTER|COPY|PRAGMA|VACUUM|ATTACH|DETACH|REINDEX|GRANT|REVOKE"
    r"|CALL|LOCK)\b(?:\s+(?:TABLE|ONLY)\b)?\s*\"?(\w*)", re.IGNORECASE)
# What follows UPDATE in ``SELECT ... FOR UPDATE [OF|SKIP LOCKED|NOWAIT]`` and in
# ``ON CONFLICT DO UPDATE SET``: not a table.
_NOT_TABLES = frozenset({"", "set", "of", "skip", "nowait"})


class AuditReadViolationError(RuntimeError):
    """Something other than an audit record was written on an ``auditing_read()``
    connection (whose commit does not wait for the disk flush)."""


@lru_cache(maxsize=512)
def _audit_write(statement: str) -> bool | None:
    """None: ``statement`` writes nothing; True: it writes audit tables only; False: it
    writes something else (or does something that is not a plain read)."""
    writes = False
    for verb, target in _WRITES.findall(statement):
        word = verb.split()[0].upper()
        if word == "UPDATE" and target.lower() in _NOT_TABLES:
            continue
        if word not in ("INSERT", "UPDATE", "DELETE") or target.lower() not in AUDIT_TABLES:
            return False
        writes = True
    return True if writes else None


def _guard_audit_reads(engine: Engine) -> None:
    """Refuse any statement but reads and audit appends on an ``auditing_read()``
    connection; on PostgreSQL, turn ``synchronous_commit`` off before each audit append
    (``SET LOCAL``: for the rest of this transaction only)."""
    postgres = engine.dialect.name == "postgresql"

    @event.listens_for(engine, "before_cursor_execute")
    def _check(conn: Any, cursor: Any, statement: str, _params: Any, _context: Any,
               _many: bool) -> None:
        if not conn._execution_options.get(_AUDIT_READ):
            return
        kind = _audit_write(statement)
        if kind is False:
            raise AuditReadViolationError(
                "an auditing_read() transaction may only write audit records: "
                + statement[:80])
        if kind and postgres:
            cursor.execute("SET LOCAL synchronous_commit TO off")


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
    def auditing_read(self) -> Iterator[Connection]:
        """A Core connection for a read that ends with its audit record (QIDO, C-FIND,
        WADO and C-MOVE/C-GET look-ups, the viewer's frame records); its commit does not
        wait for the disk flush.

        ``AuditService.write(conn=...)`` appends the record in this transaction and commits
        it before the answer is sent, so the decision, what it read and its record are one
        transaction with one commit; only the wait for the physical flush goes. On SQLite
        that needs a write transaction from the start (``BEGIN IMMEDIATE``; a read one
        cannot safely become a write one); on PostgreSQL it is an ordinary transaction.
        Rolled back at the end if nothing committed it. Anything but a read or
        an audit append on this connection raises :class:`AuditReadViolationError`, so no
        other write can ride on the relaxed commit. PostgreSQL: ``SET LOCAL
        synchronous_commit TO off`` before the transaction's first append (ends with the
        transaction). SQLite in WAL mode: ``PRAGMA synchronous=NORMAL`` for the block (it
        cannot change inside a transaction), back to the previous setting after it; not in
        WAL mode, the setting is left as it is (NORMAL without WAL is not crash-safe).
        """
        try:
            with self.engine.connect() as conn:
                conn.execution_options(cloudfilm_write=self.dialect == "sqlite",
                                       cloudfilm_decide=True, **{_AUDIT_READ: True})
                if self.dialect != "sqlite":
                    yield conn
                    return
                raw = conn.connection.dbapi_connection
                if raw is None:  # pragma: no cover - a fresh checkout always has one
                    raise RuntimeError("no DBAPI connection")
                cur = raw.cursor()
                try:
                    wal = str(cur.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal"
                    previous = int(cur.execute("PRAGMA synchronous").fetchone()[0])
                    if wal and previous > 1:
                        cur.execute("PRAGMA synchronous=NORMAL")
                finally:
                    cur.close()
                try:
                    yield conn
                finally:
                    if conn.in_transaction():
                        conn.rollback()
                    if wal and previous > 1:
                        try:
                            cur = raw.cursor()
                            cur.execute(f"PRAGMA synchronous={previous}")
                            cur.close()
                        except Exception:
                            # Never hand a relaxed connection back to the pool.
                            conn.invalidate()
                            raise
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
