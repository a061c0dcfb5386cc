"""The gateway's DIMSE door: C-ECHO and C-STORE from the hospital's own PACS and modalities.

Only the configured calling AE titles may associate (pynetdicom's ``require_calling_aet``,
checked during negotiation). C-STORE answers Success only after the object is in the
durable queue (file fsynced and renamed, row committed); a full queue answers 0xA700 (Out of
Resources) so the sender keeps the object and retries.

References
----------
PS3.4 B.2.3 (C-STORE statuses), PS3.7 9.1.1 (C-STORE), PS3.8 9.3.4 (association rejection).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import pydicom.uid as uids
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom.presentation import (
    AllStoragePresentationContexts,
    VerificationPresentationContexts,
)
from pynetdicom.transport import ThreadedAssociationServer

from cloudfilm.gateway.config import DicomConfig
from cloudfilm.gateway.queue import Meta, Queue, QuotaExceededError
from cloudfilm.infrastructure.dicom.part10 import Part10Error, read_header

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
CANNOT_UNDERSTAND = 0xC000
PROCESSING_FAILURE = 0x0110

# Objects are forwarded as received (or packed losslessly, gateway/pack.py), so accept
# compressed syntaxes first (a sender offering [JPEG, Explicit VR LE] in one context keeps
# its JPEG) and uncompressed last.
TRANSFER_SYNTAXES: list[str] = [str(getattr(uids, name)) for name in (
    "JPEGLSLossless", "JPEG2000Lossless", "JPEG2000MCLossless", "JPEGLosslessSV1",
    "JPEGLossless", "RLELossless", "HTJ2KLossless", "HTJ2KLosslessRPCL", "HTJ2K",
    "JPEGLSNearLossless", "JPEG2000", "JPEG2000MC", "JPEGBaseline8Bit", "JPEGExtended12Bit",
    "DeflatedExplicitVRLittleEndian", "ExplicitVRLittleEndian", "ImplicitVRLittleEndian",
) if hasattr(uids, name)]


def configure_pynetdicom() -> None:
    """Process-wide pynetdicom settings, set once when the gateway starts."""
    from pynetdicom import _config

    # A received data set goes to a temp file as P-DATA arrives, not into memory.
    _config.STORE_RECV_CHUNKED_DATASET = True
    # pynetdicom's own handlers would log identifiers (patient names).
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False


def exam_time(ds: Dataset) -> float | None:
    """StudyDate + StudyTime as a local-time epoch (the gateway runs in the hospital's zone)."""
    date = str(ds.get("StudyDate", "") or "").strip()
    if len(date) != 8 or not date.isdigit():
        return None
    clock = str(ds.get("StudyTime", "") or "").strip().split(".")[0].ljust(6, "0")[:6]
    if not clock.isdigit():
        clock = "000000"
    try:
        return time.mktime(time.strptime(date + clock, "%Y%m%d%H%M%S"))
    except (ValueError, OverflowError):
        return None


def dicom_meta(path: Path, source: str) -> Meta:
    """The queue's view of a DICOM file.

    Raises
    ------
    Part10Error
        Not DICOM, cut short, or without a SOP Instance UID.
    """
    header = read_header(path)
    ds = header.dataset
    sop = str(ds.get("SOPInstanceUID", "") or "").strip()
    if not sop:
        raise Part10Error("the object has no SOP Instance UID (0008,0018)")
    return Meta(kind="dicom", uid=sop, study_uid=str(ds.get("StudyInstanceUID", "") or ""),
                exam_at=exam_time(ds), source=source,
                modality=str(ds.get("Modality", "") or "").strip(),
                transfer_syntax_uid=header.transfer_syntax_uid,
                has_pixels=header.has_pixel_data)


def handle_store(event: Any, queue: Queue) -> int | Dataset:
    """Queue a received object durably, then answer (PS3.4 B.2.3)."""
    calling = str(event.assoc.requestor.ae_title).strip()
    try:
        try:
            with open(event.dataset_path, "rb") as fh:
                spooled = queue.spool(fh)
        except (AttributeError, TypeError):  # chunked receive off: the data set is in memory
            spooled = queue.spool(bytes(event.encoded_dataset(include_meta=True)))
    except QuotaExceededError as exc:
        logger.error("cloudfilm.gateway.quota_full", extra={"calling_ae": calling})
        return _status(OUT_OF_RESOURCES, str(exc))
    except OSError as exc:
        logger.error("cloudfilm.gateway.disk_error", extra={"error": str(exc)})
        return _status(OUT_OF_RESOURCES, f"the gateway cannot write its queue: {exc.strerror}")
    try:
        meta = dicom_meta(spooled.path, calling)
    except Part10Error as exc:
        spooled.discard()
        return _status(CANNOT_UNDERSTAND, str(exc))
    try:
        queued = queue.commit(spooled, meta)
    except Exception as exc:
        spooled.discard()
        logger.exception("cloudfilm.gateway.queue_error")
        return _status(OUT_OF_RESOURCES, f"the gateway cannot record the object: {exc}")
    logger.info("cloudfilm.gateway.received", extra={
        "sop_instance_uid": meta.uid, "calling_ae": calling, "duplicate": queued.duplicate})
    return SUCCESS


def handle_echo(event: Any) -> int:
    return SUCCESS


def discard_partial_dataset(event: Any) -> None:
    """EVT_CONN_CLOSE: remove pynetdicom's temp file of a C-STORE cut off mid-transfer
    (it deletes the file only after a handler ran, so an abort would leave it in /tmp)."""
    dimse = getattr(event.assoc, "dimse", None)
    message = getattr(dimse, "message", None)
    handle = getattr(message, "_data_set_file", None)
    if handle is None:
        return
    try:
        handle.close()
        os.unlink(handle.name)
    except OSError:
        pass  # already consumed or deleted by pynetdicom


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]  # LO: 64 characters
    return ds


class StoreSCP:
    """The listening AE; :meth:`start` returns once it is bound."""

    def __init__(self, config: DicomConfig, queue: Queue) -> None:
        self.config = config
        ae = AE(ae_title=config.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(str(context.abstract_syntax), TRANSFER_SYNTAXES)
        for context in VerificationPresentationContexts:
            ae.add_supported_context(str(context.abstract_syntax))
        ae.require_calling_aet = list(config.allowed_ae_titles)
        ae.require_called_aet = True
        ae.maximum_associations = config.max_associations
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = config.timeout
        self.ae = ae
        self._handlers: list[Any] = [(evt.EVT_C_STORE, handle_store, [queue]),
                          (evt.EVT_C_ECHO, handle_echo)]
        self._server: ThreadedAssociationServer | None = None

    def start(self) -> None:
        self._server = self.ae.start_server(
            (self.config.host, self.config.port), block=False,
            evt_handlers=self._handlers)

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
