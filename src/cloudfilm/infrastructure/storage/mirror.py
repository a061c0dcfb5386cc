"""Two blob stores as one: every blob written to both (two disks, two buckets).

Reads go to the primary and fall back to the replica when the primary has lost a blob;
the scrubber (services/storage) repairs the primary from the replica when a blob's bytes
no longer match its SHA-256.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cloudfilm.infrastructure.storage.base import BlobInfo, BlobNotFoundError, BlobStore


class MirroredBlobStore:
    def __init__(self, primary: BlobStore, replica: BlobStore) -> None:
        self.primary = primary
        self.replica = replica

    def put_file(self, key: str, path: Path, *, move: bool = False) -> None:
        # The replica first, from the caller's file; the primary may then consume it.
        self.replica.put_file(key, path, move=False)
        self.primary.put_file(key, path, move=move)

    def open(self, key: str) -> BinaryIO:
        try:
            return self.primary.open(key)
        except BlobNotFoundError:
            return self.replica.open(key)

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        try:
            return self.primary.iter_chunks(key, chunk_size)
        except BlobNotFoundError:
            return self.replica.iter_chunks(key, chunk_size)

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            return self.primary.read_range(key, offset, length)
        except BlobNotFoundError:
            return self.replica.read_range(key, offset, length)

    def local_path(self, key: str) -> Path | None:
        try:
            return self.primary.local_path(key)
        except BlobNotFoundError:
            return self.replica.local_path(key)

    def exists(self, key: str) -> bool:
        return self.primary.exists(key) or self.replica.exists(key)

    def size(self, key: str) -> int:
        try:
            return self.primary.size(key)
        except BlobNotFoundError:
            return self.replica.size(key)

    def delete(self, key: str) -> None:
        self.primary.delete(key)
        self.replica.delete(key)

    def iter_blobs(self) -> Iterator[BlobInfo]:
        return self.primary.iter_blobs()

    def modified_at(self, key: str) -> float:
        return self.primary.modified_at(key)

    def check(self) -> None:
        self.primary.check()
        self.replica.check()

    def restore_from_replica(self, key: str, work_dir: Path) -> None:
        """Copy the replica's blob over the primary's (the caller verified the replica)."""
        fd, name = tempfile.mkstemp(prefix="repair-", dir=work_dir)
        tmp = Path(name)
        try:
            with open(fd, "wb") as out, self.replica.open(key) as src:
                shutil.copyfileobj(src, out)
            self.primary.put_file(key, tmp, move=True)
        finally:
            tmp.unlink(missing_ok=True)
