"""Shared fixtures: both index databases, services on a temp folder, an HTTP client.

Every test that takes ``db_url`` runs twice: on SQLite (a migrated template file copied per
test: real commits, WAL) and on PostgreSQL (one migrated database per xdist worker, tables
emptied before each test). PostgreSQL comes from ``CLOUDFILM_TEST_PG_URL`` (default
127.0.0.1:5432, trust auth); unreachable means skip locally and fail under CI.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import structlog
from pydantic import SecretStr
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.pool import NullPool

from cloudfilm.app import build_services, configure_dicom_libraries
from cloudfilm.config import HttpSettings, SecuritySettings, Settings
from cloudfilm.infrastructure.db import migrate
from cloudfilm.infrastructure.db.models import Base
from cloudfilm.services.container import Services

PG_ADMIN_URL = os.environ.get(
    "CLOUDFILM_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
IN_CI = bool(os.environ.get("CI"))
SHARED_TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "dicom"

configure_dicom_libraries()


def pytest_sessionstart(session: pytest.Session) -> None:
    # Tests skip real-file cases when the shared set is absent (a fresh clone elsewhere);
    # in CI it must be there, so its absence fails the run instead of skipping silently.
    if IN_CI and not SHARED_TESTDATA.is_dir():
        raise pytest.UsageError(f"CI=true but the shared test data is missing: {SHARED_TESTDATA}")


def shared_file(relative: str) -> Path:
    """A file of the shared real-data set; skips the test when the set is absent (not in CI)."""
    path = SHARED_TESTDATA / relative
    if not path.exists():
        if IN_CI:
            pytest.fail(f"shared test data missing in CI: {path}")
        pytest.skip(f"shared test data not present: {path}")
    return path


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo what a command run in-process (click's CliRunner: ``serve``, ``dimse``) does to
    this process's logging: ``configure_logging`` puts structlog's console renderer on the
    root logger, writing to the runner's captured stderr, and lowers the level to INFO.
    Left in place, every later record in this xdist worker went through it, each logged
    exception drawn as a syntax-highlighted rich traceback (a hypothesis test of C-FIND
    identifiers took 40 s instead of 1 s after tests/unit/cli/test_config_errors.py)."""
    root = logging.getLogger()
    level = root.level
    config = structlog.get_config()
    yield
    installed = [h for h in root.handlers
                 if isinstance(h.formatter, structlog.stdlib.ProcessorFormatter)]
    if installed or root.level != level:
        for handler in installed:
            root.removeHandler(handler)
        root.setLevel(level)
        structlog.configure(**config)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "index.sqlite3"
    migrate.upgrade(f"sqlite:///{path}")
    return path


def run_tag(worker_id: str) -> str:
    """Unique per test run: two runs on one PostgreSQL server must not drop each other's
    databases (xdist workers share their parent's pid)."""
    return f"{os.getppid() if worker_id != 'master' else os.getpid()}_{worker_id}"


@contextmanager
def throwaway_pg_database(name: str) -> Iterator[str]:
    """Create an empty PostgreSQL database, yield its URL, drop it afterwards.

    Unreachable PostgreSQL skips the test locally and fails it in CI.
    """
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI and unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pg_database(worker_id: str) -> Iterator[str]:
    with throwaway_pg_database(f"cloudfilm_test_{run_tag(worker_id)}") as url:
        migrate.upgrade(url)
        engine = create_engine(url, poolclass=NullPool)
        try:
            with engine.begin() as conn:  # the first test starts from empty tables too
                _truncate(conn, [t.name for t in Base.metadata.sorted_tables])
            yield url
        finally:
            engine.dispose()


# Tables whose append-only row triggers refuse DELETE (TRUNCATE is no row event).
_APPEND_ONLY = frozenset({"audit_event", "audit_event_resident", "recognition_change"})


def _truncate(conn: Connection, tables: list[str]) -> None:
    conn.execute(text(f"TRUNCATE {', '.join(map(_quoted, tables))} RESTART IDENTITY CASCADE"))


def _quoted(name: str) -> str:
    return f'"{name}"'


def _empty_pg(url: str) -> None:
    """Every table empty and every sequence restarted, as ``TRUNCATE ... RESTART IDENTITY``
    of all tables leaves them, but at a fraction of the cost: one query finds the few tables
    a test wrote to and only those are emptied (TRUNCATE of all 57 tables took 1.2-2.2 s a
    test on the loaded 2-core machine; the probe ~40 ms)."""
    tables = [t.name for t in Base.metadata.sorted_tables]
    probe = " UNION ALL ".join(f"(SELECT '{t}' FROM {_quoted(t)} LIMIT 1)" for t in tables)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            written = set(conn.execute(text(probe)).scalars())
            sequences = conn.execute(text(
                "SELECT quote_ident(schemaname) || '.' || quote_ident(sequencename)"
                " FROM pg_sequences WHERE last_value IS NOT NULL")).scalars().all()
            # Children before parents (reverse dependency order), so no foreign key refuses.
            for table in reversed(tables):
                if table in written and table not in _APPEND_ONLY:
                    conn.execute(text(f"DELETE FROM {_quoted(table)}"))
            if written & _APPEND_ONLY:
                _truncate(conn, sorted(written & _APPEND_ONLY))
            for sequence in sequences:
                conn.execute(text(f"ALTER SEQUENCE {sequence} RESTART"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "index.sqlite3"
        shutil.copyfile(template, target)
        return f"sqlite:///{target}"
    url: str = request.getfixturevalue("pg_database")
    _empty_pg(url)
    return url


# Fixed test secrets (a PostgreSQL deployment must configure them; see app.resolve_secrets).
TEST_SECURITY = SecuritySettings(
    national_id_key=SecretStr("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="),
    national_id_hmac_key=SecretStr("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="),
    admin_token=SecretStr("test-admin-token"),
    # Existing DICOMweb tests run as the local operator: Starlette's TestClient reports the
    # client host "testclient", listed here (production lists only loopback addresses).
    # Explicit "open" on PostgreSQL needs the explicit override, as in production.
    local_mode="open",
    local_clients=["127.0.0.1", "::1", "testclient"],
    allow_open_local_mode=True,
)


# Starlette's TestClient sends "Host: testserver"; production allows localhost names only.
TEST_HTTP = HttpSettings(allowed_hosts=["testserver"])


def settings_to_env(monkeypatch: pytest.MonkeyPatch, settings: Settings, db_url: str) -> None:
    """Point a ``cloudfilm`` command run in-process (click's CliRunner) at the test's
    database, data folder and secrets, the way an operator's environment would."""
    monkeypatch.setenv("CLOUDFILM_DATABASE_URL", db_url)
    monkeypatch.setenv("CLOUDFILM_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CLOUDFILM_AUTO_MIGRATE", "false")
    for name in ("national_id_key", "national_id_hmac_key", "admin_token"):
        secret = getattr(settings.security, name)
        monkeypatch.setenv(f"CLOUDFILM_SECURITY__{name.upper()}", secret.get_secret_value())


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url=db_url, auto_migrate=False,
                    security=TEST_SECURITY, http=TEST_HTTP)


@pytest.fixture
def services(settings: Settings) -> Iterator[Services]:
    built = build_services(settings)
    yield built
    built.health._db.dispose()


@pytest.fixture
def client(services: Services) -> Iterator[object]:
    from fastapi.testclient import TestClient

    from cloudfilm.interfaces.api.http import create_app

    with TestClient(create_app(services)) as test_client:
        yield test_client
