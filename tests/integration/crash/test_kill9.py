"""kill -9 while hospitals send: nothing acknowledged is lost, nothing half-written stays.

``cloudfilm serve`` runs as a subprocess on free ports; two STOW-RS senders and one C-STORE
sender resend until acknowledged while the server is SIGKILLed at random moments and
restarted. ``bench/crash_bench.py`` runs the same rig for thousands of objects.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import run_tag, throwaway_pg_database
from tests.integration.crash import kill9

pytestmark = pytest.mark.commits


@pytest.fixture(params=["sqlite", "postgresql"])
def crash_db(request: pytest.FixtureRequest, worker_id: str) -> object:
    """None for SQLite in the data folder, or the URL of a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    with throwaway_pg_database(f"cloudfilm_crash_{run_tag(worker_id)}") as url:
        yield url


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
