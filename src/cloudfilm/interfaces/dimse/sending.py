"""C-MOVE/C-GET sub-operations that send a stored file as it is, without decoding it.

pynetdicom's Query/Retrieve SCP takes ``(status, Dataset)`` pairs from our handlers and calls
``send_c_store(dataset)`` on the sub-operation association, which encodes the data set
again: reading and re-encoding a 525 KB CT took half of a C-MOVE's CPU (profiled).
``Association.send_c_store`` can itself send a file untouched (given a path, with
``_config.STORE_SEND_CHUNKED_DATASET``, the bytes after the file meta go out in P-DATA
fragments as read), but the SCP only passes data sets through. So a handler yields a
:class:`StoredFile` (a data set that names the stored file, its UIDs and syntax) on an
association made a :class:`FileSendingAssociation`, whose ``send_c_store`` sends it the way
pynetdicom sends a path, minus the pydicom parse of the File Meta group (the data set's
offset comes from the group length, :func:`data_set_offset`).

Only for an object whose stored syntax the peer accepted: pynetdicom then needs a
presentation context for exactly that syntax; anything else (a peer that wants Explicit VR
Little Endian for a JPEG-LS object) is decoded and re-encoded as a Dataset, as before.
Upstream, pynetdicom could let handlers yield a path; this is the shape we would offer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import _config as pynetdicom_config
from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE

from cloudfilm.interfaces.dimse.transport import (
    AdoptedEventDrivenDUL,
    EncodingDIMSE,
    ServingAssociation,
    adopt_requestor_dul,
    end_if_finished,
)

# How often a paused C-MOVE sub-association's reactor looks for release, abort, timeout.
_WATCH_SECONDS = 0.005


class StoredFile(Dataset):
    """A sub-operation's object as its stored Part 10 file (SOP UIDs for pynetdicom's
    failed-instance list)."""

    def __init__(self, path: Path, sop_class_uid: str, sop_instance_uid: str,
                 transfer_syntax_uid: str) -> None:
        super().__init__()
        self.SOPClassUID = sop_class_uid
        self.SOPInstanceUID = sop_instance_uid
        # Plain attributes too: pydicom's element lookups cost more than the send.
        self.stored_path = path
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid
        self.transfer_syntax_uid = transfer_syntax_uid
        # The next sub-operation's data set, made on demand (the handler's look-ahead):
        # sending reads its file while the peer answers this one (``_read_ahead``).
        self.following: Callable[[], Dataset | None] | None = None
        self.offset: int | None = None  # data_set_offset, once read


def data_set_offset(path: Path) -> int | None:
    """Where the data set starts in a Part 10 file whose File Meta group begins with its
    group length, as every file the archive writes does (PS3.10 7.1); None otherwise (then
    pynetdicom's ``split_dataset`` parses the group)."""
    with open(path, "rb") as fh:
        head = fh.read(144)
    if len(head) < 144 or head[128:140] != b"DICM\x02\x00\x00\x00UL\x04\x00":
        return None
    return 144 + int.from_bytes(head[140:144], "little")


class FileSendingAssociation(Association):
    """An association whose ``send_c_store`` sends a :class:`StoredFile` from its file.

    As a C-MOVE sub-association (with :class:`SubOperationDIMSE`) its reactor also stays
    "paused": pynetdicom's ``send_c_store`` waits for the reactor to pause before each
    sub-operation, up to its 1 ms sleep each time (0.2-0.3 s of a 300-object C-MOVE), yet
    that reactor takes no messages there; it only watches for release, abort and the
    network timeout, between sends.
    """

    def _run_reactor(self) -> None:
        if self.is_acceptor or not isinstance(self.dimse, SubOperationDIMSE):
            super()._run_reactor()
            return
        self._is_paused = True
        while not self._kill:
            time.sleep(_WATCH_SECONDS)
            if not self._reactor_checkpoint.is_set():
                continue  # the C-MOVE's thread is sending or releasing
            # On the network timeout this watcher aborts rather than releases: the C-MOVE's
            # thread owns the sends on this association.
            if end_if_finished(self, release_on_timeout=False):
                return

    def send_c_store(self, dataset: Any, msg_id: int = 1, priority: int = 2,
                     originator_aet: str | None = None,
                     originator_id: int | None = None) -> Dataset:
        if isinstance(dataset, StoredFile):
            offset = None
            if self.is_established:
                offset = dataset.offset or data_set_offset(dataset.stored_path)
            if offset is not None:
                return self._send_stored(dataset, offset, msg_id, priority, originator_aet,
                                         originator_id)
            dataset = dataset.stored_path
        return super().send_c_store(dataset, msg_id=msg_id, priority=priority,
                                    originator_aet=originator_aet,
                                    originator_id=originator_id)

    def _send_stored(self, stored: StoredFile, offset: int, msg_id: int, priority: int,
                     originator_aet: str | None, originator_id: int | None) -> Dataset:
        """pynetdicom's ``send_c_store(path)`` for a file whose SOP UIDs, transfer syntax
        and data set offset we know: without its pydicom parse of the File Meta group
        (``split_dataset``), a tenth of a C-MOVE's CPU. From the context lookup on, the
        same steps as pynetdicom 3.0's."""
        req = C_STORE()
        req.MessageID = msg_id
        req.Priority = priority
        req.MoveOriginatorApplicationEntityTitle = originator_aet
        req.MoveOriginatorMessageID = originator_id
        context = self._store_context(stored)
        req.AffectedSOPClassUID = stored.sop_class_uid
        req.AffectedSOPInstanceUID = stored.sop_instance_uid
        req._dataset_path = (stored.stored_path, offset)
        # Pause the reactor (as pynetdicom does), send, and wait for the response.
        self._reactor_checkpoint.clear()
        while not self._is_paused:
            time.sleep(0.0001)
        context_id = int(context.context_id or 0)
        if self._claim_reading():
            status = self._exchange_directly(req, context_id, stored)
            if status is not None:
                return status
            # Whatever came instead of a plain C-STORE response is pynetdicom's again.
        else:
            self.dimse.send_msg(req, context_id)
            self._read_ahead(stored)
        _, rsp = self.dimse.get_msg(block=True)
        self._reactor_checkpoint.set()
        if rsp is None:  # the DIMSE timeout expired: pynetdicom aborts
            self._handle_no_response()
            return Dataset()
        return self._check_received_status(rsp)

    def _claim_reading(self) -> bool:
        """Whether this (the C-MOVE's) thread may read the response itself
        (:meth:`_exchange_directly`): on a sub-association whose DUL is adopted, with no
        DIMSE message received and not yet taken, nobody listening to received messages,
        and the DUL's own conditions (``AdoptedEventDrivenDUL.claim_reading``)."""
        dimse, dul = self.dimse, self.dul
        return (isinstance(dimse, SubOperationDIMSE) and isinstance(dul, AdoptedEventDrivenDUL)
                and dimse.message is None and dimse.msg_queue.empty()
                and not self.get_handlers(evt.EVT_DIMSE_RECV) and dul.claim_reading())

    def _exchange_directly(self, req: C_STORE, context_id: int,
                           stored: StoredFile) -> Dataset | None:
        """Send ``req`` and read its response from the socket in this thread, holding the
        DUL's read claim: pynetdicom's way, the DUL thread decoded the response PDU into
        primitives and handed it over through two queues and a wake-up, a quarter of a
        millisecond between the response arriving and the next request leaving (strace).
        The status data set is what ``_check_received_status`` makes of a response with
        a Status and no Error Comment or Offending Element (the only kind read here).
        None when the PDU read was anything else: it is put back for the DUL thread, and
        the caller waits for the message as pynetdicom does. A DIMSE timeout aborts, as
        pynetdicom does."""
        dul = self.dul
        assert isinstance(dul, AdoptedEventDrivenDUL)
        timed_out = False
        found = None
        try:
            self.dimse.send_msg(req, context_id)
            self._read_ahead(stored)
            try:
                found = dul.read_store_response(self.dimse_timeout)
            except TimeoutError:
                timed_out = True
        finally:
            dul.release_reading()
        if found is None and not timed_out:
            return None
        self._reactor_checkpoint.set()
        if found is None:
            self._handle_no_response()
            return Dataset()
        status = Dataset()
        status.Status = found[2]
        return status

    def _store_context(self, stored: StoredFile) -> Any:
        """pynetdicom's ``_get_valid_context`` for sending ``stored`` as it is, remembered
        per (SOP class, syntax): the accepted contexts do not change once established, and
        each look-up sorted all of them (120 for a dcmtk C-GET)."""
        key = (stored.sop_class_uid, stored.transfer_syntax_uid)
        known: dict[tuple[str, str], Any] = self.__dict__.setdefault("_store_contexts", {})
        if key not in known:
            known[key] = self._get_valid_context(*key, "scu", allow_conversion=False)
        return known[key]

    def _read_ahead(self, sent: StoredFile) -> None:
        """While the peer stores ``sent``: make the next sub-operation's data set and, if it
        goes from its file too, read that file into its PDUs (``EncodingDIMSE.read_ahead``),
        so that it leaves as soon as the response is in. Anything that fails here is left to
        that sub-operation's own send, which meets it again and reports it."""
        dimse = self.dimse
        if sent.following is None or not isinstance(dimse, EncodingDIMSE):
            return
        try:
            following = sent.following()
            if not isinstance(following, StoredFile):
                return
            following.offset = data_set_offset(following.stored_path)
            if following.offset is not None:
                context = self._store_context(following)
                dimse.read_ahead(following.stored_path, following.offset,
                                 int(context.context_id or 0))
        except (OSError, ValueError):
            return


class ServingFileSendingAssociation(FileSendingAssociation, ServingAssociation):
    """Our acceptor association (``transport.ServingAssociation``'s reactor loop) whose
    C-GET sends stored files as they are."""


# pynetdicom's association class, or ours, -> the same with file sending.
_FILE_SENDING: dict[type, type] = {
    Association: FileSendingAssociation,
    ServingAssociation: ServingFileSendingAssociation,
}


def enable(assoc: Any) -> bool:
    """Make ``assoc`` (pynetdicom's own Association, not yet sending) a
    :class:`FileSendingAssociation`; False when that is not possible, and then handlers
    must yield decoded data sets.

    The class is changed on the instance because pynetdicom creates the association
    objects itself (``AE.associate``, the request handler) and offers no factory; the
    subclass adds no state, so the running reactor is unaffected.
    """
    if isinstance(assoc, FileSendingAssociation):
        return True
    # Every acceptor is a ServingAssociation (transport.tune_acceptor): when only
    # pynetdicom's class was recognised here, each C-GET decoded and re-encoded its objects
    # (twice the CPU of a C-MOVE of the same series, issue 12 pass 14).
    sending_class = _FILE_SENDING.get(type(assoc))
    if sending_class is None or not pynetdicom_config.STORE_SEND_CHUNKED_DATASET:
        return False
    assoc.__class__ = sending_class
    return True


def can_send_files(assoc: Any) -> bool:
    return isinstance(assoc, FileSendingAssociation) and bool(
        pynetdicom_config.STORE_SEND_CHUNKED_DATASET)


class SubOperationDIMSE(EncodingDIMSE):
    """The DIMSE provider of a C-MOVE sub-association: only ``send_c_store`` (called from
    the C-MOVE's thread) takes messages off its queue, never the association's reactor.

    pynetdicom's requestor reactor calls ``get_msg(block=False)`` every millisecond unless
    paused, and ``send_c_store`` pauses it with a handshake that can pass while the reactor
    is between its pause point and that call: the reactor sets ``_is_paused`` and passes a
    checkpoint still set from the previous sub-operation, the sender clears the checkpoint,
    reads ``_is_paused`` true and sends, and the reactor then takes the C-STORE response
    ("Received unexpected C-STORE service message") and drops it. The sender waits out the
    DIMSE timeout (60 s), aborts the sub-association, and every remaining sub-operation
    fails. On a loaded machine 4 of 10 C-MOVEs of 300 objects failed so (the C-MOVE bench
    failure with ``dimse.processes 2``). The destination of a C-MOVE sends no requests, so
    the reactor has nothing to take. Its C-STORE requests are encoded by
    :class:`~cloudfilm.interfaces.dimse.transport.EncodingDIMSE`.
    """

    def get_msg(self, block: bool = False) -> Any:
        if not block and threading.current_thread() is self.assoc:
            return None, None
        return super().get_msg(block=block)


def guard_suboperations(assoc: Any) -> None:
    """Give a C-MOVE sub-association (we request it; EVT_CONN_OPEN, before any DIMSE
    message) the :class:`SubOperationDIMSE` provider, and make its DUL an
    :class:`~cloudfilm.interfaces.dimse.transport.AdoptedEventDrivenDUL`, which writes each
    C-STORE's PDUs in one call and waits on its socket instead of polling it.

    pynetdicom creates and starts that DUL itself (``AE.associate``, no factory), so its
    class is changed on the instance (``transport.adopt_requestor_dul``), in its own
    thread: the running reactor looks the overridden methods up on every pass.
    """
    if not assoc.is_requestor:
        return
    if type(assoc.dimse) is DIMSEServiceProvider:
        assoc.dimse = SubOperationDIMSE(assoc)
    adopt_requestor_dul(assoc.dul)
