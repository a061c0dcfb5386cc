"""Lossless compression at the gateway, before forwarding (issue 16, ``[compress]``).

The archive re-encodes what it stores in background jobs; for objects that come through a
hospital gateway the gateway does it instead, on the hospital's CPU, before the WAN: the
archive receives JPEG-LS (or HTJ2K) and has nothing to re-encode (it makes no job for an
object that arrives compressed). Same policy shape and same code as the archive's job
(``infrastructure/dicom/lossless.py``: :class:`CompressionPolicy`, :func:`compress_object`):
the codec runs on the native pixel bytes, the new file is parsed and decoded again and
every pixel byte compared with the original; anything not bit-exact, not smaller, or not
compressible (already compressed, lossy, encapsulated, SR, float or >16-bit pixels) is
forwarded as received.

The receiving door records which objects to pack (queue.py ``pack`` rows, in the receiving
transaction, from the header it reads anyway); a thread here claims them and hands the
files to ``workers`` niced processes (spawned: the codecs hold the GIL for parsing, and
receiving must win the CPU), then makes each packed file the item's file (durable before
the original is deleted). A crash anywhere leaves the original queued.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import repeat
from pathlib import Path

from cloudfilm.gateway.config import CompressConfig
from cloudfilm.gateway.queue import Item, Meta, Queue
from cloudfilm.infrastructure.dicom import lossless

logger = logging.getLogger(__name__)

#: One packer result: ("packed", syntax, new bytes) or ("left", reason, b"").
Result = tuple[str, str, bytes]


def policy_of(config: CompressConfig) -> lossless.CompressionPolicy:
    return lossless.CompressionPolicy(enabled=config.enabled, default=config.default,
                                      per_modality=dict(config.modalities))


def packs(policy: lossless.CompressionPolicy) -> Callable[[Meta], bool]:
    """The receiving door's test: may this object be worth packing? (The packer decides
    for good; this only keeps HL7, compressed and pixel-less objects from waiting for it.)"""

    def test(meta: Meta) -> bool:
        return (policy.enabled and meta.kind == "dicom" and meta.has_pixels
                and meta.transfer_syntax_uid in lossless.NATIVE
                and policy.target_for(meta.modality) is not None)

    return test


def pack_file(path: str, policy: lossless.CompressionPolicy) -> Result:
    """Compress one queued file per ``policy``, verified bit-exact (in a packer process)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        return ("left", f"unreadable: {exc.strerror}", b"")
    try:
        target = policy.target_for(lossless.modality_of(raw))
        if target is None:
            return ("left", "policy", b"")
        new = lossless.compress_object(raw, target)
    except lossless.LosslessError as exc:
        return ("left", exc.reason, b"")
    except Exception as exc:  # a codec bug must not stop packing: forward the original
        return ("left", f"error: {type(exc).__name__}: {exc}", b"")
    return ("packed", new.transfer_syntax_uid, new.data)


def _start_worker(nice: int) -> None:
    """A packer process: niced (receiving wins the CPU), and gone with its parent."""
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    with contextlib.suppress(Exception):  # Linux: SIGTERM when the gateway dies (kill -9)
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Packer:
    """A thread that claims objects to pack and ``workers`` processes that pack them."""

    def __init__(self, queue: Queue, config: CompressConfig, *,
                 on_packed: Callable[[], None] | None = None, batch: int = 20) -> None:
        self.queue = queue
        self.config = config
        self.policy = policy_of(config)
        self.on_packed = on_packed
        # Wake the forwarders after this many settled objects (or when idle): whole
        # batches, not one STOW-RS request per packed slice.
        self.batch = batch
        self.packed = 0
        self.left = 0
        self._pool: ProcessPoolExecutor | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pack", daemon=True)

    def start(self) -> None:
        self._pool = self._new_pool()
        self._thread.start()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(max_workers=self.config.workers,
                                   mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker, initargs=(self.config.nice,))

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=timeout)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                busy = self.pack_some()
            except Exception:  # a bug must not end packing; the rows go back at restart
                logger.exception("cloudfilm.gateway.pack_error")
                busy = 0
            if not busy:
                self._wake.wait(timeout=0.2)
                self._wake.clear()

    def pack_some(self, limit: int | None = None,
                  executor: Executor | None = None) -> int:
        """Pack the next waiting objects (``limit``: a few per worker); how many were
        settled. ``executor``: where :func:`pack_file` runs (the pool by default; tests
        pass none and run it inline)."""
        items = self.queue.claim_pack(limit or 4 * self.config.workers)
        if not items:
            return 0
        pool = executor if executor is not None else self._pool
        paths = [str(self.queue.path(item)) for item in items]
        results: Iterable[Result]
        if pool is None:
            results = map(pack_file, paths, repeat(self.policy))
        else:
            results = pool.map(pack_file, paths, repeat(self.policy))
        settled = 0
        try:
            for item, result in zip(items, results, strict=True):
                self._settle(item, result)
                settled += 1
                if self.on_packed is not None and settled % self.batch == 0:
                    self.on_packed()
        except BrokenProcessPool:
            # A packer process died (out of memory on a huge object?): those not settled go
            # as received, so one object cannot stop packing for ever.
            logger.error("cloudfilm.gateway.packer_died", extra={"objects": len(items)})
            for item in items[settled:]:
                self.queue.settle_left(item, "packer-died")
            if executor is None and not self._stop.is_set():
                self._pool = self._new_pool()
        except Exception:
            # The gateway cannot write the packed file (disk full?): the rest go as received
            # now rather than wait for max_wait_seconds.
            for item in items[settled:]:
                self.queue.settle_left(item, "error")
            raise
        if self.on_packed is not None:
            self.on_packed()
        return len(items)

    def _settle(self, item: Item, result: Result) -> None:
        state, detail, data = result
        if state == "packed":
            spooled = self.queue.spool(data, quota=False)
            if self.queue.settle_packed(item, spooled, detail):
                self.packed += 1
                logger.info("cloudfilm.gateway.packed", extra={
                    "sop_instance_uid": item.uid, "from": item.size, "to": len(data),
                    "syntax": detail, "at": time.time()})
                return
            detail = "sent-as-received"
        else:
            self.queue.settle_left(item, detail)
        self.left += 1
        logger.info("cloudfilm.gateway.pack_left", extra={
            "sop_instance_uid": item.uid, "reason": detail[:200]})
