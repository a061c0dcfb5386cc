"""kill -9 while hospitals send: nothing acknowledged is lost, nothing half-written stays.

``cloudfilm serve`` runs as a subprocess on free ports; two STOW-RS senders and one C-STORE
sender resend until acknowledged while the server is SIGKILLed at random moments and
restarted. ``bench/crash_bench.py`` runs the same rig for thousands of objects.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from tests.conftest import IN_CI, PG_ADMIN_URL
from tests.integration.crash import kill9

pytestmark = pytest.mark.commits


@pytest.fixture(params=["sqlite", "postgresql"])
def crash_db(request: pytest.FixtureRequest, worker_id: str) -> object:
    """None for SQLite in the data folder, or the URL of a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    name = f"cloudfilm_crash_{worker_id}"
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
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_kill9_loses_nothing_acknowledged(tmp_path: Path, crash_db: str | None) -> None:
    figures = kill9.run(tmp_path, database_url=crash_db, cycles=3, up_seconds=(0.5, 1.5))
    print(f"\nkill -9: {figures}")
    assert figures.problems == []
    assert figures.cycles == 3
    assert figures.acknowledged > 20, "too little traffic to mean anything"
    assert figures.verified == figures.acknowledged
    assert figures.rows_without_blob == 0
    assert figures.index_rows >= figures.acknowledged
    assert figures.orphans_after == 0
