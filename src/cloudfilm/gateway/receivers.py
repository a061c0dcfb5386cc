"""The gateway's other doors: HL7 v2 over MLLP from the RIS, and a watched folder.

Both queue durably before acknowledging, like C-STORE: the MLLP ACK ``AA`` is written only
after the message is fsynced and its row committed; a dropped file is removed from the
watched folder only after it is queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

from cloudfilm.gateway.queue import Meta, Queue, QuotaExceededError
from cloudfilm.gateway.scp import dicom_meta
from cloudfilm.infrastructure.dicom.part10 import Part10Error
from cloudfilm.infrastructure.reports import hl7v2

logger = logging.getLogger(__name__)


def hl7_meta(message: bytes, source: str) -> Meta:
    """Key an HL7 message by its control id (MSH-10) when it has one."""
    control = ""
    for segment in message.replace(b"\n", b"\r").split(b"\r"):
        segment = segment.strip(b"\x0b\x1c")
        if segment.startswith(b"MSH") and len(segment) > 3:
            fields = segment.split(segment[3:4])
            control = fields[9].decode("ascii", "replace") if len(fields) > 9 else ""
            break
    return Meta(kind="hl7", uid=control or hashlib.sha256(message).hexdigest(), source=source)


def queue_hl7(queue: Queue, message: bytes, source: str) -> str:
    """Queue one message; return the ACK (ER7) to send back."""
    if not message.lstrip(b"\x0b").startswith(b"MSH"):
        raise ValueError("not an HL7 v2 message (it does not start with MSH)")
    # Built first: a message whose MSH cannot be answered is refused, never queued.
    accepted = hl7v2.ack(message, "AA")
    try:
        spooled = queue.spool(message)
        queue.commit(spooled, hl7_meta(message, source))
    except QuotaExceededError as exc:
        return hl7v2.ack(message, "AE", str(exc))
    return accepted


class MllpServer:
    """An asyncio MLLP listener (python-hl7's ``start_hl7_server``) in its own thread."""

    def __init__(self, queue: Queue, host: str, port: int) -> None:
        self.queue = queue
        self.host = host
        self.requested_port = port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mllp",
                                        daemon=True)
        self._server: Any = None

    def start(self) -> None:
        import hl7.mllp

        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            hl7.mllp.start_hl7_server(self._client, self.host, self.requested_port),
            self._loop)
        self._server = future.result(timeout=10)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _client(self, reader: Any, writer: Any) -> None:
        peer = writer.get_extra_info("peername")
        try:
            while not reader.at_eof():
                # Raw bytes: Chinese RIS send GBK or UTF-8, which the cloud decodes by MSH-18.
                block = await asyncio.wait_for(reader.readblock(), timeout=300)
                if not block:
                    break
                try:
                    answer = await asyncio.to_thread(queue_hl7, self.queue, bytes(block),
                                                     "mllp")
                except ValueError as exc:  # hl7v2.ReportFormatError too
                    logger.warning("cloudfilm.gateway.hl7_unreadable", extra={"error": str(exc)})
                    answer = "MSH|^~\\&|||||||ACK||P|2.5\rMSA|AR||" + str(exc)[:80] + "\r"
                writer.writeblock(answer.encode("utf-8"))
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:
            logger.exception("cloudfilm.gateway.mllp_error", extra={"peer": str(peer)})
        finally:
            writer.close()

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class FolderWatcher:
    """Polls a folder; a file unchanged for one interval is queued, then removed.

    Unreadable files move to ``.refused/`` beside them, named in the log. Polling, not
    inotify: it works the same on a network share a modality writes to.
    """

    def __init__(self, queue: Queue, folder: Path, interval: float,
                 on_queued: Any = None) -> None:
        self.queue = queue
        self.folder = folder
        self.interval = interval
        self.on_queued = on_queued
        self._seen: dict[Path, tuple[int, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watch", daemon=True)

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.scan()
            except Exception:
                logger.exception("cloudfilm.gateway.watch_error")

    def scan(self) -> int:
        """Queue the files that did not change since the previous scan; return how many."""
        queued = 0
        current: dict[Path, tuple[int, float]] = {}
        for path in sorted(self.folder.rglob("*")):
            if not path.is_file() or ".refused" in path.parts or path.name.startswith("."):
                continue
            stat = path.stat()
            signature = (stat.st_size, stat.st_mtime)
            if self._seen.get(path) != signature:
                current[path] = signature  # still being written, or new: next round
                continue
            try:
                self._queue_file(path)
                queued += 1
            except QuotaExceededError:
                current[path] = signature
                break
        self._seen = current
        if queued and self.on_queued:
            self.on_queued()
        return queued

    def _queue_file(self, path: Path) -> None:
        with open(path, "rb") as fh:
            spooled = self.queue.spool(fh)
        with open(spooled.path, "rb") as fh:
            head = fh.read(4)
        try:
            if head.startswith(b"MSH") or path.suffix.lower() in (".hl7", ".er7"):
                meta = hl7_meta(spooled.path.read_bytes(), "folder")
            else:
                meta = dicom_meta(spooled.path, "folder")
        except Part10Error as exc:
            spooled.discard()
            target = self.folder / ".refused" / path.name
            target.parent.mkdir(exist_ok=True)
            path.replace(target)
            logger.warning("cloudfilm.gateway.watch_refused", extra={
                "file": str(target), "error": str(exc)})
            return
        self.queue.commit(spooled, meta)
        path.unlink()
        logger.info("cloudfilm.gateway.watch_queued", extra={"uid": meta.uid, "at": time.time()})
