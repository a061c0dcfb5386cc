"""A rig for the gateway's process tests: ``cloudfilm gateway run`` and ``cloudfilm serve`` as
subprocesses on loopback, a fault-injecting HTTP proxy between them, and a DICOM sender.

The promise checked afterwards: every object the gateway acknowledged (C-STORE 0x0000) is in
the cloud exactly once, with the same data set bytes; nothing is left unsent in the queue.
Shared by ``test_gateway_processes.py`` and ``bench/gateway_bench.py``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]
from sqlalchemy import create_engine, text
from tests.factories import make_ct, to_bytes
from tests.integration.crash.kill9 import Server, free_port
from tests.integration.dimse.support import dataset_sha256

GATEWAY_AE = "GATEWAY"
PACS_AE = "PACS"


class Gateway:
    """``cloudfilm gateway run CONFIG`` in its own process group, logging to a file."""

    def __init__(self, workdir: Path, cloud_url: str, credential: str, *,
                 full_cli: bool = False, host: str = "127.0.0.1",
                 prefix: tuple[str, ...] = (), **sections: Any) -> None:
        self.workdir = workdir
        # ``host``: where its doors listen; ``prefix``: e.g. ``ip netns exec NS`` (link.py).
        self.host = host
        self.prefix = list(prefix)
        # ``cloudfilm gateway run`` or its faster twin ``python -m cloudfilm.cli.gateway run``.
        self.argv = ([str(Path(sys.executable).with_name("cloudfilm")), "gateway"] if full_cli
                     else [sys.executable, "-m", "cloudfilm.cli.gateway"])
        self.dicom_port = free_port()
        self.status_port = free_port()
        self.mllp_port = free_port()
        self.config_path = workdir / "gateway.toml"
        self.queue_dir = workdir / "queue"
        self.watch_dir = workdir / "dropbox"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        conf: dict[str, dict[str, Any]] = {
            "cloud": {"url": cloud_url, "credential": credential, "timeout": 5.0},
            "dicom": {"ae_title": GATEWAY_AE, "host": host, "port": self.dicom_port,
                      "allowed_ae_titles": [PACS_AE], "timeout": 10.0},
            "queue": {"folder": str(self.queue_dir), "quota_bytes": 200 * 1024 * 1024},
            "forward": {"batch_size": 5, "concurrency": 3, "retry_initial_seconds": 0.2,
                        "retry_max_seconds": 1.0},
            "reports": {"mllp_host": "127.0.0.1", "mllp_port": self.mllp_port},
            "watch": {"folder": str(self.watch_dir), "interval_seconds": 0.3},
            "status": {"host": host, "port": self.status_port,
                       "heartbeat_seconds": 1.0},
        }
        for name, values in sections.items():
            conf.setdefault(name, {}).update(values)
        self.config_path.write_text(_toml(conf), encoding="utf-8")

    def start(self, timeout: float = 30) -> None:
        log = (self.workdir / "gateway.log").open("ab")
        self.proc = subprocess.Popen(
            [*self.prefix, *self.argv, "run", str(self.config_path)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.status_url, timeout=1).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the gateway did not start:\n{self.log_tail()}")

    @property
    def status_url(self) -> str:
        return f"http://{self.host}:{self.status_port}/status.json"

    def status(self) -> dict[str, Any]:
        return httpx.get(self.status_url, timeout=5).json()  # type: ignore[no-any-return]

    def wait_drained(self, timeout: float = 60) -> dict[str, Any]:
        """Until nothing waits to be sent; the last status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            counts = status["counts"]
            if counts["received"] == 0 and counts["sending"] == 0:
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"the gateway did not drain: {status}\n{self.log_tail()}")
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL the process group: no shutdown handler runs."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / "gateway.log"
        text_ = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text_.splitlines()[-lines:])


def _toml(conf: dict[str, dict[str, Any]]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    return "\n".join(f"[{name}]\n" + "".join(f"{k} = {value(v)}\n" for k, v in body.items())
                     for name, body in conf.items())


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a connection the gateway dropped on its timeout is the point, not a failure


@dataclass(slots=True)
class ProxyStats:
    requests: int = 0
    passed: int = 0
    refused_500: int = 0
    lost_answers: int = 0
    timeouts: int = 0


class FaultProxy:
    """An HTTP reverse proxy that, at random, answers 500 without forwarding, forwards and
    then answers 502 (the cloud stored it, the gateway must not know), or forwards and then
    holds the answer past the gateway's timeout. ``mode = "pass"`` forwards everything;
    ``mode = "down"`` drops every connection unanswered (the link or the cloud is down)."""

    def __init__(self, target: str, *, seed: int = 0, p_500: float = 0.2,
                 p_lost: float = 0.15, p_timeout: float = 0.1, hold_seconds: float = 6.0,
                 delay: float = 0.0) -> None:
        self.target = target
        self.mode = "chaos"
        self.stats = ProxyStats()
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._p = (p_500, p_lost, p_timeout)
        self._hold = hold_seconds
        self.delay = delay
        self._stopping = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                outer._handle(self)

            def do_GET(self) -> None:
                outer._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def _draw(self) -> str:
        with self._lock:
            self.stats.requests += 1
            if self.mode in ("pass", "down"):
                return self.mode
            roll = self._rng.random()
        p_500, p_lost, p_timeout = self._p
        if roll < p_500:
            return "500"
        if roll < p_500 + p_lost:
            return "lost"
        if roll < p_500 + p_lost + p_timeout:
            return "timeout"
        return "pass"

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length", "0") or 0)
        body = handler.rfile.read(length) if length else b""
        fate = self._draw()
        if fate == "down":  # the link is down: the connection drops without an answer
            handler.close_connection = True
            with contextlib.suppress(OSError):
                handler.connection.shutdown(socket.SHUT_RDWR)
            return None
        if fate == "500":
            with self._lock:
                self.stats.refused_500 += 1
            return self._answer(handler, 500, b"injected failure", "text/plain")
        headers = {k: v for k, v in handler.headers.items()
                   if k.lower() not in ("host", "content-length", "connection")}
        try:
            response = httpx.request(handler.command, self.target + handler.path,
                                     content=body, headers=headers, timeout=30)
        except httpx.HTTPError:
            return self._answer(handler, 502, b"cloud unreachable", "text/plain")
        if self.delay:
            time.sleep(self.delay)
        if fate == "lost":
            with self._lock:
                self.stats.lost_answers += 1
            return self._answer(handler, 502, b"answer lost", "text/plain")
        if fate == "timeout":
            with self._lock:
                self.stats.timeouts += 1
            self._stopping.wait(self._hold)  # the gateway's timeout is shorter
            handler.close_connection = True
            return None
        with self._lock:
            self.stats.passed += 1
        return self._answer(handler, response.status_code, response.content,
                            response.headers.get("content-type", "application/octet-stream"))

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, body: bytes,
                content_type: str) -> None:
        with contextlib.suppress(OSError):
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Content-Length", str(len(body)))
            handler.end_headers()
            handler.wfile.write(body)

    def close(self) -> None:
        self._stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass(frozen=True, slots=True)
