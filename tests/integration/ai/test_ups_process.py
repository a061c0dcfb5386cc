"""The UPS-RS lifecycle driven by a separate client process over real HTTP (uvicorn): the
engine polls, claims, reads the study over WADO-RS, runs the detector in its own process,
sends findings, completes; the SR lands in the study."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from tests.conftest import TEST_SECURITY

from cloudfilm.app import build_services
from cloudfilm.config import AiSettings, HttpSettings, Settings
from cloudfilm.interfaces.api.http import create_app
from cloudfilm.services.container import Services

from .test_ai import NIDS, NODULES, _chest, _external, _hospitals, _ingest

CLIENT = Path(__file__).with_name("ups_client.py")


@pytest.fixture
def live(db_url: str, tmp_path: Path) -> Iterator[tuple[Services, str]]:
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, auto_migrate=False,
                        security=TEST_SECURITY,
                        http=HttpSettings(allowed_hosts=["testserver", "127.0.0.1"]),
                        ai=AiSettings(settle_seconds=0))
    services = build_services(settings)
    _hospitals(services)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(services), host="127.0.0.1",
                                           port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield services, f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        services.health._db.dispose()


def test_engine_in_another_process(live: tuple[Services, str], tmp_path: Path) -> None:
    services, base = live
    assert services.ai is not None
    with TestClient(create_app(services)) as client:
        _, auth = _external(client, "engine")
        _, other = _external(client, "other engine")
    services.ai.work.forget_cache()
    study = _ingest(services, tmp_path, _chest(NIDS[0], NODULES))
    services.ai.work.schedule_due()
    token = auth["Authorization"].removeprefix("Bearer ")
    other_token = other["Authorization"].removeprefix("Bearer ")
    done = subprocess.run([sys.executable, str(CLIENT), base, token, other_token],
                          capture_output=True,
                          text=True, timeout=180, cwd=Path(__file__).parents[3])
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary == {"before_claim": 403, "subscribe_as_other": 403, "other_global": 201,
                       "subscribe": 201, "channel_anonymous": 403,
                       "claim": 200, "event_claim": "IN PROGRESS", "claim_again": 409,
                       "update_no_tx": "400 warned", "update_wrong_tx": "409 warned",
                       "update_state": "400 warned", "update_odd_tag": "400 warned",
                       "update_as_other": "403",
                       "update": "200", "progress": 50,
                       "read": 40, "findings": 201, "diameters": [8, 12],
                       "complete_wrong_tx": 409, "complete": 200,
                       "event_complete": "COMPLETED", "event_other": "none",
                       "unsubscribe": 200, "after_complete": 403,
                       "update_completed": "409 warned", "state": "COMPLETED"}
    from cloudfilm.services.access.actor import LOCAL_OPERATOR

    results = services.ai.work.results(LOCAL_OPERATOR, study)
    assert len(results) == 2  # the SR and the SEG
    for result in results:
        assert sorted(round(f["diameter_mm"]) for f in result.findings) == [8, 12]
