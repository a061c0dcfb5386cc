"""Helpers shared by the DIMSE integration and interop tests (a listener on a free port)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cloudfilm.interfaces.dimse.server import DimseServer
from cloudfilm.services.container import Services

SCP_AE = "CLOUDFILM"
SCU_AE = "TESTSCU"
HOSPITAL = "H-TEST"
IN_CI = bool(os.environ.get("CI"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(services: Services, **kwargs: object) -> Iterator[DimseServer]:
    """A started listener on a free loopback port; stopped (grace 5 s) afterwards."""
    server = DimseServer(services, ae_title=SCP_AE, host="127.0.0.1", port=0,
                         timeout=10.0, **kwargs)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop(grace=5)


def dataset_sha256(path: Path | bytes) -> str:
    """SHA-256 of a Part 10 file's data set, i.e. the bytes after the File Meta group.

    Each DICOM store writes its own meta header (implementation UID, source AE), so "sent
    bit for bit" means the data set bytes are identical.
    """
    data = path if isinstance(path, bytes) else Path(path).read_bytes()
    assert data[128:132] == b"DICM", "not a Part 10 file"
    pos = 132
    while pos + 8 <= len(data) and struct.unpack_from("<H", data, pos)[0] == 0x0002:
        vr = data[pos + 4: pos + 6]
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            length = struct.unpack_from("<I", data, pos + 8)[0]
            pos += 12 + length
        else:
            length = struct.unpack_from("<H", data, pos + 6)[0]
            pos += 8 + length
    return hashlib.sha256(data[pos:]).hexdigest()


def require_tool(name: str) -> str:
    """Path of an external tool; skip locally when missing, fail under CI."""
    found = shutil.which(name)
    if found is None:
        if IN_CI:
            pytest.fail(f"{name} is required in CI (apt-get install dcmtk orthanc)")
        pytest.skip(f"{name} is not installed")
    return found
