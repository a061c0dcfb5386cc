"""The gateway process: queue, doors, forwarders, status page and heartbeat, started in order.

Start-up recovers the queue first (interrupted sends back to ``received``), so nothing is
claimed twice; then the forwarders, then the doors that accept new objects.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import httpx

from cloudfilm.gateway.config import GatewayConfig
from cloudfilm.gateway.forward import Forwarder, http_client
from cloudfilm.gateway.pack import Packer, packs, policy_of
from cloudfilm.gateway.pull import Puller
from cloudfilm.gateway.queue import Queue
from cloudfilm.gateway.receivers import FolderWatcher, MllpServer
from cloudfilm.gateway.scp import StoreSCP, configure_pynetdicom
from cloudfilm.gateway.status import StatusServer, snapshot

logger = logging.getLogger(__name__)

HEARTBEAT_PATH = "/api/v1/gateway/heartbeat"


def open_queue(config: GatewayConfig) -> Queue:
    compress = config.compress
    return Queue(config.queue.folder, quota_bytes=config.queue.quota_bytes,
                 warn_fraction=config.queue.warn_fraction,
                 packs=packs(policy_of(compress)) if compress.enabled else None,
                 pack_wait_seconds=compress.max_wait_seconds)


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.queue = open_queue(config)
        self.forwarder = Forwarder(self.queue, config.cloud, config.forward,
                                   keep_sent_seconds=config.queue.keep_sent_days * 86400)
        self.scp = StoreSCP(config.dicom, self.queue)
        self.packer: Packer | None = None
        if config.compress.enabled:
            self.packer = Packer(self.queue, config.compress, on_packed=self.forwarder.wake,
                                 batch=config.forward.batch_size)
        self.mllp: MllpServer | None = None
        if config.reports.mllp_port is not None:
            self.mllp = MllpServer(self.queue, config.reports.mllp_host,
                                   config.reports.mllp_port)
        self.watcher: FolderWatcher | None = None
        if config.watch.folder is not None:
            self.watcher = FolderWatcher(self.queue, config.watch.folder,
                                         config.watch.interval_seconds, self.forwarder.wake)
        self.puller: Puller | None = None
        if config.pull is not None:
            self.puller = Puller(config.pull, config.dicom.ae_title, self.queue,
                                 self.forwarder.wake)
        self.status: StatusServer | None = None
        if config.status.port is not None:
            self.status = StatusServer(self.queue, config.status.host, config.status.port,
                                       config.forward.deadline_hours)
        self._stop = threading.Event()
        self._housekeeping = threading.Thread(target=self._housekeep, name="housekeeping",
                                              daemon=True)
        self.heartbeat_ok: bool | None = None

    def start(self) -> None:
        configure_pynetdicom()
        stuck = self.queue.recover()
        if stuck:
            logger.warning("cloudfilm.gateway.resumed", extra={"interrupted": stuck})
        self.forwarder.start()
        if self.packer is not None:
            self.packer.start()
        self.scp.start()
        if self.mllp is not None:
            self.mllp.start()
        if self.watcher is not None:
            self.watcher.start()
        if self.puller is not None:
            self.puller.start()
        if self.status is not None:
            self.status.start()
        self._housekeeping.start()

    def describe(self) -> str:
        parts = [f"DICOM AE {self.config.dicom.ae_title} on "
                 f"{self.config.dicom.host}:{self.scp.port}"]
        if self.mllp is not None:
            parts.append(f"HL7 MLLP on {self.mllp.host}:{self.mllp.port}")
        if self.watcher is not None:
            parts.append(f"watching {self.watcher.folder}")
        if self.puller is not None:
            pull = self.puller.config
            parts.append(f"polling {pull.ae_title} at {pull.host}:{pull.port} every "
                         f"{pull.interval_seconds:g} s")
        if self.packer is not None:
            parts.append(f"compressing losslessly ({self.config.compress.workers} "
                         "packer processes)")
        if self.status is not None:
            parts.append(f"status at http://{self.config.status.host}:{self.status.port}/")
        return "; ".join(parts) + f"; forwarding to {self.config.cloud.url}"

    def stop(self) -> None:
        self._stop.set()
        if self.puller is not None:
            self.puller.stop()
        self.scp.stop()
        if self.mllp is not None:
            self.mllp.stop()
        if self.watcher is not None:
            self.watcher.stop()
        if self.packer is not None:
            self.packer.stop()
        self.forwarder.stop()
        if self.status is not None:
            self.status.stop()
        self.queue.close()

    def wait(self) -> None:
        while not self._stop.wait(1.0):
            pass

    def _housekeep(self) -> None:
        interval = self.config.status.heartbeat_seconds
        keep = self.config.queue.keep_sent_days * 86400
        with http_client(self.config.cloud) as client:
            next_beat = 0.0
            while not self._stop.wait(1.0):
                if keep > 0:
                    self.queue.expire_sent(keep)
                if interval > 0 and time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + interval
                    self.heartbeat(client)

    def heartbeat(self, client: httpx.Client) -> bool:
        """Tell the cloud this gateway is alive, with its queue figures (no patient data)."""
        snap = snapshot(self.queue, deadline_hours=self.config.forward.deadline_hours, limit=0)
        body: dict[str, Any] = {
            "ae_title": self.config.dicom.ae_title,
            "queued": snap.counts["received"] + snap.counts["sending"],
            "refused": snap.counts["refused"],
            "sent": snap.counts["sent"],
            "oldest_unsent_seconds": snap.oldest_unsent_seconds,
            "bytes_queued": snap.bytes_queued,
            "quota_bytes": snap.quota_bytes,
        }
        try:
            response = client.post(HEARTBEAT_PATH, json=body)
            ok = response.status_code < 300
            if not ok and self.heartbeat_ok is not False:
                logger.warning("cloudfilm.gateway.heartbeat_refused",
                               extra={"status": response.status_code})
        except httpx.HTTPError as exc:
            ok = False
            if self.heartbeat_ok is not False:
                logger.warning("cloudfilm.gateway.heartbeat_failed", extra={"error": str(exc)})
        self.heartbeat_ok = ok
        return ok
