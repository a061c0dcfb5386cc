"""Hot and cold tiers: which objects move, and the move itself (bit-exact, crash-safe).

The rule is configuration (``storage.tier_after_days``, per modality
``storage.tier_after_days_modalities``, ``storage.tier_unread_days``): an object moves cold
when its study was done more than N days ago and nobody read it for M days. "Read" comes
from the audit trail, which records every read of patient data anyway (no extra write on
the read path). :meth:`Tiers.plan` writes one ``tier`` job per object into the same outbox
as re-encoding; the workers run :meth:`Tiers.move_cold`:

1. read the hot blob and check its SHA-256;
2. write it to the cold store (durable: fsync, or the object store's acknowledgement);
3. read the cold copy back and check its SHA-256 (bit-exact before anything is removed);
4. one transaction: ``instance.storage_tier`` hot -> cold (compare-and-set on the blob's
   SHA-256, and refused under a legal hold);
5. remove the hot copy (the replica store, when configured, keeps its copy: the second
   copy the scrubber repairs cold blobs from).

A crash before 4 leaves the hot copy indexed and served (the cold copy is rewritten under
the same key by the rerun); after 4 both copies exist and reads find the hot one first; the
rerun sees "cold" and only removes the hot copy after checking the cold one again.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import Counter

from cloudfilm.infrastructure.db import storage_repository as repo
from cloudfilm.infrastructure.db.session import Database
from cloudfilm.infrastructure.storage.base import BlobNotFoundError, BlobStore, BlobStoreError
from cloudfilm.infrastructure.storage.mirror import MirroredBlobStore
from cloudfilm.infrastructure.storage.tiered import TieredBlobStore

logger = logging.getLogger(__name__)

TIER = "tier"
TIER_MOVES = Counter("cloudfilm_storage_tier_moves_total", "Tier move outcomes", ["outcome"])
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class TierPolicy:
    after_days: int = 365
    unread_days: int = 180
    per_modality: Mapping[str, int] = field(default_factory=dict)
    batch: int = 5000

    def after_for(self, modality: str) -> int:
        return self.per_modality.get((modality or "").upper(), self.after_days)


class Tiers:
    """Plans and performs moves between the hot and the cold store of a
    :class:`TieredBlobStore`. ``step`` is called with the name of each step about to run
    (the crash tests stop a move there)."""

    def __init__(self, db: Database, blobs: TieredBlobStore, work_dir: Path,
                 policy: TierPolicy, *, step: Callable[[str], None] | None = None) -> None:
        self._db = db
        self._blobs = blobs
        self._work_dir = work_dir
        self.policy = policy
        self._step = step or (lambda _name: None)

    @property
    def hot_primary(self) -> BlobStore:
        hot = self._blobs.hot
        return hot.primary if isinstance(hot, MirroredBlobStore) else hot

    # -- planning ----------------------------------------------------------------------------

    def plan(self, *, now: datetime | None = None, limit: int | None = None) -> int:
        """Write a ``tier`` job for each hot object the rule sends cold; returns how many."""
        now = now or datetime.now(UTC)
        limit = limit or self.policy.batch
        youngest = min([self.policy.after_days, *self.policy.per_modality.values()])
        done_before = now - timedelta(days=youngest)
        with self._db.read() as session:
            read = repo.studies_read_since(session,
                                           now - timedelta(days=self.policy.unread_days))
            held_studies, held_patients = repo.active_holds(session)
        chosen: list[str] = []
        after = 0
        while len(chosen) < limit:
            with self._db.read() as session:
                rows = repo.tier_candidates(session, done_before=done_before, after_id=after,
                                            limit=1000)
            if not rows:
                break
            for r in rows:
                after = r.id
                done_at = r.done_at if r.done_at.tzinfo else r.done_at.replace(tzinfo=UTC)
                if (done_at >= now - timedelta(days=self.policy.after_for(r.modality))
                        or r.study_instance_uid in read
                        or r.study_instance_uid in held_studies
                        or (r.code, r.patient_id) in held_patients):
                    continue
                chosen.append(r.sop_instance_uid)
                if len(chosen) >= limit:
                    break
        if chosen:
            with self._db.write() as session:
                repo.add_jobs(session, TIER, chosen, now=now)
        logger.info("cloudfilm.storage.tier_planned", extra={"objects": len(chosen)})
        return len(chosen)

    # -- moving ------------------------------------------------------------------------------

    def move_cold(self, sop_uid: str) -> str:
        """Move one object to the cold store; returns "moved", "already" or "left:<why>".
        Raises on storage or index failures (the job is retried)."""
        with self._db.read() as session:
            row = repo.instance(session, sop_uid)
            held = row is not None and repo.study_held(session, row.study_fk)
        if row is None:
            return self._out("left:gone")
        if row.storage_tier == "cold":
            self._finish_cold(row.blob_key, row.sha256)
            return self._out("already")
        if held:
            return self._out("left:legal-hold")
        self._step("read")
        tmp = self._spool_checked(self._blobs.hot, row.blob_key, row.sha256)
        try:
            self._step("write-cold")
            self._blobs.cold.put_file(row.blob_key, tmp, move=True)
        finally:
            tmp.unlink(missing_ok=True)
        self._step("verify-cold")
        if _digest(self._blobs.cold, row.blob_key) != row.sha256:
            raise BlobStoreError(f"the cold copy of {row.blob_key} does not match its "
                                 "SHA-256 after writing; the hot copy stays")
        self._step("index")
        with self._db.write() as session:
            if repo.study_held(session, row.study_fk):  # placed meanwhile
                return self._out("left:legal-hold")
            moved = repo.set_tier(session, row.id, sha256=row.sha256, from_tier="hot",
                                  to_tier="cold")
        if not moved:  # replaced or re-encoded meanwhile: the copy is someone else's now
            return self._out("left:changed")
        self._step("delete-hot")
        self.hot_primary.delete(row.blob_key)
        self._step("done")
        return self._out("moved")

    def _finish_cold(self, key: str, sha256: str) -> None:
        """The index says cold: remove a hot copy left by a crash, once the cold one is
        checked again."""
        if not self.hot_primary.exists(key):
            return
        if _digest(self._blobs.cold, key) != sha256:
            raise BlobStoreError(f"the cold copy of {key} does not match its SHA-256; the hot "
                                 "copy stays (run `cloudfilm storage verify`)")
        self.hot_primary.delete(key)

    def _out(self, outcome: str) -> str:
        TIER_MOVES.labels(outcome).inc()
        return outcome

    def _spool_checked(self, store: BlobStore, key: str, sha256: str) -> Path:
        """Copy the blob into a durable temp file (streamed: objects reach gigabytes),
        checking its SHA-256 on the way; the caller removes the file."""
        fd, name = tempfile.mkstemp(prefix="tier-", suffix=".dcm", dir=self._work_dir)
        tmp = Path(name)
        h = hashlib.sha256()
        try:
            with open(fd, "wb") as out:
                for chunk in store.iter_chunks(key, _CHUNK):
                    h.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if h.hexdigest() != sha256:
                raise BlobStoreError(f"blob {key} does not match its SHA-256; run "
                                     "`cloudfilm storage verify` to repair it before moving it")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp

    def counts(self) -> dict[str, tuple[int, int]]:
        with self._db.read() as session:
            return repo.tier_counts(session)


def _digest(store: BlobStore, key: str) -> str:
    h = hashlib.sha256()
    try:
        for chunk in store.iter_chunks(key, _CHUNK):
            h.update(chunk)
    except BlobNotFoundError:
        return ""
    return h.hexdigest()
