"""The gateway's durable queue: files on local disk and one SQLite row per object.

An object is acknowledged to the hospital's sender only after its file is fsynced, renamed
into place and its row committed with ``synchronous=FULL`` (WAL), so a kill -9 or a power cut
after the acknowledgement loses nothing. Files are content-addressed (``objects/ab/<sha256>``)
so a resend of the same bytes is one file and one row (deduplicated on kind, UID and SHA-256).

States: ``received`` (waiting, maybe with ``next_attempt_at`` in the future) → ``sending``
(claimed by a forwarder) → ``sent`` (the cloud acknowledged it) or ``refused`` (the cloud said
the object itself is wrong: parked with the reason, never retried by itself). A row found in
``sending`` at start-up was interrupted and goes back to ``received``.

Lossless compression before forwarding (``[compress]``, gateway/pack.py) adds a ``pack`` row
per DICOM object that the policy compresses, in the receiving transaction: ``pending`` →
``packing`` (claimed by the packer) → ``packed`` (the compressed file, verified bit-exact,
is in ``objects/`` under its own SHA-256 and the row points the item at it) or ``left`` (sent
as received, with the reason). The forwarder does not take an object whose pack row is
pending or packing, unless it waited ``max_wait_seconds`` (then it goes as received). The
original file is deleted only after the packed one is fsynced, renamed into place and its
row committed: a crash mid-compression leaves the original queued (``packing`` goes back to
``pending`` at start-up, and an uncommitted packed file is removed like any unknown file).
The item keeps the received file's SHA-256 as its identity (a resend of the same bytes is
still a duplicate); its ``size`` becomes the packed file's (quota, batches, bytes sent).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

logger = logging.getLogger(__name__)

Kind = Literal["dicom", "hl7"]
State = Literal["received", "sending", "sent", "refused"]
STATES: tuple[State, ...] = ("received", "sending", "sent", "refused")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS item (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    uid TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    study_uid TEXT NOT NULL DEFAULT '',
    size INTEGER NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    state TEXT NOT NULL DEFAULT 'received',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    solo INTEGER NOT NULL DEFAULT 0,
    received_at REAL NOT NULL,
    exam_at REAL,
    sent_at REAL,
    file_present INTEGER NOT NULL DEFAULT 1,
    UNIQUE (kind, uid, sha256)
);
CREATE INDEX IF NOT EXISTS item_due ON item (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS item_sent ON item (state, sent_at);
CREATE TABLE IF NOT EXISTS sent_day (day TEXT PRIMARY KEY, bytes INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pack (
    item_id INTEGER PRIMARY KEY,
    state TEXT NOT NULL DEFAULT 'pending',
    sha256 TEXT NOT NULL DEFAULT '',
    original_size INTEGER NOT NULL DEFAULT 0,
    size INTEGER NOT NULL DEFAULT 0,
    syntax TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    queued_at REAL NOT NULL,
    packed_at REAL
);
CREATE INDEX IF NOT EXISTS pack_state ON pack (state, item_id);
"""
PackState = Literal["pending", "packing", "packed", "left"]


class QuotaExceededError(Exception):
    """The queue folder holds its quota; the sender should retry later."""


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    kind: Kind
    uid: str
    sha256: str
    study_uid: str
    size: int
    attempts: int
    solo: bool
    # The file to send when it is not the received one (the packed, compressed file).
    file_sha256: str = ""

    @property
    def file(self) -> str:
        """The SHA-256 naming the file on disk (packed or as received)."""
        return self.file_sha256 or self.sha256

    @property
    def relpath(self) -> str:
        return f"objects/{self.file[:2]}/{self.file}"


@dataclass(frozen=True, slots=True)
class Queued:
    item_id: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Meta:
    """What the queue needs to know about an object, read from it by the receiving door."""

    kind: Kind
    uid: str
    study_uid: str = ""
    exam_at: float | None = None
    source: str = ""
    # From the DICOM header: what the packer's policy needs to know at receive time.
    modality: str = ""
    transfer_syntax_uid: str = ""
    has_pixels: bool = False


