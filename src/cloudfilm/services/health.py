"""Liveness and reachability of what the platform depends on."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from cloudfilm.infrastructure.db import metrics_repository as metrics_repo
from cloudfilm.infrastructure.db.session import Database
from cloudfilm.infrastructure.storage.base import BlobStore


@dataclass(frozen=True, slots=True)
class HealthReport:
    database: str
    blob_store: str

    @property
    def ok(self) -> bool:
        return self.database == "ok" and self.blob_store == "ok"


class HealthService:
    def __init__(self, db: Database, blobs: BlobStore) -> None:
        self._db = db
        self._blobs = blobs

    def check(self) -> HealthReport:
        return HealthReport(database=_probe(self._db.check), blob_store=_probe(self._blobs.check))


def _probe(check: object) -> str:
    try:
        check()  # type: ignore[operator]
    except Exception as exc:  # any failure is "not ok"; the text helps the operator
        return f"error: {exc}"
    return "ok"


@dataclass(frozen=True, slots=True)
class IndexFigures:
    """What /metrics reports of the whole index (every process sees the same)."""

    studies: int
    instances: int
    bytes: int
    held: dict[tuple[str, str], tuple[int, int]]
    jobs: dict[tuple[str, str], int]
    audit_records: int


class FiguresService:
    """Index-wide figures, read at most every ``ttl`` seconds (a scrape every 15 s of a
    province-sized index must not become a load of its own)."""

    def __init__(self, db: Database, *, ttl: float = 15.0) -> None:
        self._db = db
        self.ttl = ttl
        self._cached: tuple[float, IndexFigures] | None = None
        self._lock = threading.Lock()

    def figures(self) -> IndexFigures:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.ttl:
                return self._cached[1]
            with self._db.read() as session:
                studies, instances, size = metrics_repo.archive_totals(session)
                found = IndexFigures(
                    studies=studies, instances=instances, bytes=size,
                    held=metrics_repo.held_totals(session),
                    jobs=metrics_repo.jobs_by_state(session),
                    audit_records=metrics_repo.audit_chain_length(session))
            self._cached = (now, found)
            return found
