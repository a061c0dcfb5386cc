"""Blobs in a dict, for tests (Orthanc's ``MemoryStorageArea``)."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cloudfilm.infrastructure.storage.base import BlobInfo, BlobNotFoundError, BlobStoreError
from cloudfilm.infrastructure.storage.local import validate_key


class MemoryBlobStore:
    """A :class:`~cloudfilm.infrastructure.storage.base.BlobStore` held in memory.

    Keys are validated like :class:`~cloudfilm.infrastructure.storage.local.LocalBlobStore`
    does, so a test on this store fails where production on a folder would. Thread-safe.
    """

    def __init__(self) -> None:
        self._blobs: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"MemoryBlobStore({len(self._blobs)} blobs)"

    def _get(self, key: str) -> tuple[bytes, float]:
        validate_key(key)
        with self._lock:
            try:
                return self._blobs[key]
            except KeyError:
                raise BlobNotFoundError(f"no blob stored under {key!r}") from None

    def put_file(self, key: str, path: Path, *, move: bool = False) -> None:
        validate_key(key)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise BlobStoreError(f"could not store blob {key!r}: {exc}") from exc
        with self._lock:
            self._blobs[key] = (data, time.time())
        if move:
            Path(path).unlink(missing_ok=True)

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store ``data`` under ``key`` (a test convenience; not part of the port)."""
        validate_key(key)
        with self._lock:
            self._blobs[key] = (bytes(data), time.time())

    def open(self, key: str) -> BinaryIO:
        return io.BytesIO(self._get(key)[0])

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        data = self._get(key)[0]  # looked up now, so a missing key raises at call time
        return (data[i : i + chunk_size] for i in range(0, len(data), chunk_size))

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError(f"negative offset or length: {offset}, {length}")
        return self._get(key)[0][offset : offset + length]

    def local_path(self, key: str) -> Path | None:
        return None

    def exists(self, key: str) -> bool:
        try:
            self._get(key)
        except BlobNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        return len(self._get(key)[0])

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._lock:
            self._blobs.pop(key, None)

    def iter_blobs(self) -> Iterator[BlobInfo]:
        with self._lock:
            snapshot = [BlobInfo(key=k, size=len(v[0])) for k, v in self._blobs.items()]
        return iter(snapshot)

    def modified_at(self, key: str) -> float:
        return self._get(key)[1]

    def check(self) -> None:
        return None
