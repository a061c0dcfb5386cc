"""Rendered frames cached on local disk, keyed by (instance, frame, window, size, format).

A phone viewer asks for the same few hundred JPEGs again and again (scrolling back and
forth, a second visit); rendering one CT slice costs ~5-15 ms of CPU, reading it ~0.1 ms.
Written to a temporary file and renamed, so a reader never sees half a JPEG; a rendering is
a pure function of its key, so two processes writing the same entry race harmlessly.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


class DiskFrameCache:
    """``get``/``put`` of bytes under a text key, in ``root/ab/abcdef...``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        digest = hashlib.sha256(key.encode()).hexdigest()
        return self.root / digest[:2] / digest

    def get(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except OSError:
            return None

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except OSError:
            pass  # a cache: a full disk costs a re-render, never a failed request
