"""Storage upkeep in the background: lossless re-encoding and the integrity scrubber.

Jobs are rows of ``storage_job`` written in the ingest transaction (the outbox), so a
kill -9 anywhere loses none. :meth:`StorageService.relay` hands pending rows, and queued
rows whose worker died (no news for ``stale_seconds``), to the queue (huey); the queue only
carries the row's id and :meth:`run_job` is idempotent, so running a job twice is harmless.

Re-encoding is bit-exact or nothing (infrastructure/dicom/lossless.py) and crash-safe:

1. read the blob and check its SHA-256 (never re-encode damaged bytes);
2. encode, decode again, compare every pixel byte with the original;
3. write the new blob (durable: fsync or the object store's acknowledgement);
4. one transaction: point the instance at it (only if it still holds the blob read in 1)
   and keep the original's SHA-256 and transfer syntax in ``instance_version``;
5. delete the old blob, then mark the job done.

A crash before 4 leaves the original served (and at most the new blob unreferenced, which
the rerun rewrites under the same key and indexes); after 4 the new one is served and the
rerun of the job deletes the old blob (step 5 again).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import orjson
from prometheus_client import Counter
from sqlalchemy.orm import Session

from cloudfilm.infrastructure.db import storage_repository as repo
from cloudfilm.infrastructure.db.session import Database
from cloudfilm.infrastructure.dicom import lossless
from cloudfilm.infrastructure.dicom.lossless import CompressionPolicy
from cloudfilm.infrastructure.storage.base import (
    BlobNotFoundError,
    BlobStore,
    BlobStoreError,
    blob_key,
)
from cloudfilm.infrastructure.storage.mirror import MirroredBlobStore
from cloudfilm.infrastructure.storage.tiered import TieredBlobStore
from cloudfilm.services.errors import InvalidQueryError
from cloudfilm.services.storage.tiers import TIER, Tiers

logger = logging.getLogger(__name__)

TRANSCODED = Counter("cloudfilm_storage_transcoded_total", "Storage re-encoding outcomes",
                     ["outcome"])
SCRUB_MISMATCHES = Counter("cloudfilm_storage_scrub_mismatches_total",
                           "Blobs whose bytes no longer match their SHA-256")
SCRUB_REPAIRED = Counter("cloudfilm_storage_scrub_repaired_total",
                         "Blobs repaired from the replica store")
SCRUB_BYTES = Counter("cloudfilm_storage_scrub_bytes_total", "Bytes re-read by the scrubber")

TRANSCODE = "transcode"
_FINAL = frozenset({"done", "left", "dead"})
_CHUNK = 1 << 20
# Threads writing (and fsyncing) a batch's new blobs and deleting the old ones.
_WRITERS = 4


class JobQueue(Protocol):
    """Where job ids go to be run by a worker (huey in production, inline in tests)."""

    def enqueue(self, job_id: int) -> None: ...


class BatchQueue(JobQueue, Protocol):
    """A queue that carries several job ids per message (one queue round trip for many
    objects: huey's SQLite queue costs a write transaction per message)."""

    def enqueue_batch(self, job_ids: list[int]) -> None: ...


class JobFailedError(Exception):
    """A job failed this attempt; the queue retries it (until it goes to the dead list)."""


@dataclass(frozen=True, slots=True)
class JobView:
    id: int
    kind: str
    sop_instance_uid: str
    state: str
    attempts: int
    last_error: str
    updated_at: datetime


@dataclass(slots=True)
class VerifyReport:
    checked: int = 0
    bytes: int = 0
    mismatches: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)


