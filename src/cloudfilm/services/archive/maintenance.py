"""Archive upkeep: find blobs that no index row references (left by a crash between blob
write and index commit) and remove them once they are old enough to be no ingest's."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cloudfilm.infrastructure.db import retrieve_repository as rr
from cloudfilm.infrastructure.db.session import Database
from cloudfilm.infrastructure.storage.base import BlobStore

_BATCH = 500


@dataclass(slots=True)
class SweepReport:
    scanned: int = 0
    orphans: list[str] = field(default_factory=list)
    removed: int = 0


class MaintenanceService:
    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self._db = db
        self._blobs = blobs

    def sweep_orphans(self, *, min_age_seconds: float = 3600, dry_run: bool = False
                      ) -> SweepReport:
        """Delete blobs no instance (current or superseded) references.

        A blob younger than ``min_age_seconds`` is left alone: it may belong to an ingest
        whose transaction has not committed yet.
        """
        report = SweepReport()
        cutoff = time.time() - min_age_seconds
        batch: list[str] = []
        for info in self._blobs.iter_blobs():
            report.scanned += 1
            batch.append(info.key)
            if len(batch) >= _BATCH:
                self._sweep_batch(batch, cutoff, dry_run, report)
                batch = []
        if batch:
            self._sweep_batch(batch, cutoff, dry_run, report)
        return report

    def _sweep_batch(self, keys: list[str], cutoff: float, dry_run: bool,
                     report: SweepReport) -> None:
        with self._db.reading() as session:
            used = rr.referenced_blob_keys(session, keys)
        for key in keys:
            if key in used or self._blobs.modified_at(key) > cutoff:
                continue
            report.orphans.append(key)
            if not dry_run:
                # Re-check just before deleting: a resend may have indexed it meanwhile.
                with self._db.reading() as session:
                    if rr.referenced_blob_keys(session, [key]):
                        continue
                self._blobs.delete(key)
                report.removed += 1
