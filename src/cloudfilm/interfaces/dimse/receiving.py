"""Receiving a C-STORE request's data set straight into its spool file.

pynetdicom turns each received P-DATA-TF PDU into a PDU object, a P-DATA primitive and
copies of every fragment, runs it through the state machine, decodes the command set with
pydicom and writes the data set through a ``NamedTemporaryFile``: about a millisecond of
the DUL thread's interpreter time per 525 KB object, and four copies of it (py-spy and
``/proc`` per thread, docs/capacity.md "C-STORE receive path, pass 13"). A C-STORE is the
one message that carries bulk data into the archive, so :class:`StoreReceiver` takes it
over in the DUL thread (``transport.EventDrivenDUL``): each PDU is read with ``recv_into``
into one reused buffer, a C-STORE-RQ command set is decoded with ``struct``
(:func:`decode_store_request`), and each data fragment goes to the spool file with
``os.writev`` from that buffer, and hashed (SHA-256, the blob's content address) as it is
written, while the association thread waits for the next request anyway: ingest then
neither reads the file again nor hashes it on the critical path (docs/capacity.md
"C-STORE, pass 14"). The finished request is put on the DIMSE provider's message
queue as pynetdicom would put it (the same primitive, ``_dataset_path`` set), so the
association thread serves it unchanged.

Anything else (another message, a command set this decoder leaves to pydicom, a PDU that
does not parse) is handed to pynetdicom as it arrived.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import struct
import threading
from io import BytesIO
from pathlib import Path
from typing import Any

from pynetdicom.dimse_primitives import C_STORE

from cloudfilm.interfaces.dimse.messages import file_meta_prefix

_C_STORE_RQ = 0x0001
_NO_DATA_SET = 0x0101
_US = struct.Struct("<H")
_ELEMENT = struct.Struct("<HHI")
_PDV = struct.Struct(">IBB")  # item length, presentation context ID, message control header
# The elements a C-STORE-RQ command set may hold (PS3.7 9.3.1.1), by element number.
_UIDS = {0x0002: "AffectedSOPClassUID", 0x1000: "AffectedSOPInstanceUID"}
_NUMBERS = {0x0110: "MessageID", 0x0700: "Priority", 0x1031: "MoveOriginatorMessageID"}
_OTHERS = frozenset({0x0000, 0x0100, 0x0800, 0x1030})

# The longest receive buffer an association keeps: our default maximum PDU length
# (config dimse.max_pdu); dcmtk sends at most 128 KiB, pynetdicom what we offer.
KEEP_BUFFER = 4 * 1024 * 1024
# Spool file names: unique per process (the pid: sibling listeners share the folder) and
# per object, without tempfile's random names (a tenth of the receive path's time).
_names = itertools.count()


def decode_store_request(command: bytes | memoryview) -> C_STORE | None:
    """The C-STORE-RQ primitive of a complete encoded command set (Implicit VR Little
    Endian, PS3.7 6.3.1) that announces a data set, as pynetdicom's ``message_to_primitive``
    makes it; None for anything else (another message, an element this decoder does not
    know, a malformed or invalid value): pynetdicom decodes those."""
    values: dict[int, bytes] = {}
    offset, end = 0, len(command)
    try:
        while offset < end:
            group, element, length = _ELEMENT.unpack_from(command, offset)
            offset += 8
            if (group != 0 or offset + length > end or element in values
                    or (element not in _UIDS and element not in _NUMBERS
                        and element not in _OTHERS)):
                return None
            values[element] = bytes(command[offset:offset + length])
            offset += length
        if (_number(values.get(0x0100)) != _C_STORE_RQ
                or _number(values.get(0x0800)) in (None, _NO_DATA_SET)
                or any(element not in values for element in (0x0002, 0x0110, 0x1000))):
            return None
        request = C_STORE()
        for element, attribute in _UIDS.items():
            setattr(request, attribute, values[element].rstrip(b"\x00 ").decode("ascii"))
        for element, attribute in _NUMBERS.items():
            if element in values:
                number = _number(values[element])
                if number is None:
                    return None
                setattr(request, attribute, number)
        if 0x1030 in values:
            request.MoveOriginatorApplicationEntityTitle = (
                values[0x1030].decode("ascii").strip())
        request.DataSet = BytesIO()
    except (struct.error, UnicodeError, ValueError, TypeError):
        return None
    return request


def _number(value: bytes | None) -> int | None:
    return _US.unpack(value)[0] if value is not None and len(value) == 2 else None


class SpoolFile:
    """The received data set's file as pynetdicom's C-STORE service class handles it
    (``req._dataset_file``: it calls ``close()`` and unlinks ``name`` after the handler)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def close(self) -> None:
        """Nothing to close: the file was closed when its last fragment was written."""


class ProtocolError(Exception):
    """The peer broke the message structure (PS3.7 E.2) inside a C-STORE's data set."""


