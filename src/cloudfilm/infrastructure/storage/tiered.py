"""Hot and cold blob stores as one: new blobs go hot, reads find a blob in either.

The index records which tier holds each instance (``instance.storage_tier``); readers need
not know: a blob is looked up in the hot store first and then in the cold one, so a read
during a move (both copies present) or after it (cold only) serves the same bytes. Keys are
content-addressed, so a blob has the same key in both stores.

The tier jobs (services/storage/tiers.py) use :attr:`hot` and :attr:`cold` directly to
copy, verify and remove.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cloudfilm.infrastructure.storage.base import BlobInfo, BlobNotFoundError, BlobStore


class TieredBlobStore:
    def __init__(self, hot: BlobStore, cold: BlobStore) -> None:
        self.hot = hot
        self.cold = cold

    def __repr__(self) -> str:
        return f"TieredBlobStore(hot={self.hot!r}, cold={self.cold!r})"

    def put_file(self, key: str, path: Path, *, move: bool = False) -> None:
        self.hot.put_file(key, path, move=move)

    def open(self, key: str) -> BinaryIO:
        try:
            return self.hot.open(key)
        except BlobNotFoundError:
            return self.cold.open(key)

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        try:
            return self.hot.iter_chunks(key, chunk_size)
        except BlobNotFoundError:
            return self.cold.iter_chunks(key, chunk_size)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            return self.hot.read_range(key, offset, length)
        except BlobNotFoundError:
            return self.cold.read_range(key, offset, length)

    def local_path(self, key: str) -> Path | None:
        try:
            return self.hot.local_path(key)
        except BlobNotFoundError:
            return self.cold.local_path(key)

    def exists(self, key: str) -> bool:
        return self.hot.exists(key) or self.cold.exists(key)

    def size(self, key: str) -> int:
        try:
            return self.hot.size(key)
        except BlobNotFoundError:
            return self.cold.size(key)

    def delete(self, key: str) -> None:
        """Remove the blob from both tiers (an object deleted or re-encoded)."""
        self.hot.delete(key)
        self.cold.delete(key)

    def iter_blobs(self) -> Iterator[BlobInfo]:
        yield from self.hot.iter_blobs()
        yield from self.cold.iter_blobs()

    def modified_at(self, key: str) -> float:
        try:
            return self.hot.modified_at(key)
        except BlobNotFoundError:
            return self.cold.modified_at(key)

    def check(self) -> None:
        self.hot.check()
        self.cold.check()
