"""`cloudfilm serve --workers 2`: several HTTP processes share one index and blob store,
start reliably, and die with their parent."""

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
import psutil
import pytest
from tests.factories import make_ct, multipart, to_bytes

pytestmark = pytest.mark.commits


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`cloudfilm serve --workers 2` in its own process group, logging to a file (never a
    pipe: workers that outlive the parent would hold it open and block a reader for good)."""

    def __init__(self, tmp_path: Path, port: int, name: str) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = tmp_path / f"{name}.log"
        self._log = self.log_path.open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")}
        exe = Path(sys.executable).with_name("cloudfilm")
        self.process = subprocess.Popen(
            [str(exe), "serve", "--data", str(tmp_path / "data"), "--port", str(port),
             "--dicom-port", str(_free_port()), "--workers", "2"],
            env=env, stdout=subprocess.DEVNULL, stderr=self._log, start_new_session=True)

    def wait_healthy(self, seconds: float = 120) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200:
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.kill_group()
        pytest.fail("the server did not start: "
                    + self.log_path.read_text(errors="replace")[-2000:])

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self._log.close()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=40)
        self.kill_group()


def test_two_worker_processes_serve_one_archive(tmp_path: Path) -> None:
    server = Server(tmp_path, _free_port(), "serve")
    try:
        server.wait_healthy()
        objects = [to_bytes(make_ct(patient_id="W2", instance_number=i)) for i in range(6)]
        # A new connection per request, so that both workers take some.
        for part in (objects[:2], objects[2:4], objects[4:]):
            body, content_type = multipart(part)
            stored = httpx.post(f"{server.base}/dicomweb/studies", content=body, timeout=30,
                                headers={"Content-Type": content_type})
            assert stored.status_code == 200, stored.text
        found = httpx.get(f"{server.base}/dicomweb/instances",
                          params={"PatientID": "W2"}, timeout=30).json()
        assert len(found) == 6
    finally:
        server.stop()


def test_workers_die_with_a_killed_parent_and_the_port_is_free_again(tmp_path: Path) -> None:
    port = _free_port()
    first = Server(tmp_path, port, "first")
    try:
        first.wait_healthy()
        workers = psutil.Process(first.process.pid).children(recursive=True)
        assert workers, "no worker processes were started"
        os.kill(first.process.pid, signal.SIGKILL)  # the parent alone, not its group
        first.process.wait(timeout=10)
        _gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"workers outlived their parent: {[p.pid for p in alive]}"
    finally:
        first.kill_group()
    second = Server(tmp_path, port, "second")
    try:
        second.wait_healthy()
    finally:
        second.stop()