class StorageService:
    def __init__(self, db: Database, blobs: BlobStore, work_dir: Path, *,
                 policy: CompressionPolicy, max_attempts: int = 3,
                 stale_seconds: float = 600.0, delete_grace_seconds: float = 0.0,
                 tiers: Tiers | None = None, batch: int = 16) -> None:
        self._db = db
        self._blobs = blobs
        # Hot/cold tiers when a cold store is configured (services/storage/tiers.py).
        self.tiers = tiers
        self._batch = batch
        self._work_dir = work_dir
        self.policy = policy
        self._max_attempts = max_attempts
        self._stale = timedelta(seconds=stale_seconds)
        # The original blob outlives its index row this long: a reader that located the
        # object just before the switch (a WADO-RS series stream) still finds its blob.
        self._grace = timedelta(seconds=delete_grace_seconds)

    # -- outbox ----------------------------------------------------------------------------

    def enqueue_in(self, session: Session, uids: Iterable[str]) -> None:
        """Called by ingest inside its transaction: one transcode job per object stored in
        a native (uncompressed) syntax. Objects that arrive compressed (by the modality, or
        by a hospital gateway's packer) get no job: there is nothing to re-encode."""
        if self.policy.enabled:
            repo.add_jobs_for_syntaxes(session, TRANSCODE, list(uids), lossless.NATIVE,
                                       now=datetime.now(UTC))

    def relay(self, queue: JobQueue, *, limit: int = 1000, stale: bool = True) -> int:
        """Hand pending (and abandoned) jobs to the queue; returns how many."""
        now = datetime.now(UTC)
        with self._db.write() as session:
            ids = repo.claim(session, stale_before=now - self._stale if stale else now,
                             cleanup_before=now - self._grace, now=now, limit=limit)
        enqueue_batch = getattr(queue, "enqueue_batch", None)
        if enqueue_batch is not None:
            for start in range(0, len(ids), self._batch):
                enqueue_batch(ids[start:start + self._batch])
        else:
            for job_id in ids:
                queue.enqueue(job_id)
        return len(ids)

    def run_batch(self, job_ids: list[int]) -> dict[str, int]:
        """Run several jobs (one queue message) together: one read of their rows, one
        index transaction for all their switches (and one more after deleting the old
        blobs); a failing one is left for its retry (its row stays ``queued`` and the
        relay hands it over again after ``stale_seconds``, or it went dead) without
        stopping the others. Counts of the states they ended in ("failed": retried)."""
        states: dict[str, int] = {}
        for state, _ in self._run_jobs(job_ids).values():
            states[state] = states.get(state, 0) + 1
        return states

    def run_job(self, job_id: int) -> str:
        """Run one job; returns its state. Raises :class:`JobFailedError` to be retried."""
        state, error = self._run_jobs([job_id])[job_id]
        if state == "failed":
            raise JobFailedError(error)
        return state

    def _run_jobs(self, job_ids: list[int]) -> dict[int, tuple[str, str]]:
        with self._db.read() as session:
            rows = repo.jobs_by_id(session, job_ids)
        out: dict[int, tuple[str, str]] = {}
        live = []
        for job_id in job_ids:
            row = rows.get(job_id)
            if row is None or row.state in _FINAL:
                out[job_id] = (row.state if row is not None else "gone", "")
            else:
                live.append(row)
        outcomes: dict[int, str | Exception] = {}
        for row in live:
            if row.kind == TIER:
                try:
                    if self.tiers is None:
                        raise JobFailedError("no cold store is configured (storage.cold_url)")
                    outcomes[row.id] = self.tiers.move_cold(row.sop_instance_uid)
                except Exception as exc:
                    outcomes[row.id] = exc
        transcodes = [row for row in live if row.kind != TIER]

        def finish(session: Session, by_uid: Mapping[str, str | Exception]) -> None:
            for row in transcodes:
                outcomes[row.id] = by_uid[row.sop_instance_uid]
            repo.set_jobs(session, self._states(live, outcomes), now=datetime.now(UTC))

        finished = False
        if transcodes:
            by_uid, finished = self._transcode_many(
                [row.sop_instance_uid for row in transcodes], finish=finish)
            for row in transcodes:
                outcomes[row.id] = by_uid[row.sop_instance_uid]
        updates = self._states(live, outcomes)
        if not finished:
            with self._db.write() as session:
                repo.set_jobs(session, updates, now=datetime.now(UTC))
        for job_id, state, detail, attempts in updates:
            failed = isinstance(outcomes[job_id], Exception)
            if failed:
                logger.warning("cloudfilm.storage.job_failed",
                               extra={"job": job_id, "attempts": attempts, "state": state})
            out[job_id] = ("failed" if failed and state != "dead" else state, detail)
        return out

    def _states(self, rows: list[Any], outcomes: Mapping[int, str | Exception],
                ) -> list[tuple[int, str, str, int]]:
        """(job id, new state, detail, attempts) for each job from its outcome."""
        updates = []
        for row in rows:
            outcome, attempts = outcomes[row.id], row.attempts
            if isinstance(outcome, Exception):
                attempts += 1
                state = "dead" if attempts >= self._max_attempts else "queued"
                detail = f"{type(outcome).__name__}: {outcome}"[:2000]
            else:
                detail = outcome
                if outcome == "transcoded" and row.kind != TIER and self._grace:
                    state = "cleanup"  # the relay runs it again after the grace: deletes
                else:
                    state = "done" if outcome in ("transcoded", "moved", "already") else "left"
            updates.append((row.id, state, detail, attempts))
        return updates

    def run_pending(self, *, limit: int = 1000) -> dict[str, int]:
        """Run every pending job here, in order, in batches of ``jobs.batch`` (``cloudfilm
        jobs run``, tests); counts of the states they ended in (cleanups due later are left
        for the worker)."""
        ran: list[int] = []
        self.relay(_Collect(ran), limit=limit, stale=False)
        states: dict[str, int] = {}
        for start in range(0, len(ran), self._batch):
            for state, n in self.run_batch(ran[start:start + self._batch]).items():
                states[state] = states.get(state, 0) + n
        return states

    def jobs(self, *, state: str | None = None, limit: int = 100) -> list[JobView]:
        with self._db.read() as session:
            return [JobView(j.id, j.kind, j.sop_instance_uid, j.state, j.attempts,
                            j.last_error, j.updated_at)
                    for j in repo.jobs(session, state=state, limit=limit)]

    def job_counts(self) -> dict[str, int]:
        with self._db.read() as session:
            return repo.job_counts(session)

    def retry(self, ids: list[int] | None = None) -> int:
        """Put dead jobs (all, or those named) back to pending."""
        with self._db.write() as session:
            return repo.retry(session, ids, now=datetime.now(UTC))

    # -- lossless re-encoding -------------------------------------------------------------

    def transcode(self, sop_uid: str) -> str:
        """Re-encode one instance losslessly per policy, outside the job rows; returns
        "transcoded", "already" or "left:<reason>". Raises on storage or index failures."""
        outcome = self._transcode_many([sop_uid])[0][sop_uid]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _transcode_many(self, uids: list[str], *,
                        finish: Callable[[Session, Mapping[str, str | Exception]], None]
                        | None = None) -> tuple[dict[str, str | Exception], bool]:
        """Re-encode several instances; the outcome (or the exception) of each.

        In order, for crash safety: every new blob durable → one index transaction
        switching all rows (compare-and-set each) → old blobs deleted (unless the grace
        keeps them). ``finish`` writes the jobs' states in the switching transaction when
        nothing is left to delete (returned True); otherwise the caller writes them after
        the deletions (a crash before leaves the job queued; its rerun deletes leftovers).
        """
        finished = False
        with self._db.read() as session:
            rows = repo.instances_by_uid(session, uids)
            originals = repo.originals_of(session, list(rows))
            held = repo.held_studies(session, list({r.study_fk for r in rows.values()}))
        out: dict[str, str | Exception] = {}
        switches: list[tuple[Any, str, str, int, str]] = []
        delete: list[str] = []
        # The new blobs are written (and fsynced) by a few threads while the next object is
        # encoded: the waits for the disk overlap the codec, and concurrent fsyncs share
        # the filesystem journal's commits (a group commit). All are durable before the
        # index switch below.
        writes: list[tuple[Any, tuple[str, str, int, str], Future[None]]] = []
        with ThreadPoolExecutor(max_workers=_WRITERS, thread_name_prefix="blob-put") as pool:
            for uid in dict.fromkeys(uids):
                row = rows.get(uid)
                if row is None:
                    out[uid] = self._left("gone")
                elif row.original_transfer_syntax_uid:
                    delete.extend(blob_key(sha) for sha in originals.get(uid, []))
                    out[uid] = "already"
                elif row.study_fk in held:  # the file as received is evidence: keep it
                    out[uid] = self._left("legal-hold")
                else:
                    try:
                        outcome = self._encode_one(row)
                    except Exception as exc:
                        out[uid] = exc
                        continue
                    if isinstance(outcome, str):
                        out[uid] = outcome
                    else:
                        key, sha, data, syntax = outcome
                        writes.append((row, (key, sha, len(data), syntax),
                                       pool.submit(self._put, key, data)))
            for row, new, written in writes:
                try:
                    written.result()
                except Exception as exc:
                    out[row.sop_instance_uid] = exc
                else:
                    switches.append((row, *new))
        if switches:
            now = datetime.now(UTC)
            with self._db.write() as session:
                batch = repo.switch_batch()
                for row, key, sha, size, syntax in switches:
                    meta = orjson.loads(row.metadata_json)
                    meta["00083002"] = {"vr": "UI", "Value": [syntax]}
                    applied = repo.apply_transcode(
                        session, row, blob_key=key, sha256=sha, size=size,
                        transfer_syntax_uid=syntax, metadata_json=orjson.dumps(meta).decode(),
                        now=now, batch=batch)
                    if applied:
                        out[row.sop_instance_uid] = "transcoded"
                        if not self._grace:
                            delete.append(row.blob_key)
                    else:  # a sender replaced it meanwhile: theirs wins
                        out[row.sop_instance_uid] = self._left("changed")
                        delete.append(key)
                batch.flush(session)
                if finish is not None and not delete:
                    finish(session, out)
                    finished = True
            for row, _key, _, size, syntax in switches:
                if out[row.sop_instance_uid] == "transcoded":
                    TRANSCODED.labels("transcoded").inc()
                    logger.info("cloudfilm.storage.transcoded", extra={
                        "sop": row.sop_instance_uid, "from": row.size_bytes, "to": size,
                        "syntax": syntax})
        self._delete_unused(delete)
        return out, finished

    def _encode_one(self, row: Any) -> str | tuple[str, str, bytes, str]:
        """"left:<reason>", or the new blob to write: (key, sha256, bytes, syntax)."""
        target = self.policy.target_for(row.modality or "", row.hospital_code)
        if target is None:
            return self._left("policy")
        if row.transfer_syntax_uid not in lossless.NATIVE:  # no need to read the blob
            return self._left("already-compressed")
        raw = self._read_checked(row.blob_key, row.sha256)
        try:
            new = lossless.compress_object(raw, target)
        except lossless.LosslessError as exc:
            return self._left(exc.reason)
        sha = hashlib.sha256(new.data).hexdigest()
        return blob_key(sha), sha, new.data, new.transfer_syntax_uid

    def _left(self, reason: str) -> str:
        TRANSCODED.labels(f"left:{reason}").inc()
        return f"left:{reason}"

    def _read_checked(self, key: str, sha256: str) -> bytes:
        with self._blobs.open(key) as fh:
            raw = fh.read()
        if hashlib.sha256(raw).hexdigest() != sha256:
            raise BlobStoreError(f"blob {key} does not match its SHA-256; run "
                                 "`cloudfilm storage verify` to repair it")
        return raw

    def _put(self, key: str, data: bytes) -> None:
        """Write the new blob; durable on return (put_file fsyncs the file before its
        rename, and the folders after)."""
        fd, name = tempfile.mkstemp(prefix="transcode-", suffix=".dcm", dir=self._work_dir)
        tmp = Path(name)
        try:
            with open(fd, "wb") as fh:
                fh.write(data)
            self._blobs.put_file(key, tmp, move=True)
        finally:
            tmp.unlink(missing_ok=True)

    def _delete_unused(self, keys: list[str]) -> None:
        if not keys:
            return
        with self._db.read() as session:
            used = repo.blobs_in_use(session, keys)
        unused = [key for key in dict.fromkeys(keys) if key not in used]
        with ThreadPoolExecutor(max_workers=_WRITERS, thread_name_prefix="blob-del") as pool:
            list(pool.map(self._blobs.delete, unused))  # re-raises a failed deletion

    # -- integrity -------------------------------------------------------------------------

    def verify(self, *, bytes_per_second: float | None = None, limit: int | None = None,
               sleep: Callable[[float], None] = time.sleep) -> VerifyReport:
        """Re-read every blob, compare its SHA-256, record the result per instance, and
        repair from the replica store when one is configured and holds the right bytes."""
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise InvalidQueryError("bytes_per_second must be positive")
        report = VerifyReport()
        started = time.monotonic()
        after = 0
        while limit is None or report.checked < limit:
            with self._db.read() as session:
                batch = repo.instances_after(session, after, 200)
            if not batch:
                break
            for inst in batch:
                after = inst.id
                self._verify_one(inst, report)
                if bytes_per_second:
                    ahead = report.bytes / bytes_per_second - (time.monotonic() - started)
                    if ahead > 0:
                        sleep(ahead)
                if limit is not None and report.checked >= limit:
                    break
        return report

    def _stores(self) -> tuple[BlobStore, BlobStore | None, BlobStore | None]:
        """(hot primary, cold store or None, replica or None)."""
        hot: BlobStore = self._blobs
        cold: BlobStore | None = None
        if isinstance(self._blobs, TieredBlobStore):
            hot, cold = self._blobs.hot, self._blobs.cold
        if isinstance(hot, MirroredBlobStore):
            return hot.primary, cold, hot.replica
        return hot, cold, None

    def _verify_one(self, inst: Any, report: VerifyReport) -> None:
        report.checked += 1
        hot, cold, _ = self._stores()
        primary = cold if inst.storage_tier == "cold" and cold is not None else hot
        try:
            digest, size = _digest(primary, inst.blob_key)
            ok, detail = digest == inst.sha256, "" if digest == inst.sha256 else "sha256"
        except BlobNotFoundError:
            ok, detail, size = False, "missing", 0
            other = hot if primary is cold else cold
            if other is not None and other.exists(inst.blob_key):
                # In the other tier (a restore writes every blob hot): check it there.
                primary = other
                digest, size = _digest(primary, inst.blob_key)
                ok, detail = digest == inst.sha256, "" if digest == inst.sha256 else "sha256"
        report.bytes += size
        SCRUB_BYTES.inc(size)
        repaired = False
        if not ok:
            SCRUB_MISMATCHES.inc()
            (report.missing if detail == "missing" else report.mismatches).append(
                inst.sop_instance_uid)
            logger.error("cloudfilm.storage.scrub_mismatch",
                         extra={"sop": inst.sop_instance_uid, "key": inst.blob_key,
                                "problem": detail})
            repaired = self._repair(inst, primary)
            if repaired:
                SCRUB_REPAIRED.inc()
                report.repaired.append(inst.sop_instance_uid)
        with self._db.write() as session:
            repo.record_check(session, inst.sop_instance_uid, ok=ok or repaired,
                              repaired=repaired, detail=detail, now=datetime.now(UTC))

    def _repair(self, inst: Any, target: BlobStore) -> bool:
        """Copy the replica's blob over the damaged one (in whichever tier holds it) when
        the replica's bytes match the recorded SHA-256."""
        replica = self._stores()[2]
        if replica is None:
            return False
        try:
            digest, _ = _digest(replica, inst.blob_key)
        except BlobStoreError:
            return False
        if digest != inst.sha256:
            return False
        fd, name = tempfile.mkstemp(prefix="repair-", dir=self._work_dir)
        tmp = Path(name)
        try:
            with open(fd, "wb") as out:
                for chunk in replica.iter_chunks(inst.blob_key, _CHUNK):
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            target.put_file(inst.blob_key, tmp, move=True)
        finally:
            tmp.unlink(missing_ok=True)
        return bool(_digest(target, inst.blob_key)[0] == inst.sha256)

    def forecast(self, *, raw_per_year: float | None = None, growth: float = 0.0) -> Forecast:
        """Bytes per modality and month, the compression ratio achieved, and the projection
        to 5, 10 and 30 years (of ``raw_per_year``, or of this archive's last 12 months)."""
        with self._db.read() as session:
            rows = [ForecastRow(m or "", month or "", int(n), int(stored or 0), int(rec or 0))
                    for m, month, n, stored, rec in repo.bytes_by_modality_month(session)]
        stored = sum(r.stored_bytes for r in rows)
        received = sum(r.received_bytes for r in rows)
        ratio = received / stored if stored else 1.0
        if raw_per_year is None:
            months = sorted({r.month for r in rows})[-12:]
            recent = sum(r.received_bytes for r in rows if r.month in months)
            raw_per_year = recent * 12 / max(len(months), 1)
        return Forecast(rows, ratio, project(raw_per_year, ratio, growth=growth))

    def check_of(self, sop_uid: str) -> tuple[bool, bool, str] | None:
        with self._db.read() as session:
            row = repo.check_of(session, sop_uid)
            return (row.ok, row.repaired, row.detail) if row is not None else None


