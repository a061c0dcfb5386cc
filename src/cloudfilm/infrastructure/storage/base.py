"""The blob store port: where DICOM objects live, by key.

Keys are made by :func:`blob_key` from the content's SHA-256, so they spread evenly over
prefixes at billions of objects (S3 partitions and local directories alike) and the same
bytes always land on the same key, which makes a resend harmless.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


class BlobStoreError(Exception):
    """The blob store could not do what was asked (disk full, network, permissions)."""


class BlobNotFoundError(BlobStoreError):
    """No blob is stored under the key."""


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str
    size: int


def blob_key(sha256_hex: str, suffix: str = ".dcm") -> str:
    """Return the object key for content with the given SHA-256 (hex).

    Two levels of 256-way fan-out (``ab/cd/abcd...``) keep a local folder under ~16k
    entries per directory at 4 billion objects and give S3 well-spread prefixes.
    """
    h = sha256_hex.lower()
    if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        raise ValueError(f"not a SHA-256 hex digest: {sha256_hex!r}")
    return f"{h[0:2]}/{h[2:4]}/{h}{suffix}"


class BlobStore(Protocol):
    """Durable, key-addressed storage of whole objects.

    ``put_file`` returns only when the object is durable (local: file and folder fsynced;
    S3: the PUT was acknowledged). Every method raises :class:`BlobStoreError` (or its
    subclass :class:`BlobNotFoundError`) and nothing else for storage failures.
    """

    def put_file(self, key: str, path: Path, *, move: bool = False) -> None:
        """Store the file at ``path`` under ``key``, durably.

        With ``move=True`` the store may consume ``path`` (rename it into place when on the
        same filesystem); the caller must not use ``path`` afterwards. Storing an existing
        key again replaces it atomically (callers only do so with identical content).
        """
        ...

    def open(self, key: str) -> BinaryIO:
        """Open the blob for reading (a seekable binary file object). Caller closes it."""
        ...

    def iter_chunks(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """Yield the blob's bytes in chunks, for streaming responses.

        A missing blob raises :class:`BlobNotFoundError` from the call itself, before the
        first chunk, so a streaming response can still answer "not found".
        """
        ...

    def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset`` (fewer at the end of the blob)."""
        ...

    def local_path(self, key: str) -> Path | None:
        """The blob's path on a local filesystem, or None when the store is not local.

        A local store raises :class:`BlobNotFoundError` when the blob is absent.
        """
        ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int:
        """Size in bytes; :class:`BlobNotFoundError` when absent."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob; no error when it is already absent."""
        ...

    def iter_blobs(self) -> Iterator[BlobInfo]:
        """Every stored blob (for the orphan sweeper and consistency checks)."""
        ...

    def modified_at(self, key: str) -> float:
        """Last-modified time as a POSIX timestamp (the sweeper's age check)."""
        ...

    def check(self) -> None:
        """Raise :class:`BlobStoreError` when the store is unreachable (health check)."""
        ...
