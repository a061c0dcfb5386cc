"""Pull mode: for a PACS that cannot push, ask it (C-FIND) for the studies of the last hours
and have it send the new ones to the gateway (C-MOVE to our own AE title).

The moved objects arrive through the gateway's own C-STORE door (the PACS's AE title must be
allowed; the PACS must know the gateway as a move destination), so they are queued and
forwarded like pushed ones. A study is moved again when the PACS reports more instances than
when it was last moved; re-moved objects are deduplicated by the queue.

References
----------
PS3.4 C.4.1 (C-FIND), C.4.2 (C-MOVE), C.6.2 (Study Root Query/Retrieve Information Model).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from pydicom.dataset import Dataset
from pynetdicom import AE

from cloudfilm.gateway.config import PullConfig
from cloudfilm.gateway.queue import Queue

logger = logging.getLogger(__name__)

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_ROOT_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
_PENDING = (0xFF00, 0xFF01)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pulled (
    study_uid TEXT PRIMARY KEY,
    instances INTEGER NOT NULL,
    pulled_at REAL NOT NULL
)
"""


class Puller:
    """A thread polling one PACS every ``interval_seconds``."""

    def __init__(self, config: PullConfig, our_ae_title: str, queue: Queue,
                 on_pulled: Callable[[], None] | None = None) -> None:
        self.config = config
        self.our_ae_title = our_ae_title
        self.queue = queue
        self.on_pulled = on_pulled
        self.last_error = ""
        queue.execute(_SCHEMA)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pull", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll()
            except Exception as exc:
                self.last_error = str(exc)
                logger.exception("cloudfilm.gateway.pull_error")
            self._stop.wait(self.config.interval_seconds)

    def _ae(self, *contexts: str) -> AE:
        ae = AE(ae_title=self.our_ae_title)
        for context in contexts:
            ae.add_requested_context(context)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.config.timeout
        return ae

    def find(self) -> dict[str, int]:
        """StudyInstanceUID → NumberOfStudyRelatedInstances of the studies in the window."""
        since = time.localtime(time.time() - self.config.hours * 3600)
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyDate = time.strftime("%Y%m%d", since) + "-"
        query.StudyInstanceUID = ""
        query.NumberOfStudyRelatedInstances = ""
        assoc = self._ae(STUDY_ROOT_FIND).associate(
            self.config.host, self.config.port, ae_title=self.config.ae_title)
        if not assoc.is_established:
            raise ConnectionError(f"the PACS {self.config.ae_title} at {self.config.host}:"
                                  f"{self.config.port} refused or did not answer the "
                                  "association")
        found: dict[str, int] = {}
        try:
            for status, identifier in assoc.send_c_find(query, STUDY_ROOT_FIND):
                if status is None or "Status" not in status:
                    raise ConnectionError("the PACS stopped answering the C-FIND")
                if int(status.Status) in _PENDING and identifier is not None:
                    uid = str(identifier.get("StudyInstanceUID", "") or "")
                    count = identifier.get("NumberOfStudyRelatedInstances", None)
                    if uid:
                        found[uid] = int(count) if count not in (None, "") else -1
        finally:
            assoc.release()
        return found

    def poll(self) -> int:
        """One round: find, then move the studies that are new or grew; how many moved."""
        found = self.find()
        known = {str(uid): int(n) for uid, n in  # type: ignore[call-overload]
                 self.queue.execute("SELECT study_uid, instances FROM pulled")}
        moved = 0
        for uid, count in found.items():
            if self._stop.is_set():
                break
            if uid in known and count != -1 and known[uid] >= count:
                continue
            if self.move(uid):
                self.queue.execute(
                    "INSERT INTO pulled (study_uid, instances, pulled_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(study_uid) DO UPDATE SET instances=excluded.instances, "
                    "pulled_at=excluded.pulled_at", (uid, max(count, 0), time.time()))
                moved += 1
        if moved and self.on_pulled:
            self.on_pulled()
        self.last_error = ""
        return moved

    def move(self, study_uid: str) -> bool:
        """C-MOVE one study to ourselves; True when the PACS reports no failed sub-operation."""
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_uid
        assoc = self._ae(STUDY_ROOT_MOVE).associate(
            self.config.host, self.config.port, ae_title=self.config.ae_title)
        if not assoc.is_established:
            raise ConnectionError(f"the PACS {self.config.ae_title} refused the C-MOVE "
                                  "association")
        final = None
        try:
            for status, _identifier in assoc.send_c_move(query, self.our_ae_title,
                                                         STUDY_ROOT_MOVE):
                if status is None or "Status" not in status:
                    break
                final = status
        finally:
            assoc.release()
        ok = (final is not None and int(final.Status) == 0x0000
              and int(final.get("NumberOfFailedSuboperations", 0) or 0) == 0)
        logger.info("cloudfilm.gateway.pulled", extra={
            "study_instance_uid": study_uid, "ok": ok,
            "status": None if final is None else f"0x{int(final.Status):04X}"})
        return ok