class StoreReceiver:
    """One association's C-STORE receive state (used by its DUL thread only, except
    :meth:`discard`, which a connection-close handler may call from another thread)."""

    def __init__(self, spool_dir: Path | str) -> None:
        self.spool_dir = str(spool_dir)
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._name = ""
        self._request: C_STORE | None = None
        self._context_id = 0
        self._failed: OSError | None = None
        self._digest: Any = None

    @property
    def busy(self) -> bool:
        """Whether a C-STORE's data set is half received."""
        return self._request is not None

    def buffer(self, length: int) -> memoryview:
        """A view of ``length`` bytes of the reused receive buffer (a PDU longer than the
        largest one we keep gets a buffer of its own, so that a peer ignoring our maximum
        PDU length does not leave a large buffer behind for the association's life)."""
        if length > KEEP_BUFFER:
            return memoryview(bytearray(length))
        if len(self._buffer) < length:
            self._buffer = bytearray(length)
        return memoryview(self._buffer)[:length]

    def receive(self, pdu: memoryview, assoc: Any) -> bool:
        """Take a P-DATA-TF PDU's items (``pdu``, after its 6-byte header): True when they
        were a C-STORE request's (all written, and the request queued once complete);
        False when pynetdicom should receive this PDU (nothing was done with it).

        Raises
        ------
        ProtocolError
            Items that do not parse, or a command fragment, inside a data set being
            received: the half-received object is discarded.
        """
        items = _pdv_items(pdu)
        if self._request is None:
            if not items or items[0][1] != 0x03 or assoc.dimse.message is not None:
                return False  # not a whole command set starting a message: pynetdicom's
            context_id, _, start, stop = items[0]
            request = decode_store_request(pdu[start:stop])
            context = assoc._accepted_cx.get(context_id)
            if request is None or context is None:
                return False
            self._open(request, context_id, context.transfer_syntax[0])
            items = items[1:]
        elif items is None:
            self.discard()
            raise ProtocolError("a P-DATA-TF PDU whose items do not parse")
        self._write(pdu, items, assoc)
        return True

    def _open(self, request: C_STORE, context_id: int, transfer_syntax: str) -> None:
        self._request, self._context_id = request, context_id
        self._failed = None
        self._digest = hashlib.sha256()
        while True:
            name = os.path.join(self.spool_dir, f"dimse-{os.getpid()}-{next(_names)}.dcm")
            try:
                fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                continue
            except OSError as exc:
                self._failed = exc
                return
            break
        with self._lock:
            self._fd, self._name = fd, name
        prefix = file_meta_prefix(request.AffectedSOPClassUID,
                                  request.AffectedSOPInstanceUID, transfer_syntax)
        self._write_views([memoryview(prefix)])

    def _write(self, pdu: memoryview, items: list[tuple[int, int, int, int]],
               assoc: Any) -> None:
        views = []
        last = False
        for _, control, start, stop in items:
            if control & 0x01:
                self.discard()
                raise ProtocolError("a command fragment inside a C-STORE data set")
            views.append(pdu[start:stop])
            if control & 0x02:
                last = True
                break  # as pynetdicom: what follows the last fragment is not read
        self._write_views(views)
        if last:
            self._finish(assoc)

    def _write_views(self, views: list[memoryview]) -> None:
        """Append ``views`` to the spool file; a failed write (disk full) drops the file
        and the rest of the data set, and the request is answered with the error."""
        with self._lock:
            fd = self._fd
            if fd is None or self._failed is not None:
                return
            # Exactly the bytes the file receives, in order (hashlib lets go of the GIL
            # for each fragment); a failed write drops the file and the digest with it.
            for view in views:
                self._digest.update(view)
            try:
                while views:
                    written = os.writev(fd, views)
                    while views and written >= len(views[0]):
                        written -= len(views.pop(0))
                    if written:
                        views[0] = views[0][written:]
            except OSError as exc:
                self._failed = exc
                self._close_and_unlink()

    def _finish(self, assoc: Any) -> None:
        request, self._request = self._request, None
        assert request is not None
        with self._lock:
            fd, self._fd = self._fd, None
            name = self._name
            if fd is not None:
                os.close(fd)
        request._context_id = self._context_id
        if self._failed is not None:
            # handlers.handle_store answers Out of Resources with the reason.
            request._cloudfilm_spool_error = self._failed  # type: ignore[attr-defined]
        else:
            request._dataset_path = Path(name)
            request._dataset_file = SpoolFile(name)  # type: ignore[assignment]
            # The spool file's SHA-256 (handlers.handle_store passes it to ingest).
            request._cloudfilm_sha256 = self._digest.hexdigest()  # type: ignore[attr-defined]
        self._digest = None
        assoc.dimse.msg_queue.put((self._context_id, request))

    def discard(self) -> None:
        """Drop a half-received data set (connection closed or aborted mid-transfer)."""
        self._request = None
        with self._lock:
            self._close_and_unlink()

    def _close_and_unlink(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        os.close(fd)
        with contextlib.suppress(OSError):  # already gone
            os.unlink(self._name)


def _pdv_items(pdu: memoryview) -> list[tuple[int, int, int, int]] | None:
    """(context ID, control header, start, stop of the fragment) of each presentation data
    value item of a P-DATA-TF PDU's body (PS3.8 9.3.5.1); None if they do not parse."""
    items = []
    offset, end = 0, len(pdu)
    while offset < end:
        if offset + _PDV.size > end:
            return None
        length, context_id, control = _PDV.unpack_from(pdu, offset)
        stop = offset + 4 + length
        if length < 2 or stop > end:
            return None
        items.append((context_id, control, offset + _PDV.size, stop))
        offset = stop
    return items
