"""Sibling DIMSE listener processes on the same port (``dimse.processes`` > 1).

The process that runs ``cloudfilm serve`` or ``cloudfilm dimse`` binds its port with
SO_REUSEPORT and starts ``processes - 1`` copies of ``cloudfilm dimse --sibling``, which
bind the same port(s) the same way; Linux then hands each new connection to one of the
listeners, so concurrent associations run on several cores against the one index. The
siblings ask the kernel to SIGTERM them when their parent dies (``PR_SET_PDEATHSIG``, kill
-9 of the parent included), so that no orphan keeps the port, and they are restarted if
one dies while the parent lives.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

from cloudfilm.config import Settings

logger = logging.getLogger(__name__)

# A sibling that dies is restarted after this pause (not in a tight loop when it cannot
# start, e.g. a broken configuration: its own log says why).
RESTART_PAUSE = 5.0


class Siblings:
    """The extra listener processes; :meth:`stop` ends them (SIGTERM, then SIGKILL)."""

    def __init__(self, argv: list[str], env: dict[str, str], count: int) -> None:
        self._argv = argv
        self._env = env
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._procs = [self._spawn() for _ in range(count)]
        self._watcher = threading.Thread(target=self._watch, name="dimse-siblings",
                                         daemon=True)
        self._watcher.start()

    @property
    def pids(self) -> list[int]:
        with self._lock:
            return [p.pid for p in self._procs]

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self._argv, env=self._env, stdin=subprocess.DEVNULL)

    def _watch(self) -> None:
        while not self._stopping.wait(1.0):
            with self._lock:
                dead = [i for i, p in enumerate(self._procs) if p.poll() is not None]
            for i in dead:
                logger.warning("cloudfilm.dimse.sibling_died",
                               extra={"pid": self._procs[i].pid,
                                      "returncode": self._procs[i].returncode})
                if self._stopping.wait(RESTART_PAUSE):
                    return
                with self._lock:
                    self._procs[i] = self._spawn()

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM every sibling (each lets its associations finish), SIGKILL after
        ``grace`` seconds."""
        self.terminate()
        self.wait(grace)

    def terminate(self) -> None:
        self._stopping.set()
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()

    def wait(self, grace: float) -> None:
        """Wait for the terminated siblings, SIGKILL those still running after ``grace``."""
        with self._lock:
            procs = list(self._procs)
        deadline = time.monotonic() + grace
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_siblings(settings: Settings, port: int, tls_port: int | None) -> Siblings | None:
    """Start ``settings.dimse.processes - 1`` sibling listeners on the bound ``port``
    (and ``tls_port``), or none."""
    count = settings.dimse.processes - 1
    if count < 1:
        return None
    env = {
        **os.environ,
        "CLOUDFILM_DATA_DIR": str(settings.data_dir.resolve()),
        "CLOUDFILM_DIMSE__AE_TITLE": settings.dimse.ae_title,
        "CLOUDFILM_DIMSE__HOST": settings.dimse.host,
        "CLOUDFILM_DIMSE__PORT": str(port),
        "CLOUDFILM_DIMSE__PROCESSES": str(settings.dimse.processes),
        # The parent migrated the index and prepared the embedded secrets already.
        "CLOUDFILM_AUTO_MIGRATE": "false",
    }
    if tls_port is not None:
        env["CLOUDFILM_DIMSE__TLS_PORT"] = str(tls_port)
    argv = [sys.executable, "-m", "cloudfilm", "dimse", "--sibling"]
    siblings = Siblings(argv, env, count)
    logger.info("cloudfilm.dimse.siblings_started", extra={"pids": siblings.pids, "port": port})
    return siblings
