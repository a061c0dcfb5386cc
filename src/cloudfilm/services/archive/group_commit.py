"""Group commit: objects that arrive at the same time share one ingest batch.

Each door thread (a C-STORE association, a STOW-RS request) calls :meth:`GroupCommit.ingest`
and blocks until *its own* object is durable and indexed, exactly as with
``IngestService.ingest_files([item])``. Whoever arrives while no batch is running becomes the
leader: it takes every object waiting (up to ``max_batch``), runs them through
``ingest_files`` per sender (one index transaction and one commit for all of them, blob
writes in parallel), hands each caller its result, and repeats while objects keep
arriving; the others wait. Nothing is answered before ``ingest_files`` returned, so the
durability rule is the pipeline's own. Alone (one association), an object goes straight
through: a batch of one, no waiting for company.

Use: ``services.ingest.ingest_file_grouped(path, sender=..., move=...)`` has the signature
and the exceptions of ``ingest_file``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from cloudfilm.services.kernel.sender import Sender

# Larger batches hold a transaction (and the callers) longer for little gain.
MAX_BATCH = 32


class GroupCommit:
    """Batches concurrent single-object ingests; thread-safe, no thread of its own.

    A caller leads at most until its own object is done, then hands over: the next
    waiting caller whose object is still pending takes the lead, so that no association
    keeps doing the others' work under a steady stream.
    """

    def __init__(self, ingest_files: Callable[..., list[Any]], *,
                 max_batch: int = MAX_BATCH) -> None:
        self._ingest_files = ingest_files
        self._max_batch = max_batch
        self._changed = threading.Condition()
        self._waiting: list[tuple[Sender, Any, Future[Any]]] = []
        self._leading = False

    def ingest(self, item: Any, sender: Sender) -> Any:
        """The result ``ingest_files`` gives ``item`` (a StoredInstance or CloudfilmError)."""
        future: Future[Any] = Future()
        with self._changed:
            self._waiting.append((sender, item, future))
        while True:
            with self._changed:
                while self._leading and not future.done():
                    self._changed.wait()
                if future.done():
                    break
                self._leading = True
                batch = self._waiting[:self._max_batch]
                del self._waiting[:self._max_batch]
            try:
                self._run(batch)
            finally:
                with self._changed:
                    self._leading = False
                    self._changed.notify_all()
        return future.result()

    def _run(self, batch: list[tuple[Sender, Any, Future[Any]]]) -> None:
        by_sender: dict[Sender, list[tuple[Any, Future[Any]]]] = {}
        for sender, item, future in batch:
            by_sender.setdefault(sender, []).append((item, future))
        for sender, entries in by_sender.items():
            try:
                results = self._ingest_files([item for item, _ in entries], sender=sender)
                for (_, future), result in zip(entries, results, strict=True):
                    future.set_result(result)
            except BaseException as exc:  # every waiting caller must hear of it
                for _, future in entries:
                    if not future.done():
                        future.set_exception(exc)
