"""Liveness and reachability of what the platform depends on."""

from __future__ import annotations

from dataclasses import dataclass

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
