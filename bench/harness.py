"""Run a server process for a benchmark: start it, wait until it answers, measure it, stop it.

Shared by ``orthanc.py`` and ``server.py``. CPU time and peak RSS come straight from
``/proc`` (utime+stime, VmHWM) so both servers are measured the same way.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

BENCH_DIR = Path(__file__).resolve().parent
WORK_DIR = BENCH_DIR / "work"
PG_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class ServerUnavailable(RuntimeError):
    """The server cannot run here (missing binary, no PostgreSQL, failed start); skip it."""


def free_port() -> int:
    """A TCP port that is free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` (all its threads), 0 if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def peak_rss_bytes(pid: int) -> int:
    """VmHWM (peak resident set) of ``pid``, 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def recreate_pg_database(name: str) -> None:
    """Drop and create ``name`` on 127.0.0.1:5432 (trust auth); ServerUnavailable if no PG."""
    import psycopg

    try:
        with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise ServerUnavailable(f"PostgreSQL at 127.0.0.1:5432 is not usable: {exc}") from exc


def pg_backend_cpu_seconds(database: str) -> float:
    """CPU time of the PostgreSQL backends connected to ``database`` right now."""
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,)
        ).fetchall()
    return sum(cpu_seconds(pid) for (pid,) in rows)


class PgCpuMeter:
    """CPU used by the backends of ``database`` while the ``with`` block runs.

    A pool may close connections (SQLAlchemy's overflow) before the block ends, so the
    backends are sampled every 0.1 s and each one's last reading counts; only a backend that
    lives less than that between two samples escapes.
    """

    def __init__(self, database: str) -> None:
        self.database = database
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self._stop = threading.Event()

    def _sample(self, conn: Any) -> None:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", (self.database,)
        ).fetchall()
        for (pid,) in rows:
            cpu = cpu_seconds(pid)
            if cpu:
                self.last[pid] = cpu

    def _poll(self, conn: Any) -> None:
        while not self._stop.wait(0.1):
            self._sample(conn)

    def __enter__(self) -> PgCpuMeter:
        import psycopg

        self._conn = psycopg.connect(PG_DSN, autocommit=True, connect_timeout=5)
        self._sample(self._conn)
        self.first = dict(self.last)
        self._thread = threading.Thread(target=self._poll, args=(self._conn,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample(self._conn)
        self._conn.close()

    @property
    def seconds(self) -> float:
        return sum(cpu - self.first.get(pid, 0.0) for pid, cpu in self.last.items())


class ManagedServer:
    """Context manager around one server process; subclasses fill in argv and URLs.

    After exit, ``peak_rss`` (bytes, summed over the process tree) and ``cpu_total``
    (seconds) hold the figures read just before the process was stopped.
    """

    name = "server"
    startup_timeout = 60.0
    pg_database: str | None = None  # set when the server uses PostgreSQL

    def __init__(self, *, keep: bool = False) -> None:
        WORK_DIR.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-", dir=WORK_DIR))
        self.keep = keep
        self.http_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.env: dict[str, str] = {}
        self.peak_rss = 0
        self.cpu_total = 0.0

    # Subclasses provide these.
    def prepare(self) -> tuple[list[str], dict[str, str]]:
        """Write configuration; return argv and extra environment."""
        raise NotImplementedError

    @property
    def health_url(self) -> str:
        raise NotImplementedError

    @property
    def dicomweb(self) -> str:
        """DICOMweb base URL without trailing slash."""
        raise NotImplementedError

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def _pids(self) -> list[int]:
        assert self.proc is not None
        try:
            children = psutil.Process(self.proc.pid).children(recursive=True)
        except psutil.Error:
            children = []
        return [self.proc.pid, *(c.pid for c in children)]

    def cpu_seconds(self) -> float:
        """CPU time used so far by the server process tree."""
        return sum(cpu_seconds(pid) for pid in self._pids())

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def __enter__(self) -> ManagedServer:
        try:
            argv, extra_env = self.prepare()
            # dcmtk and pynetdicom sockets honour TCP_NODELAY=1; without it each DIMSE
            # message waits ~40 ms on loopback (BENCHMARKING.md).
            env = {**os.environ, "TCP_NODELAY": "1", **extra_env}
            self.env = env  # for the server's own CLI beside it (same index and secrets)
            with self.log_path.open("wb") as log:
                self.proc = subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.workdir,
                    start_new_session=True,
                )
            self._wait_ready()
        except BaseException:
            self._stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerUnavailable(
                    f"{self.name} exited with code {self.proc.returncode} at start-up:\n"
                    f"{self.log_tail()}"
                )
            try:
                if httpx.get(self.health_url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise ServerUnavailable(
            f"{self.name} did not answer {self.health_url} within {self.startup_timeout:.0f} s:"
            f"\n{self.log_tail()}"
        )

    def _stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            pids = self._pids()
            self.peak_rss = sum(peak_rss_bytes(pid) for pid in pids)
            self.cpu_total = sum(cpu_seconds(pid) for pid in pids)
            children = []
            for pid in pids[1:]:
                with suppress(psutil.Error):
                    children.append(psutil.Process(pid))
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            for child in children:  # e.g. worker processes left behind by their parent
                with suppress(psutil.Error):
                    child.kill()  # psutil checks that the PID still names the same process
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop()