@dataclass(frozen=True, slots=True)
class ForecastRow:
    modality: str
    month: str
    objects: int
    stored_bytes: int
    received_bytes: int

    @property
    def ratio(self) -> float:
        return self.received_bytes / self.stored_bytes if self.stored_bytes else 1.0


@dataclass(frozen=True, slots=True)
class Forecast:
    rows: list[ForecastRow]
    ratio: float  # bytes as received / bytes stored, over everything stored
    # years -> (raw bytes, stored bytes at the achieved ratio)
    projection: dict[int, tuple[float, float]]


def project(raw_per_year: float, ratio: float, *, growth: float = 0.0,
            years: Iterable[int] = (5, 10, 30)) -> dict[int, tuple[float, float]]:
    """Cumulative raw and stored bytes after each number of years (every study kept),
    with the yearly raw volume growing by ``growth`` (0.1 = 10 % a year)."""
    out = {}
    for n in years:
        raw = sum(raw_per_year * (1 + growth) ** y for y in range(n))
        out[n] = (raw, raw / ratio if ratio > 0 else raw)
    return out


class _Collect:
    def __init__(self, into: list[int]) -> None:
        self._into = into

    def enqueue(self, job_id: int) -> None:
        self._into.append(job_id)


def _digest(store: BlobStore, key: str) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    for chunk in store.iter_chunks(key, _CHUNK):
        h.update(chunk)
        size += len(chunk)
    return h.hexdigest(), size
