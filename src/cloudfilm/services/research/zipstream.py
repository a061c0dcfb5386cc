"""A zip archive written as a stream of chunks: nothing is built in memory beyond the
entry being written, and the archive needs no seekable file (zip data descriptors)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from typing import Any


class _Sink:
    """Write-only, unseekable: zipfile then writes data descriptors instead of seeking."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.chunks.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> Iterator[bytes]:
        chunks, self.chunks = self.chunks, []
        yield from chunks


class ZipStream:
    def __init__(self) -> None:
        self._sink = _Sink()
        sink: Any = self._sink
        self._zip = zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True)

    def add(self, name: str, data: bytes) -> Iterator[bytes]:
        """Add one entry and yield the archive bytes it produced."""
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        with self._zip.open(info, "w", force_zip64=len(data) > 0x7FFF0000) as fh:
            fh.write(data)
        yield from self._sink.take()

    def close(self) -> Iterator[bytes]:
        self._zip.close()
        yield from self._sink.take()
