"""Backup and restore of the embedded platform (SQLite index + blob store), and the move
of an embedded index into PostgreSQL.

A backup folder holds ``index.sqlite3`` (a consistent snapshot taken with SQLite's online
backup API while the platform runs), ``blobs/<key>`` (every blob that snapshot references)
and ``manifest.json`` (key, SHA-256 and size of each blob). The snapshot comes first:
blobs are content-addressed and never rewritten, so each one the snapshot names is either
still there or was re-encoded and deleted after the snapshot (then the backup says so and
fails; run it again).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from cloudfilm.infrastructure.db import backup as dbbackup
from cloudfilm.infrastructure.storage.base import BlobNotFoundError, BlobStore
from cloudfilm.services.errors import CloudfilmError

MANIFEST = "manifest.json"
INDEX = "index.sqlite3"


class BackupError(CloudfilmError):
    """A backup or restore cannot proceed; the message says why and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="backup")


@dataclass(frozen=True, slots=True)
class BackupReport:
    blobs: int
    bytes: int


SECRETS = "secrets.toml"


def backup(database_url: str, blobs: BlobStore, dest: Path, *,
           data_dir: Path | None = None) -> BackupReport:
    """Back up the index, the blobs it references and the embedded secrets (without them
    the national IDs protected in the index cannot be matched again)."""
    source = dbbackup.sqlite_path(database_url)
    if source is None:
        raise BackupError("cloudfilm backup copies the embedded SQLite index; back up "
                          "PostgreSQL with pg_dump or base backups + WAL (docs/capacity.md)")
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty; back up into a new folder")
    dest.mkdir(parents=True, exist_ok=True)
    dbbackup.sqlite_snapshot(source, dest / INDEX)
    manifest: dict[str, dict[str, object]] = {}
    total = 0
    for key, sha256, size in dbbackup.blobs_of(dest / INDEX):
        if key in manifest:
            continue
        target = dest / "blobs" / key
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        try:
            with blobs.open(key) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    digest.update(chunk)
                    out.write(chunk)
        except BlobNotFoundError as exc:
            raise BackupError(f"blob {key} vanished during the backup (re-encoded "
                              "meanwhile?); run the backup again") from exc
        if digest.hexdigest() != sha256:
            raise BackupError(f"blob {key} does not match its SHA-256; run `cloudfilm "
                              "storage verify` (repairs from a replica) before backing up")
        manifest[key] = {"sha256": sha256, "size": size}
        total += size
    if data_dir is not None and (data_dir / SECRETS).exists():
        shutil.copy2(data_dir / SECRETS, dest / SECRETS)
        (dest / SECRETS).chmod(0o600)
    (dest / MANIFEST).write_text(json.dumps({"format": 1, "blobs": manifest}, indent=0))
    return BackupReport(len(manifest), total)


def restore(source: Path, database_url: str, blobs: BlobStore, work_dir: Path, *,
            data_dir: Path | None = None) -> BackupReport:
    target = dbbackup.sqlite_path(database_url)
    if target is None:
        raise BackupError("cloudfilm restore restores into the embedded SQLite index; "
                          "use `cloudfilm migrate-index` afterwards to move it to PostgreSQL")
    if target.exists():
        raise BackupError(f"{target} exists; restore into an empty data folder")
    try:
        manifest = json.loads((source / MANIFEST).read_text())["blobs"]
    except (OSError, ValueError, KeyError) as exc:
        raise BackupError(f"{source} holds no readable {MANIFEST}: {exc}") from exc
    total = 0
    for key, entry in manifest.items():
        path = source / "blobs" / key
        if hashlib.sha256(path.read_bytes()).hexdigest() != entry["sha256"]:
            raise BackupError(f"the backup's blob {key} is damaged")
        tmp = work_dir / f"restore-{entry['sha256']}"
        shutil.copyfile(path, tmp)
        blobs.put_file(key, tmp, move=True)
        tmp.unlink(missing_ok=True)
        total += int(entry["size"])
    if data_dir is not None and (source / SECRETS).exists() \
            and not (data_dir / SECRETS).exists():
        shutil.copy2(source / SECRETS, data_dir / SECRETS)
        (data_dir / SECRETS).chmod(0o600)
    # The index last: a restore interrupted before this point leaves no index to serve from.
    target.parent.mkdir(parents=True, exist_ok=True)
    dbbackup.sqlite_snapshot(source / INDEX, target)
    dbbackup.mark_all_hot(target)
    return BackupReport(len(manifest), total)


def migrate_index(source_url: str, target_url: str) -> dict[str, int]:
    try:
        return dbbackup.copy_index(source_url, target_url)
    except ValueError as exc:
        raise BackupError(str(exc)) from exc
