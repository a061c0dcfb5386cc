"""A kill -9 rig: ``cloudfilm serve`` in a subprocess, clients on both doors, SIGKILL at random.

Shared by ``test_kill9.py`` (a short run in the suite) and ``bench/crash_bench.py`` (thousands
of instances). Clients behave like a hospital's sender: an object counts as delivered only
when the archive acknowledged it (STOW-RS 200, C-STORE 0x0000); anything else is resent,
the same bytes, until acknowledged. The promise checked afterwards: every acknowledged
object is retrievable bit for bit, every index row has its blob, and the sweeper removes
whatever a crash left unreferenced.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage
from sqlalchemy import create_engine, text
from tests.factories import make_ct, multipart, split_multipart, to_bytes
from tests.integration.dimse.support import dataset_sha256

SCU_AE = "CRASHSCU"
HOSPITAL = "H-CRASH"
ANY_TS = 'multipart/related; type="application/dicom"; transfer-syntax=*'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class Acked:
    """One object the archive acknowledged, and what its bytes must hash to."""

    door: str
    study: str
    series: str
    sop: str
    sha256: str  # whole file (STOW-RS stores the part as sent)
    dataset_sha256: str  # data set after the meta group (C-STORE: the server writes the meta)


@dataclass(slots=True)
class Figures:
    cycles: int = 0
    attempts: int = 0
    acknowledged: int = 0
    verified: int = 0
    index_rows: int = 0
    rows_without_blob: int = 0
    orphans_removed: int = 0
    orphans_after: int = 0
    spool_leftovers: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


class Server:
    """``cloudfilm serve`` on free loopback ports over one data folder (and database)."""

    def __init__(self, workdir: Path, database_url: str | None = None) -> None:
        self.workdir = workdir
        self.data = workdir / "data"
        self.database_url = database_url
        self.http_port = free_port()
        self.dicom_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.token = ""
        self._secret = base64.urlsafe_b64encode(os.urandom(32)).decode()

    @property
    def env(self) -> dict[str, str]:
        env = {**os.environ, "TCP_NODELAY": "1", "CLOUDFILM_DATA_DIR": str(self.data)}
        env.pop("CLOUDFILM_DATABASE_URL", None)
        if self.database_url:
            env["CLOUDFILM_DATABASE_URL"] = self.database_url
            # Outside the embedded default, secrets have no default (STYLE.md 7): throwaway ones.
            for name in ("NATIONAL_ID_KEY", "NATIONAL_ID_HMAC_KEY", "ADMIN_TOKEN"):
                env.setdefault(f"CLOUDFILM_SECURITY__{name}", self._secret)
        return env

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicomweb"

    def cli(self, *args: str) -> str:
        """Run ``cloudfilm ARGS`` on this data folder in-process (the same click command
        a shell runs, without paying the ~5 s interpreter start-up); return its output."""
        from click.testing import CliRunner

        from cloudfilm.cli.main import cli

        env = {k: v for k, v in self.env.items() if k.startswith("CLOUDFILM_")}
        if "CLOUDFILM_DATABASE_URL" not in env:
            env["CLOUDFILM_DATABASE_URL"] = None  # type: ignore[assignment]  # unset
        result = CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)
        if result.exit_code != 0:
            raise RuntimeError(f"cloudfilm {' '.join(args)} failed: {result.output[-800:]}")
        return result.output

    def prepare(self) -> None:
        """Migrate; register the sending hospital, its AE title and an API credential
        (outside the embedded default the HTTP door requires one)."""
        self.data.mkdir(parents=True, exist_ok=True)
        self.cli("db", "upgrade")
        self.cli("hospitals", "add", HOSPITAL, "Crash test hospital", "--level", "secondary")
        self.cli("peers", "add", SCU_AE, "127.0.0.1", "104", "--hospital", HOSPITAL)
        issued = self.cli("hospitals", "issue-credential", HOSPITAL)
        self.token = issued.strip().splitlines()[0].rsplit(" ", 1)[1]

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self, timeout: float = 90) -> None:
        """Start ``cloudfilm serve`` and wait until healthy; a server that does not get
        there is killed before the error is raised, so no test leaves one behind."""
        try:
            self._start(timeout)
        except BaseException:
            self.kill()
            raise

    def _start(self, timeout: float) -> None:
        log = (self.workdir / "server.log").open("ab")
        argv = [sys.executable, "-m", "cloudfilm.cli.main", "serve", "--host", "127.0.0.1",
                "--port", str(self.http_port), "--dicom-host", "127.0.0.1",
                "--dicom-port", str(self.dicom_port)]
        # Migrated once by prepare(); each restart skips the Alembic check.
        env = {**self.env, "CLOUDFILM_AUTO_MIGRATE": "false"}
        self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        self.starts += 1
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cloudfilm serve exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.http_port}/healthz",
                             timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"cloudfilm serve did not become healthy:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler, no flush, no goodbye."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # its own session: the group
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 20) -> str:
        path = self.workdir / "server.log"
        text_ = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text_.splitlines()[-lines:])


class Clients:
    """Sender threads: ``stow`` threads POST 1-3 objects per request, ``dimse`` threads
    C-STORE one at a time; both resend until acknowledged."""

    def __init__(self, server: Server, *, stow: int = 2, dimse: int = 1, size: int = 64,
                 seed: int = 0) -> None:
        self.server = server
        self.acked: list[Acked] = []
        self.attempts = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._size = size
        self._threads = [
            threading.Thread(target=self._guard, args=(self._stow_loop, k, seed), daemon=True,
                             name=f"stow-{k}") for k in range(stow)
        ] + [
            threading.Thread(target=self._guard, args=(self._dimse_loop, k, seed), daemon=True,
                             name=f"dimse-{k}") for k in range(dimse)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _guard(self, loop: Callable[[int, int], None], k: int, seed: int) -> None:
        try:
            loop(k, seed)
        except Exception as exc:  # surfaced by the test, never swallowed
            with self._lock:
                self.errors.append(f"{threading.current_thread().name}: {exc!r}")

    def _objects(self, rng: random.Random, patient: str, count: int) -> list[Any]:
        study = generate_uid()
        series = generate_uid()
        return [make_ct(patient_id=patient, study_uid=study, series_uid=series,
                        instance_number=rng.randint(1, 10_000), size=self._size)
                for _ in range(count)]

    def _record(self, door: str, ds: Any, data: bytes) -> None:
        with self._lock:
            self.acked.append(Acked(door, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                    ds.SOPInstanceUID, hashlib.sha256(data).hexdigest(),
                                    dataset_sha256(data)))

    def _stow_loop(self, k: int, seed: int) -> None:
        rng = random.Random(f"{seed}-stow-{k}")
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                batch = self._objects(rng, f"STOW{k}", rng.randint(1, 3))
                payloads = [to_bytes(ds) for ds in batch]
                body, content_type = multipart(payloads)
                while not self._stop.is_set():
                    with self._lock:
                        self.attempts += 1
                    try:
                        response = client.post(f"{self.server.base}/studies", content=body,
                                               headers={"Content-Type": content_type,
                                                        **self.server.auth})
                    except httpx.HTTPError:
                        time.sleep(0.05)  # the server is down: resend the same bytes
                        continue
                    if response.status_code == 200:
                        for ds, data in zip(batch, payloads, strict=True):
                            self._record("stow-rs", ds, data)
                        break
                    if response.status_code != 503:
                        raise AssertionError(f"STOW-RS answered {response.status_code}: "
                                             f"{response.text[:300]}")
                    time.sleep(0.05)

    def _dimse_loop(self, k: int, seed: int) -> None:
        rng = random.Random(f"{seed}-dimse-{k}")
        ae = AE(ae_title=SCU_AE)
        ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
        assoc = None
        pending: list[Any] = []
        try:
            while not self._stop.is_set():
                if not pending:
                    pending = self._objects(rng, f"DIMSE{k}", 5)
                if assoc is None or not assoc.is_established:
                    assoc = ae.associate("127.0.0.1", self.server.dicom_port,
                                         ae_title="CLOUDFILM")
                    if not assoc.is_established:
                        time.sleep(0.05)
                        continue
                ds = pending[0]
                with self._lock:
                    self.attempts += 1
                try:
                    status = assoc.send_c_store(ds)
                except Exception:
                    status = None
                if status and int(status.Status) == 0x0000:
                    self._record("c-store", ds, to_bytes(ds))
                    pending.pop(0)
                elif status and "Status" in status and int(status.Status) != 0xA700:
                    raise AssertionError(f"C-STORE answered 0x{int(status.Status):04X}")
                else:  # aborted (server killed) or out of resources: new association, resend
                    assoc.abort()
                    assoc = None
                    time.sleep(0.05)
        finally:
            if assoc is not None and assoc.is_established:
                assoc.release()


def run(workdir: Path, *, database_url: str | None = None, cycles: int = 4,
        up_seconds: tuple[float, float] = (0.5, 1.5), stow: int = 2, dimse: int = 1,
        size: int = 64, seed: int = 0, log: Callable[[str], None] | None = None) -> Figures:
    """Send while killing the server ``cycles`` times, then check every promise."""
    started = time.monotonic()
    rng = random.Random(seed)
    server = Server(workdir, database_url)
    figures = Figures()
    server.prepare()
    if log:
        log(f"prepared in {time.monotonic() - started:.1f} s")
    server.start()
    if log:
        log(f"first start after {time.monotonic() - started:.1f} s")
    clients = Clients(server, stow=stow, dimse=dimse, size=size, seed=seed)
    clients.start()
    try:
        for cycle in range(cycles):
            time.sleep(rng.uniform(*up_seconds))
            server.kill()
            figures.cycles += 1
            if log:
                log(f"cycle {cycle + 1}/{cycles}: killed with {len(clients.acked)} acknowledged")
            server.start()
        time.sleep(rng.uniform(*up_seconds))  # some traffic after the last restart too
    except BaseException:
        server.stop()  # a failed restart must not leave a server behind the test
        raise
    finally:
        clients.stop()
    figures.attempts, figures.acknowledged = clients.attempts, len(clients.acked)
    figures.problems.extend(clients.errors)
    if log:
        log(f"traffic stopped after {time.monotonic() - started:.1f} s")
    try:
        verify(server, clients.acked, figures)
    finally:
        server.stop()
    if log:
        log(f"verified after {time.monotonic() - started:.1f} s")
    sweep(server, figures)
    spool = server.data / "blobs" / ".tmp" / "incoming"
    if spool.exists():
        figures.spool_leftovers = sum(1 for p in spool.glob("*") if p.is_file())
    figures.seconds = time.monotonic() - started
    return figures


def verify(server: Server, acked: list[Acked], figures: Figures) -> None:
    """Every acknowledged object retrievable bit for bit; every index row has its blob."""
    with httpx.Client(timeout=30) as client:
        for item in acked:
            url = (f"{server.base}/studies/{item.study}/series/{item.series}"
                   f"/instances/{item.sop}")
            response = client.get(url, headers={"Accept": ANY_TS, **server.auth})
            if response.status_code != 200:
                figures.problems.append(f"{item.door} {item.sop}: WADO-RS {response.status_code}")
                continue
            parts = split_multipart(response.content, response.headers["content-type"])
            data = parts[0][1] if len(parts) == 1 else b""
            full = hashlib.sha256(data).hexdigest()
            same = (full == item.sha256 if item.door == "stow-rs"
                    else dataset_sha256(data) == item.dataset_sha256)
            if same:
                figures.verified += 1
            else:
                figures.problems.append(f"{item.door} {item.sop}: bytes differ")
    url = server.database_url or f"sqlite:///{server.data / 'index.sqlite3'}"
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT blob_key, sha256 FROM instance UNION ALL "
                "SELECT blob_key, sha256 FROM instance_version")).all()
    finally:
        engine.dispose()
    figures.index_rows = len(rows)
    for key, sha in rows:
        path = server.data / "blobs" / key
        if not path.exists() or hashlib.sha256(path.read_bytes()).hexdigest() != sha:
            figures.rows_without_blob += 1
            figures.problems.append(f"index row without its blob: {key}")


def sweep(server: Server, figures: Figures) -> None:
    """``cloudfilm storage sweep --min-age 0`` twice: the second must find nothing."""
    first = server.cli("storage", "sweep", "--min-age", "0")
    second = server.cli("storage", "sweep", "--min-age", "0")
    figures.orphans_removed = _count(r"removed (\d+)", first)
    figures.orphans_after = _count(r"(\d+) orphans", second)


def _count(pattern: str, output: str) -> int:
    match = re.search(pattern, output)
    if match is None:
        raise AssertionError(f"unexpected sweep output: {output!r}")
    return int(match.group(1))
