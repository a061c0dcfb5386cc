"""`cloudfilm serve --workers 2`: several HTTP processes share one index and blob store."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.factories import make_ct, multipart, to_bytes

pytestmark = pytest.mark.commits


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_worker_processes_serve_one_archive(tmp_path: Path) -> None:
    port = _free_port()
    exe = Path(sys.executable).with_name("cloudfilm")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")}
    # stderr goes to a file, never a pipe: worker processes that outlive the parent would
    # hold a pipe open and a read of it would block the test for good.
    log_path = tmp_path / "serve.log"
    log = log_path.open("wb")
    server = subprocess.Popen(
        [str(exe), "serve", "--data", str(tmp_path / "data"), "--port", str(port),
         "--dicom-port", str(_free_port()), "--workers", "2"],
        env=env, stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            _kill_group(server)
            pytest.fail("the server did not start: " + log_path.read_text(errors="replace")[-2000:])
        objects = [to_bytes(make_ct(patient_id="W2", instance_number=i)) for i in range(6)]
        # A new connection per request, so that both workers take some.
        for part in (objects[:2], objects[2:4], objects[4:]):
            body, content_type = multipart(part)
            stored = httpx.post(f"{base}/dicomweb/studies", content=body, timeout=30,
                                headers={"Content-Type": content_type})
            assert stored.status_code == 200, stored.text
        found = httpx.get(f"{base}/dicomweb/instances", params={"PatientID": "W2"}).json()
        assert len(found) == 6
    finally:
        server.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=40)
        _kill_group(server)
        log.close()


def _kill_group(server: subprocess.Popen[bytes]) -> None:
    """Kill the server and any worker it left behind (they share its process group)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(server.pid, signal.SIGKILL)
    server.wait(timeout=10)
