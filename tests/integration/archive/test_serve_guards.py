"""`cloudfilm serve` as a real server: request-head limit, proxy headers, file modes
(issue 11, findings 4 and 9)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.commits


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    tmp = tmp_path_factory.mktemp("serve")
    port = _free_port()
    exe = Path(sys.executable).with_name("cloudfilm")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CLOUDFILM_") and k != "FORWARDED_ALLOW_IPS"}
    log_path = tmp / "serve.log"
    log = log_path.open("wb")  # a file, never a pipe (see test_serve_workers)
    data = tmp / "data"
    server = subprocess.Popen(
        [str(exe), "serve", "--data", str(data), "--port", str(port),
         "--dicom-port", str(_free_port())],
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
            pytest.fail("the server did not start: " + log_path.read_text(errors="replace")[-2000:])
        yield base, data
    finally:
        server.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)
        log.close()


def _raw_request(base: str, head: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.settimeout(10)
        # The server may close while we are still sending: also a refusal.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head)
        answer = b""
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while chunk := sock.recv(65536):
                answer += chunk
        return answer


def test_a_two_megabyte_header_is_refused(served: tuple[str, Path]) -> None:
    base, _ = served
    started = time.perf_counter()
    answer = _raw_request(base, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: "
                          + b"a" * (2 << 20) + b"\r\n\r\n")
    assert time.perf_counter() - started < 5
    assert answer.startswith(b"HTTP/1.1 431") or answer == b"", answer[:200]
    # ordinary heads, also in a keep-alive sequence, are served
    with httpx.Client(timeout=10) as client:
        for _ in range(3):
            response = client.get(f"{base}/healthz", headers={"X-Fine": "b" * 8000})
            assert response.status_code == 200


def test_forwarded_for_from_loopback_is_not_believed(served: tuple[str, Path]) -> None:
    base, _ = served
    # uvicorn believed X-Forwarded-For from 127.0.0.1 by default: the request would have
    # come "from" 203.0.113.9 (a fresh rate-limit bucket each time, and not local).
    response = httpx.get(f"{base}/api/v1/sms/outbox",
                         headers={"X-Forwarded-For": "203.0.113.9"}, timeout=10)
    assert response.status_code == 200, response.text


def test_a_foreign_host_is_refused_by_the_real_server(served: tuple[str, Path]) -> None:
    base, _ = served
    response = httpx.get(f"{base}/api/v1/sms/outbox",
                         headers={"Host": "rebind.attacker.example"}, timeout=10)
    assert response.status_code == 400


def test_index_and_secrets_are_private(served: tuple[str, Path]) -> None:
    _, data = served
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    for name in ("index.sqlite3", "index.sqlite3-wal", "secrets.toml"):
        path = data / name
        if path.exists():
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, name
    assert (data / "index.sqlite3").exists()
