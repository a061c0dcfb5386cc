"""Background job workers: huey carries storage job ids from the outbox to worker processes.

The queue is huey's SQLite storage in the data folder for the embedded platform (no
service to run) or Redis at scale (``CLOUDFILM_JOBS__REDIS_URL``). The queue is not the
record: ``storage_job`` rows are, so a queue lost with its machine costs nothing but a
delay (:meth:`StorageService.relay` hands abandoned jobs over again).

``cloudfilm jobs worker`` (and ``cloudfilm serve`` when compression or a replica is
configured) runs :func:`run_worker`: a huey consumer with ``jobs.workers`` processes, plus
a relay process that moves the outbox into the queue every ``jobs.relay_seconds``
(``jobs.batch`` job ids per message), enqueues the scrubber every
``storage.scrub_interval_hours`` and the tier planner every ``storage.tier_interval_hours``.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from huey import Huey, RedisHuey, SqliteHuey

from cloudfilm.config import Settings
from cloudfilm.services.ai.worklist import AiWork
from cloudfilm.services.storage.service import JobFailedError, StorageService

logger = logging.getLogger(__name__)

# One StorageService per process: huey's process workers are forked, and a database
# engine's connections must not cross a fork.
_local: dict[int, StorageService] = {}


def _storage(settings: Settings) -> StorageService:
    service = _local.get(os.getpid())
    if service is None:
        from cloudfilm.app import build_services

        settings.auto_migrate = False
        built = build_services(settings).storage
        assert built is not None
        service = _local[os.getpid()] = built
    return service


_ai_local: dict[tuple[int, str, str], AiWork] = {}


def _ai(settings: Settings) -> AiWork:
    """The AI work service of this process (built once per process, as ``_storage``)."""
    key = (os.getpid(), str(settings.database_url), str(settings.data_dir))
    work = _ai_local.get(key)
    if work is None:
        from cloudfilm.app import build_services

        settings.auto_migrate = False
        built = build_services(settings).ai
        assert built is not None
        work = _ai_local[key] = built.work
    return work


class HueyJobQueue:
    """The ``JobQueue`` port on huey, with its two tasks registered."""

    def __init__(self, settings: Settings, *, immediate: bool = False) -> None:
        self.settings = settings
        jobs = settings.jobs
        if jobs.redis_url:
            self.huey: Huey = RedisHuey("cloudfilm", url=jobs.redis_url, immediate=immediate)
        else:
            path = Path(settings.data_dir).resolve() / "jobs.sqlite3"
            path.parent.mkdir(parents=True, exist_ok=True)
            self.huey = SqliteHuey("cloudfilm", filename=str(path), immediate=immediate)
        # Retries by huey (with delay) until the row's attempts reach max_attempts; then
        # run_job marks it dead and returns normally.
        self._run = self.huey.task(retries=jobs.max_attempts,
                                   retry_delay=jobs.retry_delay_seconds,
                                   name="cloudfilm.storage.run_job")(self._run_job)
        # A batch is not retried as a whole: a failing job in it stays ``queued`` and the
        # relay hands it over again after jobs.stale_seconds (or it is dead already).
        self._run_many = self.huey.task(name="cloudfilm.storage.run_batch")(self._run_batch)
        self._scrub = self.huey.task(name="cloudfilm.storage.scrub")(self._scrub_all)
        self._plan = self.huey.task(name="cloudfilm.storage.plan_tiers")(self._plan_tiers)
        # In-process AI plug-ins (services/ai): the workitem's UID only; the row is the
        # record, and a failed run goes back to the worklist (AiWork.run).
        self._ai = self.huey.task(name="cloudfilm.ai.run_workitem")(self._run_ai)

    def enqueue_ai(self, workitem_uid: str) -> None:
        self._ai(workitem_uid)

    def _run_ai(self, workitem_uid: str) -> str:
        return _ai(self.settings).run(workitem_uid)

    def enqueue(self, job_id: int) -> None:
        self._run(job_id)

    def enqueue_batch(self, job_ids: list[int]) -> None:
        self._run_many(list(job_ids))

    def enqueue_tier_plan(self) -> None:
        self._plan()

    def enqueue_scrub(self) -> None:
        self._scrub()

    def pending(self) -> int:
        return int(self.huey.pending_count())

    def _run_job(self, job_id: int) -> str:
        try:
            return _storage(self.settings).run_job(job_id)
        except JobFailedError:
            raise  # huey retries it after retry_delay

    def _run_batch(self, job_ids: list[int]) -> dict[str, int]:
        return _storage(self.settings).run_batch(job_ids)

    def _plan_tiers(self) -> int:
        tiers = _storage(self.settings).tiers
        return tiers.plan() if tiers is not None else 0

    def _scrub_all(self) -> int:
        report = _storage(self.settings).verify(
            bytes_per_second=self.settings.storage.scrub_bytes_per_second)
        logger.info("cloudfilm.storage.scrubbed", extra={
            "checked": report.checked, "mismatches": len(report.mismatches),
            "missing": len(report.missing), "repaired": len(report.repaired)})
        return report.checked


def relay_forever(queue: HueyJobQueue, storage: StorageService, stop: threading.Event) -> None:
    """Move the outbox into the queue until ``stop``; enqueue the scrubber periodically."""
    jobs, conf = queue.settings.jobs, queue.settings.storage
    next_scrub = time.monotonic() + conf.scrub_interval_hours * 3600
    # The first tier plan soon after start; then every tier_interval_hours.
    next_plan = time.monotonic() + 60
    while not stop.is_set():
        try:
            storage.relay(queue)
            _ai(queue.settings).relay(queue)
            if time.monotonic() >= next_scrub:
                queue.enqueue_scrub()
                next_scrub = time.monotonic() + conf.scrub_interval_hours * 3600
            if storage.tiers is not None and time.monotonic() >= next_plan:
                queue.enqueue_tier_plan()
                next_plan = time.monotonic() + conf.tier_interval_hours * 3600
        except Exception:  # the database may be restarting: try again next round
            logger.exception("cloudfilm.jobs.relay_failed")
        stop.wait(jobs.relay_seconds)


def _relay_main(settings: Settings) -> None:
    """The relay's own process (spawned, not forked): see :func:`run_worker`."""
    import signal

    from cloudfilm.app import configure_logging, die_with_parent

    die_with_parent()
    configure_logging(json=settings.log_json)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    relay_forever(HueyJobQueue(settings), _storage(settings), stop)


def run_worker(settings: Settings, *, workers: int | None = None) -> None:
    """Run the huey consumer and the relay until SIGINT/SIGTERM (blocks).

    The relay runs in a spawned process, not a thread: huey forks its workers (at start and
    to replace a dead one), and a fork while another thread holds a lock (logging, the
    database pool) leaves the child blocked forever on that lock.
    """
    import multiprocessing

    if settings.jobs.nice:  # before the relay and the workers start: they inherit it
        os.nice(settings.jobs.nice)
    queue = HueyJobQueue(settings)
    count = settings.jobs.workers if workers is None else workers
    relay = multiprocessing.get_context("spawn").Process(
        target=_relay_main, args=(settings,), name="cloudfilm-relay", daemon=True)
    relay.start()
    consumer: Any = queue.huey.create_consumer(workers=max(count, 1), worker_type="process",
                                               periodic=False, initial_delay=0.2,
                                               max_delay=2.0)
    try:
        consumer.run()  # huey installs SIGTERM/SIGINT handlers and stops its workers
    finally:
        relay.terminate()
        relay.join(timeout=10)