class Sent:
    sop: str
    dataset_sha256: str


@dataclass(slots=True)
class Sender:
    """A PACS pushing to the gateway with pynetdicom; an object counts once the gateway
    answered 0x0000. Aborted associations (the gateway killed) are retried, same bytes."""

    port: int
    host: str = "127.0.0.1"
    acked: list[Sent] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    def send(self, datasets: list[Dataset], *, deadline: float = 60,
             stop_on_full: bool = False) -> list[Dataset]:
        """Send each until acknowledged; return those refused with 0xA700 if stopping."""
        ae = AE(ae_title=PACS_AE)
        ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        pending = list(datasets)
        full: list[Dataset] = []
        assoc = None
        end = time.monotonic() + deadline
        try:
            while pending:
                if time.monotonic() > end:
                    raise AssertionError(f"{len(pending)} objects never acknowledged")
                if assoc is None or not assoc.is_established:
                    assoc = ae.associate(self.host, self.port, ae_title=GATEWAY_AE)
                    if not assoc.is_established:
                        time.sleep(0.1)
                        continue
                ds = pending[0]
                try:
                    status = assoc.send_c_store(ds)
                except Exception:
                    status = None
                code = int(status.Status) if status and "Status" in status else None
                if code is not None:
                    self.statuses.append(code)
                if code == 0x0000:
                    self.acked.append(Sent(str(ds.SOPInstanceUID),
                                           dataset_sha256(to_bytes(ds))))
                    pending.pop(0)
                elif code == 0xA700 and stop_on_full:
                    full.append(pending.pop(0))
                elif code is not None and code != 0xA700:
                    raise AssertionError(f"C-STORE answered 0x{code:04X}")
                else:
                    assoc.abort()
                    assoc = None
                    time.sleep(0.1)
        finally:
            if assoc is not None and assoc.is_established:
                assoc.release()
        return full


def echo(port: int, calling: str) -> bool:
    ae = AE(ae_title=calling)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title=GATEWAY_AE)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and int(status.Status) == 0


def studies(patient: str, count: int, per_study: int, size: int = 32) -> list[Dataset]:
    """``count`` studies of ``per_study`` small CT images for one patient."""
    out = []
    for _ in range(count):
        study, series = generate_uid(), generate_uid()
        out += [make_ct(patient_id=patient, study_uid=study, series_uid=series,
                        instance_number=k + 1, size=size) for k in range(per_study)]
    return out


@dataclass(slots=True)
class Tally:
    acknowledged: int = 0
    arrived: int = 0
    identical: int = 0
    duplicated: int = 0
    versions: int = 0
    lost: list[str] = field(default_factory=list)
    differing: list[str] = field(default_factory=list)


def tally(server: Server, acked: list[Sent]) -> Tally:
    """Compare the acknowledged objects with the cloud's index and blobs."""
    url = server.database_url or f"sqlite:///{server.data / 'index.sqlite3'}"
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT sop_instance_uid, blob_key FROM instance")).all()
            versions = conn.execute(text("SELECT COUNT(*) FROM instance_version")).scalar_one()
    finally:
        engine.dispose()
    by_sop: dict[str, list[str]] = {}
    for sop, key in rows:
        by_sop.setdefault(sop, []).append(key)
    result = Tally(acknowledged=len({a.sop for a in acked}), versions=int(versions))
    for item in {a.sop: a for a in acked}.values():
        keys = by_sop.get(item.sop, [])
        if not keys:
            result.lost.append(item.sop)
            continue
        result.arrived += 1
        result.duplicated += len(keys) - 1
        if dataset_sha256(server.data / "blobs" / keys[0]) == item.dataset_sha256:
            result.identical += 1
        else:
            result.differing.append(item.sop)
    return result


def count_instances(server: Server) -> int:
    url = server.database_url or f"sqlite:///{server.data / 'index.sqlite3'}"
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT COUNT(*) FROM instance")).scalar_one())
    finally:
        engine.dispose()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def shutil_which(name: str) -> str | None:
    import shutil

    return shutil.which(name)
