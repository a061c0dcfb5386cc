"""Sibling DIMSE listeners (``dimse.processes`` > 1) die with their parent, kill -9 included,
and leave the port free for the next start."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

EXE = Path(sys.executable).with_name("cloudfilm")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (not yet reaped by its new parent) counts as dead
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(predicate: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_siblings_die_with_a_killed_parent_and_free_the_port(tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "dimse.log"
    env = {**os.environ, "CLOUDFILM_DIMSE__PROCESSES": "2"}
    with open(log, "wb") as out:  # a file, never a pipe the children could hold open
        parent = subprocess.Popen([str(EXE), "dimse", "--data", str(tmp_path / "data"),
                                   "--dicom-port", str(port)], env=env, stdout=out,
                                  stderr=out, start_new_session=True)
    sibling = 0
    try:
        def started() -> bool:
            nonlocal sibling
            found = re.search(r"siblings_started\s+pids=\[(\d+)\]", log.read_text())
            sibling = int(found.group(1)) if found else 0
            return sibling > 0

        assert _wait(started, 120), log.read_text()[-2000:]
        assert _alive(sibling)
        parent.kill()
        parent.wait(timeout=10)
        assert _wait(lambda: not _alive(sibling), 30), "the sibling outlived its parent"
        with socket.socket() as sock:  # the port is free again
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)  # the parent's session: sibling included
        parent.wait(timeout=10)