class Spooled:
    """A received object in the queue's temp folder, fsynced, with its SHA-256 and size."""

    def __init__(self, path: Path, sha256: str, size: int) -> None:
        self.path = path
        self.sha256 = sha256
        self.size = size

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class Queue:
    """The durable queue in ``folder`` (``queue.sqlite3``, ``objects/``, ``tmp/``).

    One connection guarded by a lock: every statement is short, and pynetdicom's association
    threads, the MLLP loop and the forwarders share it.
    """

    def __init__(self, folder: Path, *, quota_bytes: int, warn_fraction: float = 0.9,
                 packs: Callable[[Meta], bool] | None = None,
                 pack_wait_seconds: float = 300.0) -> None:
        self.folder = folder
        # Which received objects the packer compresses (None: compression is off).
        self.packs = packs
        self.pack_wait_seconds = pack_wait_seconds
        self.quota_bytes = quota_bytes
        self.warn_fraction = warn_fraction
        (folder / "objects").mkdir(parents=True, exist_ok=True)
        (folder / "tmp").mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(folder / "queue.sqlite3", check_same_thread=False,
                                   isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before the sender hears Success (NORMAL in WAL mode may
        # lose the last commits on power loss).
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._warned = False

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- receiving -----------------------------------------------------------------------

    def spool(self, source: BinaryIO | bytes, *, quota: bool = True) -> Spooled:
        """Copy an object into ``tmp/`` with fsync, hashing it on the way. ``quota=False``
        for a packed file (it replaces a larger one already counted).

        Raises
        ------
        QuotaExceededError
            The queue is already full, or this object would overfill it.
        """
        used = self.used_bytes() if quota else 0
        if used >= self.quota_bytes:
            raise QuotaExceededError(self._quota_message(used))
        fd, name = tempfile.mkstemp(dir=self.folder / "tmp", suffix=".part")
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as fh:
                if isinstance(source, bytes):
                    fh.write(source)
                    digest.update(source)
                    size = len(source)
                else:
                    while chunk := source.read(1 << 20):
                        fh.write(chunk)
                        digest.update(chunk)
                        size += len(chunk)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            Path(name).unlink(missing_ok=True)
            raise
        if quota and used + size > self.quota_bytes:
            Path(name).unlink(missing_ok=True)
            raise QuotaExceededError(self._quota_message(used + size))
        return Spooled(Path(name), digest.hexdigest(), size)

    def _quota_message(self, used: int) -> str:
        return (f"the gateway's queue is full ({used} of {self.quota_bytes} bytes): the cloud "
                "is not taking objects fast enough; see `cloudfilm gateway status`")

    def commit(self, spooled: Spooled, meta: Meta) -> Queued:
        """Move a spooled object into place and record it; durable when this returns."""
        final = self.folder / "objects" / spooled.sha256[:2] / spooled.sha256
        with self._tx() as db:
            row = db.execute("SELECT id FROM item WHERE kind=? AND uid=? AND sha256=?",
                             (meta.kind, meta.uid, spooled.sha256)).fetchone()
            if row is not None:
                spooled.discard()
                return Queued(int(row[0]), duplicate=True)
            if not final.parent.exists():
                final.parent.mkdir()
                _fsync_dir(final.parent.parent)
            os.replace(spooled.path, final)
            _fsync_dir(final.parent)
            cursor = db.execute(
                "INSERT INTO item (kind, uid, sha256, study_uid, size, source, received_at,"
                " exam_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (meta.kind, meta.uid, spooled.sha256, meta.study_uid, spooled.size,
                 meta.source, time.time(), meta.exam_at))
            item_id = int(cursor.lastrowid or 0)
            if self.packs is not None and self.packs(meta):
                db.execute("INSERT INTO pack (item_id, queued_at) VALUES (?, ?)",
                           (item_id, time.time()))
        self._check_warning()
        return Queued(item_id, duplicate=False)

    def _check_warning(self) -> None:
        used = self.used_bytes()
        over = used >= self.warn_fraction * self.quota_bytes
        if over and not self._warned:
            logger.warning("cloudfilm.gateway.quota_warning", extra={
                "used_bytes": used, "quota_bytes": self.quota_bytes})
        self._warned = over

    # -- forwarding ----------------------------------------------------------------------

    def recover(self) -> int:
        """At start-up: interrupted sends go back to ``received``; leftovers are removed.

        Returns the number of rows that were stuck in ``sending``.
        """
        with self._tx() as db:
            stuck = db.execute("UPDATE item SET state='received' WHERE state='sending'").rowcount
            # A packer interrupted mid-compression: the original is still the item's file.
            if self.packs is not None:
                db.execute("UPDATE pack SET state='pending' WHERE state='packing'")
            else:  # compression was turned off: the waiting objects go as received
                db.execute("UPDATE pack SET state='left', detail='policy-off' "
                           "WHERE state IN ('pending', 'packing')")
        shutil.rmtree(self.folder / "tmp", ignore_errors=True)
        (self.folder / "tmp").mkdir(exist_ok=True)
        # Files renamed into place whose row never committed (the sender was not answered
        # Success and will resend): remove them, so the quota counts only queued objects.
        with self._lock:
            known = {r[0] for r in self._db.execute(
                f"SELECT {_FILE} FROM {_FROM} WHERE item.file_present=1")}
        for path in (self.folder / "objects").glob("*/*"):
            if path.name not in known:
                path.unlink(missing_ok=True)
        return int(stuck)

    def claim(self, *, batch_size: int, batch_bytes: int, now: float | None = None
              ) -> list[Item]:
        """Take the next due objects: HL7 messages one at a time, DICOM per study. An
        object the packer has yet to compress waits for it (at most ``pack_wait_seconds``)."""
        now = time.time() if now is None else now
        ready = _READY if self.packs is not None else ""
        waited = now - self.pack_wait_seconds
        with self._tx() as db:
            first = db.execute(
                "SELECT id, kind, study_uid, solo FROM item WHERE state='received' AND "
                f"next_attempt_at<=? {ready} ORDER BY kind DESC, next_attempt_at, id LIMIT 1",
                (now, waited) if ready else (now,)).fetchone()
            if first is None:
                return []
            if first[1] == "hl7" or first[3]:
                rows = db.execute(f"SELECT {_COLUMNS} FROM {_FROM} WHERE item.id=?",
                                  (first[0],)).fetchall()
            else:
                rows = db.execute(
                    f"SELECT {_COLUMNS} FROM {_FROM} WHERE item.state='received' AND "
                    "item.kind='dicom' AND item.solo=0 AND item.study_uid=? AND "
                    f"item.next_attempt_at<=? {ready} ORDER BY item.id LIMIT ?",
                    (first[2], now, *((waited,) if ready else ()), batch_size)).fetchall()
            items: list[Item] = []
            total = 0
            for row in rows:
                item = _item(row)
                if items and total + item.size > batch_bytes:
                    break
                items.append(item)
                total += item.size
            db.executemany("UPDATE item SET state='sending' WHERE id=?",
                           [(i.id,) for i in items])
        return items

    # -- packing (gateway/pack.py) -------------------------------------------------------

    def claim_pack(self, limit: int) -> list[Item]:
        """Take up to ``limit`` objects waiting for the packer (oldest first) and mark them
        ``packing``; only objects still waiting to be sent."""
        with self._tx() as db:
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM pack JOIN item ON item.id=pack.item_id "
                "WHERE pack.state='pending' AND item.state='received' AND "
                "item.file_present=1 ORDER BY pack.item_id LIMIT ?", (limit,)).fetchall()
            items = [_item(r) for r in rows]
            db.executemany("UPDATE pack SET state='packing' WHERE item_id=?",
                           [(i.id,) for i in items])
        return items

    def pack_pending(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COUNT(*) FROM pack WHERE state IN "
                                   "('pending', 'packing')").fetchone()
        return int(row[0])

    def settle_packed(self, item: Item, spooled: Spooled, syntax: str) -> bool:
        """Make the packed file (fsynced, in ``tmp/``) the item's file; the original is
        deleted after the commit. False (and the packed file discarded) when the item was
        taken by a forwarder meanwhile (it waited too long: it goes as received)."""
        final = self.folder / "objects" / spooled.sha256[:2] / spooled.sha256
        with self._tx() as db:
            row = db.execute(
                "SELECT item.state, pack.state FROM item JOIN pack ON pack.item_id=item.id "
                "WHERE item.id=?", (item.id,)).fetchone()
            if row is None or row[0] != "received" or row[1] != "packing":
                db.execute("UPDATE pack SET state='left', detail='sent-as-received', "
                           "packed_at=? WHERE item_id=? AND state='packing'",
                           (time.time(), item.id))
                spooled.discard()
                return False
            if not final.parent.exists():
                final.parent.mkdir()
                _fsync_dir(final.parent.parent)
            os.replace(spooled.path, final)
            _fsync_dir(final.parent)
            db.execute("UPDATE pack SET state='packed', sha256=?, original_size=?, size=?, "
                       "syntax=?, packed_at=? WHERE item_id=?",
                       (spooled.sha256, item.size, spooled.size, syntax, time.time(), item.id))
            db.execute("UPDATE item SET size=? WHERE id=?", (spooled.size, item.id))
        # After the commit: a crash in between leaves the original, which recover() removes.
        self._unlink_file_if_unreferenced(item.sha256)
        return True

    def settle_left(self, item: Item, reason: str) -> None:
        """The object goes as received (the policy or the verification said so)."""
        with self._tx() as db:
            db.execute("UPDATE pack SET state='left', detail=?, original_size=?, size=?, "
                       "packed_at=? WHERE item_id=? AND state='packing'",
                       (reason[:300], item.size, item.size, time.time(), item.id))

    def pack_totals(self) -> dict[str, tuple[int, int, int]]:
        """Per pack state: (objects, bytes as received, bytes to send)."""
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*), SUM(original_size), SUM(size) "
                                    "FROM pack GROUP BY state").fetchall()
        return {str(r[0]): (int(r[1]), int(r[2] or 0), int(r[3] or 0)) for r in rows}

    def path(self, item: Item) -> Path:
        return self.folder / item.relpath

    def mark_sent(self, items: list[Item], *, delete_files: bool) -> None:
        now = time.time()
        day = time.strftime("%Y-%m-%d", time.localtime(now))
        with self._tx() as db:
            db.executemany("UPDATE item SET state='sent', sent_at=?, last_error='', "
                           "attempts=attempts+1, file_present=? WHERE id=?",
                           [(now, 0 if delete_files else 1, i.id) for i in items])
            db.execute("INSERT INTO sent_day (day, bytes) VALUES (?, ?) ON CONFLICT(day) "
                       "DO UPDATE SET bytes=bytes+excluded.bytes",
                       (day, sum(i.size for i in items)))
        if delete_files:
            # After the commit: a crash in between leaves a file that recover() removes.
            for item in items:
                self._unlink_if_unreferenced(item)

    def _unlink_if_unreferenced(self, item: Item) -> None:
        self._unlink_file_if_unreferenced(item.file)

    def _unlink_file_if_unreferenced(self, sha256: str) -> None:
        """Delete ``objects/<sha256>`` unless a present item still sends that file."""
        with self._lock:
            other = self._db.execute(f"SELECT 1 FROM {_FROM} WHERE {_FILE}=? AND "
                                     "item.file_present=1", (sha256,)).fetchone()
        if other is None:
            (self.folder / "objects" / sha256[:2] / sha256).unlink(missing_ok=True)

    def mark_refused(self, item: Item, reason: str) -> None:
        with self._tx() as db:
            db.execute("UPDATE item SET state='refused', attempts=attempts+1, last_error=?, "
                       "next_attempt_at=0 WHERE id=?", (reason[:2000], item.id))
        logger.warning("cloudfilm.gateway.refused", extra={
            "kind": item.kind, "uid": item.uid, "reason": reason[:300]})

    def mark_retry(self, items: list[Item], error: str, delay: float, *,
                   solo: bool = False) -> None:
        at = time.time() + delay
        with self._tx() as db:
            db.executemany("UPDATE item SET state='received', attempts=attempts+1, "
                           "last_error=?, next_attempt_at=?, solo=solo OR ? WHERE id=?",
                           [(error[:2000], at, solo, i.id) for i in items])

    def requeue_refused(self, ids: list[int] | None = None) -> int:
        """Give parked objects another try (after the cause was fixed at the cloud)."""
        with self._tx() as db:
            if ids is None:
                return int(db.execute("UPDATE item SET state='received', next_attempt_at=0 "
                                      "WHERE state='refused' AND file_present=1").rowcount)
            return int(sum(db.execute(
                "UPDATE item SET state='received', next_attempt_at=0 WHERE id=? AND "
                "state='refused' AND file_present=1", (i,)).rowcount for i in ids))

    def expire_sent(self, keep_seconds: float) -> int:
        """Delete files of objects sent longer than ``keep_seconds`` ago."""
        cutoff = time.time() - keep_seconds
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM {_FROM} WHERE item.state='sent' AND "
                "item.file_present=1 AND item.sent_at<?", (cutoff,)).fetchall()
        items = [_item(r) for r in rows]
        with self._tx() as db:
            db.executemany("UPDATE item SET file_present=0 WHERE id=?", [(i.id,) for i in items])
        for item in items:
            self._unlink_if_unreferenced(item)
        return len(items)

    def sent_today(self) -> int:
        day = time.strftime("%Y-%m-%d")
        with self._lock:
            row = self._db.execute("SELECT bytes FROM sent_day WHERE day=?", (day,)).fetchone()
        return int(row[0]) if row else 0

    def used_bytes(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT COALESCE(SUM(size), 0) FROM item "
                                   "WHERE file_present=1").fetchone()
        return int(row[0])

    def next_due(self) -> float | None:
        """When the next object may be claimed (an object the packer holds: when it is
        packed, which wakes the forwarders, or when it waited too long)."""
        with self._lock:
            if self.packs is None:
                row = self._db.execute("SELECT MIN(next_attempt_at) FROM item "
                                       "WHERE state='received'").fetchone()
            else:
                row = self._db.execute(
                    "SELECT MIN(CASE WHEN pack.state IN ('pending', 'packing') THEN "
                    "MAX(item.next_attempt_at, pack.queued_at + ?) ELSE item.next_attempt_at "
                    "END) FROM item LEFT JOIN pack ON pack.item_id=item.id "
                    "WHERE item.state='received'", (self.pack_wait_seconds,)).fetchone()
        return None if row[0] is None else float(row[0])

    def execute(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
        """A statement outside the item bookkeeping (status views, pull mode), autocommitted."""
        with self._lock:
            return list(self._db.execute(sql, params).fetchall())


_COLUMNS = ("item.id, item.kind, item.uid, item.sha256, item.study_uid, item.size, "
            "item.attempts, item.solo, CASE WHEN pack.state='packed' THEN pack.sha256 "
            "ELSE '' END")
# An item with its pack row, if any; _FILE names the file it sends.
_FROM = "item LEFT JOIN pack ON pack.item_id=item.id"
_FILE = "(CASE WHEN pack.state='packed' THEN pack.sha256 ELSE item.sha256 END)"
# Not held by the packer (or held too long: the bound is the parameter, now - max wait).
_READY = ("AND NOT EXISTS (SELECT 1 FROM pack WHERE pack.item_id=item.id AND "
          "pack.state IN ('pending', 'packing') AND pack.queued_at > ?)")


def _item(row: tuple[object, ...]) -> Item:
    id_, kind, uid, sha, study, size, attempts, solo, packed = row
    return Item(int(id_), kind, str(uid), str(sha), str(study),  # type: ignore[arg-type,call-overload]
                int(size), int(attempts), bool(solo), str(packed or ""))  # type: ignore[call-overload]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
