"""pynetdicom's transport, tuned through its public extension points (no patching in place).

pynetdicom 3.0 polls: each association's DUL thread sleeps ``_run_loop_delay`` (1 ms)
between looks at its socket and its send queue, the association thread sleeps 1 ms between
looks at its DIMSE message queue, and a PDU is read 4 KiB per ``recv``. Measured here
(py-spy, one C-STORE association of 525 KB CT), the pollers held more of the server's CPU
than the archive's own work, and four associations competed for the interpreter with 20,000
wake-ups per second. The classes below keep pynetdicom's state machine and message
handling and change only how the threads wait and read:

* :class:`EventDrivenDUL` blocks in ``select`` on the socket and on a wake-up socket that
  :meth:`send_pdu` writes to, so it wakes exactly when there is something to do (and at
  least every :data:`TIMER_TICK` seconds for the ARTIM timer);
* :class:`BlockingDIMSE` lets the association thread wait on its message queue instead of
  sleeping and looking again, and writes the received data set's File Meta group with
  ``struct`` (messages.py) instead of building a pydicom dataset;
* :class:`EncodingDIMSE` (the acceptor's and a C-MOVE sub-association's provider) encodes
  the command sets of C-STORE, C-FIND, C-GET and C-MOVE messages with ``struct``;
* :class:`BulkSocket` reads a PDU with ``recv_into`` into one buffer and sends with
  ``sendall``;
* :class:`TunedRequestHandler` puts them into each accepted association (``make_server``'s
  ``request_handler``), and :class:`ReusePortServer` can share its port with other
  processes (``SO_REUSEPORT``: the kernel spreads new connections over the listeners).

These are the changes we would offer upstream (an event-driven DUL reactor and a blocking
acceptor reactor, bulk reads); until then they live here, as subclasses.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import queue
import select
import socket
import ssl
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Any

from pynetdicom import _config, evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import DIMSEMessage
from pynetdicom.dimse_primitives import C_GET, C_MOVE
from pynetdicom.dul import LOGGER as DUL_LOGGER
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from cloudfilm.interfaces.dimse.messages import (
    EncodedPData,
    SpoolingMessage,
    command_set,
    decode_store_response,
    encoded_message_parts,
    file_data_set_pdus,
    file_data_set_size,
    message_pdatas,
    store_response_in_pdu,
)
from cloudfilm.interfaces.dimse.receiving import ProtocolError, StoreReceiver

# Longest PDU a sending thread reads itself (a C-STORE response is about 100 bytes); a
# longer one is left to the DUL thread, which reads it as pynetdicom does.
_DIRECT_PDU_LIMIT = 4096

# A data set sent from a file larger than this goes pynetdicom's way, which reads it
# fragment by fragment; smaller ones are read whole and sent in one write.
STREAM_ABOVE = 16 * 1024 * 1024
# At most one Pending C-MOVE/C-GET response per request this often (EncodingDIMSE).
PENDING_INTERVAL = 0.1
_PENDING = 0xFF00
# Longest a DUL thread sleeps without traffic: the ARTIM timer's resolution.
TIMER_TICK = 0.05
# Longest the association thread waits for a DIMSE message before it looks at release,
# abort and the idle timer (pynetdicom's loop looks every 1 ms).
MESSAGE_WAIT = 0.01


class WholeMessageDUL(DULServiceProvider):
    """pynetdicom's DUL that also writes an :class:`EncodedPData` in one call."""

    def _process_recv_primitive(self) -> bool:
        """An :class:`EncodedPData` (a whole message's P-DATA-TF PDUs, from EncodingDIMSE)
        goes out in one write, in queue order, while the association is established
        (Sta6, where pynetdicom's DT-1 would send each P-DATA-TF the same way): a 525 KB
        object is 33 PDUs at the 16 KB a dcmtk peer takes, each otherwise one trip through
        the state machine and pynetdicom's PDU classes."""
        try:
            primitive = self.to_provider_queue.queue[0]
        except IndexError:
            return False
        if (isinstance(primitive, EncodedPData) and self.socket is not None
                and self.state_machine.current_state == "Sta6"):
            sock = self.socket
            if isinstance(sock, BulkSocket):
                # Taken off the queue and written under the socket's lock, so that a
                # sender writing directly (_WakingDUL.send_pdu) never overtakes it.
                with sock.send_lock:
                    self.to_provider_queue.get(False)
                    sock.send_parts(primitive.parts)
                return True
            self.to_provider_queue.get(False)
            for part in primitive.parts:
                # A memoryview: pynetdicom's socket slices what it sends, and a slice of
                # a bytearray is a copy.
                sock.send(memoryview(part))  # type: ignore[arg-type]
            return True
        return bool(super()._process_recv_primitive())


def _wake_pair() -> tuple[socket.socket, socket.socket]:
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    return wake_r, wake_w


class _WakingDUL(WholeMessageDUL):
    """What both event-driven DULs share: a wake-up socket that :meth:`send_pdu`,
    :meth:`kill_dul` and :meth:`stop_dul` write to, and :meth:`_wait_for_work`, which
    sleeps in ``select`` on the peer's socket and that wake-up socket."""

    _wake_r: socket.socket
    _wake_w: socket.socket
    # Tell the socket it is readable when select said so (BulkSocket.readable): only where
    # this thread is the socket's one reader (not a requestor's, whose sender reads too).
    _hint_readable = False

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (already woken) or closed (finished)
            self._wake_w.send(b"\0")

    # Set once a P-DATA primitive went through the queue (pynetdicom's own encoding): from
    # then on every message is queued, so that none overtakes one still in the queue.
    _queued_pdata = False

    def send_pdu(self, primitive: Any) -> None:
        if isinstance(primitive, EncodedPData):
            if self._write_directly(primitive):
                return
        elif isinstance(primitive, P_DATA):
            self._queued_pdata = True
        super().send_pdu(primitive)
        self._wake()

    def _write_directly(self, primitive: EncodedPData) -> bool:
        """Write a whole message from the sending thread (the C-MOVE/C-GET thread) instead
        of handing it to the DUL thread: the hand-over (queue, wake-up, the DUL thread's turn
        at the interpreter) was a quarter of a millisecond per sub-operation, between a
        C-STORE response arriving and the next request leaving (strace).

        Only in Sta6 (established; a P-DATA-TF changes no state there), with a
        :class:`BulkSocket`, nothing waiting in the send queue and no P-DATA ever queued
        (so no earlier message is still on its way), holding the socket's lock, which the
        DUL thread holds from taking a message off the queue until it is written."""
        sock = self.socket
        if (self._queued_pdata or not isinstance(sock, BulkSocket)
                or threading.current_thread() is self):
            return False
        with sock.send_lock:
            if (self.to_provider_queue.qsize()
                    or self.state_machine.current_state != "Sta6"):
                return False
            if not sock.send_parts(primitive.parts):
                self._wake()  # Evt17 (connection closed) waits in the event queue
        return True

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def stop_dul(self) -> bool:
        """pynetdicom's ``stop_dul`` (stop once in Sta1), but the reactor is woken after
        it is told to stop, and joined rather than polled: pynetdicom's loop sleeps
        ``_run_loop_delay`` between looks, which for an adopted DUL is zero (a busy wait)."""
        if self.state_machine.current_state != "Sta1":
            return False
        self._kill_thread = True
        self._wake()
        if threading.current_thread() is not self and self.is_alive():
            self.join()
        return True

    def _socket_to_watch(self) -> Any:
        wrapped = self.socket
        return getattr(wrapped, "socket", None) if wrapped is not None else None

    def _wait_for_work(self) -> None:
        if self.to_provider_queue.qsize() or self.event_queue.qsize() or self._kill_thread:
            return
        wrapped = self.socket
        sock = getattr(wrapped, "socket", None) if wrapped is not None else None
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # decrypted bytes wait in OpenSSL's buffer, invisible to select
        if isinstance(wrapped, BulkSocket) and wrapped.unread:
            return  # a PDU put back by a sending thread (read_store_response)
        sock = self._socket_to_watch()
        readers: list[Any] = [self._wake_r]
        if sock is not None and sock.fileno() >= 0:
            readers.append(sock)
        try:
            ready, _, _ = select.select(readers, [], [], TIMER_TICK)
        except (OSError, ValueError):  # the socket closed under us: the loop notices
            time.sleep(0.001)
            return
        if self._wake_r in ready:
            with contextlib.suppress(OSError):
                while self._wake_r.recv(4096):
                    pass
        if (self._hint_readable and isinstance(wrapped, BulkSocket) and sock is not None
                and sock in ready):
            wrapped.readable = True  # ``ready`` answers without another select


# Handlers that see what pynetdicom's own receive path makes (PDUs, messages, transitions):
# while any is bound, a C-STORE is received pynetdicom's way.
_RECEIVE_EVENTS = (evt.EVT_DATA_RECV, evt.EVT_PDU_RECV, evt.EVT_DIMSE_RECV,
                   evt.EVT_FSM_TRANSITION)


class EventDrivenDUL(_WakingDUL):
    """A DUL reactor that sleeps until its socket or its send queue has work, and that
    receives a C-STORE request's data set straight into its spool file
    (:attr:`store_receiver`, receiving.py)."""

    store_receiver: StoreReceiver | None = None
    _hint_readable = True

    def __init__(self, assoc: Any) -> None:
        super().__init__(assoc)
        self._wake_r, self._wake_w = _wake_pair()

    def _read_pdu_data(self) -> None:
        """pynetdicom's ``_read_pdu_data``, except that a P-DATA-TF PDU of a C-STORE
        request is read into the receiver's buffer and taken by it (:meth:`_receive_store`);
        any other PDU is put back and read by pynetdicom."""
        receiver, sock = self.store_receiver, self.socket
        if receiver is None or not isinstance(sock, BulkSocket):
            super()._read_pdu_data()
            return
        try:
            head = sock.recv(6)
        except (OSError, TimeoutError):
            head = bytearray()
        if len(head) == 6 and head[0] == 0x04 and self._receives_store(receiver):
            self._receive_store(receiver, sock, head)
            return
        if receiver.busy:  # a half-received data set that pynetdicom cannot continue
            receiver.discard()
        sock.unread = bytes(head) + sock.unread
        super()._read_pdu_data()

    def _receives_store(self, receiver: StoreReceiver) -> bool:
        """Whether a P-DATA-TF PDU may go to the receiver: while it holds a half-received
        data set (in Sta6), or when no message is in flight in pynetdicom's path and
        nobody listens to what that path makes."""
        if self.state_machine.current_state != "Sta6":
            return False
        if receiver.busy:
            return True
        return (_config.STORE_RECV_CHUNKED_DATASET and not self.event_queue.qsize()
                and not self._recv_pdu.qsize()
                and not any(self.assoc.get_handlers(event) for event in _RECEIVE_EVENTS))

    def _receive_store(self, receiver: StoreReceiver, sock: BulkSocket,
                       head: bytearray) -> None:
        body = receiver.buffer(int.from_bytes(head[2:6], "big"))
        try:
            complete = sock.recv_exactly(body)
        except (OSError, TimeoutError):
            complete = False
        if not complete:
            DUL_LOGGER.error("Connection closed before the entire PDU was received")
            receiver.discard()
            self.event_queue.put("Evt17")  # as pynetdicom: transport connection closed
            return
        try:
            if receiver.receive(body, self.assoc):
                return
        except ProtocolError as exc:
            DUL_LOGGER.error(f"Invalid P-DATA-TF PDU: {exc}")
            self.event_queue.put("Evt19")  # as pynetdicom: invalid PDU, A-ABORT
            return
        try:  # not a C-STORE's: pynetdicom's decoding, as its _read_pdu_data does
            pdu, event = self._decode_pdu(head + body)
        except Exception as exc:
            DUL_LOGGER.error("Unable to decode the received PDU data")
            DUL_LOGGER.exception(exc)
            self.event_queue.put("Evt19")
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def discard_partial_store(self) -> None:
        """Drop a C-STORE data set still being received (the connection closed)."""
        if self.store_receiver is not None:
            self.store_receiver.discard()

    def run_reactor(self) -> None:
        """pynetdicom's ``DULServiceProvider.run_reactor`` with the sleep replaced by
        :meth:`_wait_for_work`; everything else is the same sequence."""
        self._idle_timer.start()
        sleep = False
        try:
            while True:
                if not self.assoc._dul_ready.is_set():
                    self.assoc._dul_ready.set()
                    sleep = True
                if sleep:
                    self._wait_for_work()
                if self._kill_thread:
                    break
                if self.artim_timer.expired:
                    self.event_queue.put("Evt18")
                try:
                    if self._process_recv_primitive():
                        pass
                    elif self._is_transport_event():
                        self._idle_timer.restart()
                except Exception:
                    self._abort_hard()
                    return
                try:
                    event = self.event_queue.get(block=False)
                except queue.Empty:
                    sleep = True
                    continue
                self.state_machine.do_action(event)
                sleep = False
        finally:
            self.discard_partial_store()
            self._wake_r.close()
            self._wake_w.close()

    def _abort_hard(self) -> None:
        # As pynetdicom does: bypass the state machine, send A-ABORT, stop both reactors.
        abort_pdu = A_ABORT_RQ()
        abort_pdu.source = 0x02
        abort_pdu.reason_diagnostic = 0x00
        if self.socket is not None:
            self.socket.send(abort_pdu.encode())
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True


class AdoptedEventDrivenDUL(_WakingDUL):
    """A requestor's DUL (a C-MOVE sub-association's, which ``AE.associate`` creates and
    starts itself) made event-driven while pynetdicom's own reactor loop runs it.

    That loop sleeps ``_run_loop_delay`` between passes (1 ms; 0.2 ms as we set it before),
    so each C-STORE sub-operation waited up to two sleeps: one before its request left the
    send queue, one before its response was read; and the polling thread took the
    interpreter from the C-MOVE's thread thousands of times a second. Adopted with
    :func:`adopt_requestor_dul` (a class change, as pynetdicom offers no DUL factory), the
    loop's sleep is zero and :meth:`_is_transport_event`, which the loop calls whenever its
    send queue is empty, first waits in ``select`` for the socket or a wake-up, at most
    :data:`TIMER_TICK` (the ARTIM timer's resolution). Everything else is pynetdicom's.
    """

    # Held by whichever thread reads the socket: this one while it reads a PDU (it skips
    # the read when the lock is taken), the sending thread for a whole C-STORE exchange
    # (claim_reading .. release_reading).
    read_lock: threading.Lock
    # True while the sending thread reads: then this thread leaves the socket alone.
    _direct_reading = False

    def _is_transport_event(self) -> bool:
        if self.state_machine.current_state != "Sta13":  # Sta13 closes without waiting
            self._wait_for_work()
        # Never wait for a claimed exchange: a request the sender queued (rather than
        # wrote) must still go out from this thread while the sender waits for its answer.
        if not self.read_lock.acquire(blocking=False):
            return False
        try:
            if self._direct_reading:
                return False
            return bool(super()._is_transport_event())
        finally:
            self.read_lock.release()

    def _socket_to_watch(self) -> Any:
        return None if self._direct_reading else super()._socket_to_watch()

    def claim_reading(self) -> bool:
        """Let the calling (sending) thread read the peer's next PDU itself
        (:meth:`read_store_response`), until :meth:`release_reading`: the DUL thread's
        decoding of a C-STORE response and its hand-over through two queues were a quarter
        of a millisecond per sub-operation. Only while established (Sta6) with nothing
        received and not yet processed, on a plain :class:`BulkSocket` (no TLS), and with
        nobody listening to received data (EVT_DATA_RECV, EVT_PDU_RECV); False otherwise,
        and then nothing is claimed."""
        sock = self.socket
        if (not isinstance(sock, BulkSocket) or isinstance(sock.socket, ssl.SSLSocket)
                or sock.socket is None or threading.current_thread() is self
                or self.assoc.get_handlers(evt.EVT_DATA_RECV)
                or self.assoc.get_handlers(evt.EVT_PDU_RECV)):
            return False
        self.read_lock.acquire()
        if (self.state_machine.current_state != "Sta6" or self.event_queue.qsize()
                or self.to_user_queue.qsize() or sock.unread):
            self.read_lock.release()
            return False
        self._direct_reading = True
        return True

    def release_reading(self) -> None:
        """Give reading back to the DUL thread; woken if a PDU was put back for it. Not
        woken otherwise: it looks at the socket again within TIMER_TICK, or at once when
        something is sent (a release request), and the next exchange claims again."""
        self._direct_reading = False
        self.read_lock.release()
        sock = self.socket
        if isinstance(sock, BulkSocket) and sock.unread:
            self._wake()

    def read_store_response(self, timeout: float | None) -> tuple[int, int, int] | None:
        """Read one PDU (the caller holds the claim) and return what
        :func:`~cloudfilm.interfaces.dimse.messages.store_response_in_pdu` finds in it.
        Anything else, or a PDU not read whole (connection closed, timeout between its
        bytes), is put back on the socket (:attr:`BulkSocket.unread`) for the DUL thread,
        which receives it as pynetdicom does; None then. Raises TimeoutError when no byte
        came within ``timeout``."""
        sock = self.socket
        assert isinstance(sock, BulkSocket) and self._direct_reading
        deadline = None if timeout is None else time.monotonic() + timeout
        head = sock.recv_until(6, deadline)
        if not head:
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError
            return None  # closed or failed: the DUL thread finds out as pynetdicom does
        pdu = head
        if len(head) == 6:
            length = int.from_bytes(head[2:6], "big")
            if head[0] == 0x04 and length <= _DIRECT_PDU_LIMIT:
                pdu = head + sock.recv_until(length, deadline)
        found = store_response_in_pdu(pdu) if len(pdu) > 6 else None
        if found is None:
            sock.unread = bytes(pdu)
            return None
        self._idle_timer.restart()  # as pynetdicom does on each received PDU
        return found


def _close_quietly(*socks: socket.socket) -> None:
    for sock in socks:
        sock.close()


def adopt_requestor_dul(dul: Any) -> bool:
    """Make pynetdicom's own running requestor DUL an :class:`AdoptedEventDrivenDUL`.

    Call it in the DUL's thread before any DIMSE message (EVT_CONN_OPEN, which pynetdicom
    fires from that thread): the wake-up sockets exist before any method that uses them,
    and are closed when the DUL is collected. Its socket becomes a :class:`BulkSocket`
    (whole-PDU reads, ``sendall``). False (nothing changed) for a DUL that is
    not pynetdicom's plain one or our :class:`WholeMessageDUL`.
    """
    if isinstance(dul, _WakingDUL):
        return True
    if type(dul) not in (DULServiceProvider, WholeMessageDUL):
        return False
    dul._wake_r, dul._wake_w = _wake_pair()
    weakref.finalize(dul, _close_quietly, dul._wake_r, dul._wake_w)
    dul._run_loop_delay = 0
    dul.read_lock = threading.Lock()
    dul.__class__ = AdoptedEventDrivenDUL
    if type(dul.socket) is AssociationSocket:
        dul.socket.send_lock = threading.RLock()  # type: ignore[attr-defined]
        dul.socket.__class__ = BulkSocket
    return True


class EncodingDIMSE(DIMSEServiceProvider):
    """Sends the messages of C-STORE, C-FIND, C-GET and C-MOVE with their command set
    encoded by ``struct`` (messages.py) instead of through a pydicom ``Dataset``: two thirds
    of a C-MOVE's server CPU went into pynetdicom's encoding of the C-STORE-RQ and the
    Pending C-MOVE-RSP of each sub-operation (py-spy, 300-object series). The P-DATA
    fragments are pynetdicom's. Any other message, or any message someone listens to
    (EVT_DIMSE_SENT hands them pynetdicom's message object), goes pynetdicom's way. A
    received C-STORE response is decoded with ``struct`` too (:meth:`receive_primitive`)."""

    _read_ahead: tuple[tuple[str, int, int, int], bytearray] | None = None

    def __init__(self, assoc: Any) -> None:
        super().__init__(assoc)
        # Per C-MOVE/C-GET request (Message ID): when its last Pending response left.
        self._pending_sent: dict[int, float] = {}

    def _skip_pending(self, primitive: Any) -> bool:
        """Whether to leave out this Pending C-MOVE/C-GET response.

        They are optional (PS3.4 C.4.2.3.1 and C.4.3.3.1: the SCP "may optionally
        generate" them); pynetdicom's SCP sends one after every sub-operation, a message
        each way per object that both sides encode, send and decode. The first is sent,
        then at most one every :data:`PENDING_INTERVAL` s per request: a client still sees
        progress several times a second, and the final response carries every count
        (PS3.4 C.4.2.1.6: those of the Pending responses are informative).
        """
        request = getattr(primitive, "MessageIDBeingRespondedTo", None)
        if not isinstance(primitive, C_MOVE | C_GET) or request is None:
            return False
        if primitive.Status != _PENDING:
            self._pending_sent.pop(request, None)
            return False
        now = time.monotonic()
        last = self._pending_sent.get(request)
        if last is not None and now - last < PENDING_INTERVAL:
            return True
        self._pending_sent[request] = now
        return False

    def read_ahead(self, path: Path, offset: int, context_id: int) -> None:
        """Read the data set of the next C-STORE request, from ``path`` at ``offset``,
        into its P-DATA-TF PDUs now (the C-MOVE/C-GET thread calls this while it waits for
        the response to the previous one), so that :meth:`send_msg` can send it the moment
        that response is in. One object is held; ``send_msg`` of another file reads that
        one as usual."""
        self._read_ahead = None
        limit = self.maximum_pdu_size
        if (not _config.STORE_SEND_CHUNKED_DATASET or os.stat(path).st_size - offset
                > STREAM_ABOVE or self.assoc.get_handlers(evt.EVT_DIMSE_SENT)):
            return
        key = (str(path), offset, context_id, limit)
        self._read_ahead = (key, file_data_set_pdus(path, offset, context_id, limit))

    def _take_read_ahead(self, primitive: Any, context_id: int) -> bytearray | None:
        """The read-ahead PDUs if ``primitive`` sends exactly that file's data set; other
        messages (a C-GET's Pending responses between the sub-operations) leave it held."""
        path = getattr(primitive, "_dataset_path", None)
        if primitive.MessageIDBeingRespondedTo is not None or not path:
            return None
        held, self._read_ahead = self._read_ahead, None
        if held is None or not isinstance(path, tuple):
            return None
        key = (str(path[0]), int(path[1]), context_id, self.maximum_pdu_size)
        return held[1] if held[0] == key else None

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if self._skip_pending(primitive):
            return
        command = command_set(primitive)
        if (command is None or self.assoc.get_handlers(evt.EVT_DIMSE_SENT)
                or file_data_set_size(primitive) > STREAM_ABOVE):
            self._read_ahead = None
            super().send_msg(primitive, context_id)
            return
        dul, limit = self.dul, self.maximum_pdu_size
        if isinstance(dul, WholeMessageDUL) and not self.assoc.get_handlers(evt.EVT_PDU_SENT):
            ahead = self._take_read_ahead(primitive, context_id)
            dul.send_pdu(EncodedPData(
                encoded_message_parts(primitive, command, context_id, limit, ahead)))
            return
        for pdata in message_pdatas(primitive, command, context_id, limit):
            dul.send_pdu(pdata)

    def receive_primitive(self, primitive: Any) -> None:
        """A C-STORE response that arrives whole in one P-DATA (as every peer sends it) is
        decoded by ``decode_store_response``; anything else by pynetdicom, into
        :meth:`new_message`."""
        pdvs = primitive.presentation_data_value_list
        if self.message is None and len(pdvs) == 1 and pdvs[0][1][:1] == b"\x03" and (
                not self.assoc.get_handlers(evt.EVT_DIMSE_RECV)):
            context_id, data = pdvs[0]
            rsp = decode_store_response(bytes(data[1:]))
            if rsp is not None:
                rsp._context_id = context_id
                self.msg_queue.put((context_id, rsp))
                return
        if self.message is None:
            self.message = self.new_message()
        super().receive_primitive(primitive)

    def new_message(self) -> DIMSEMessage:
        return DIMSEMessage()


class BlockingDIMSE(EncodingDIMSE):
    """The acceptor's reactor asks ``get_msg(block=False)`` every millisecond; answer it
    from a short blocking wait, so that a message is served the moment it is complete.

    Only the association's own reactor asks without blocking; a thread that pauses the
    reactor to use ``send_*`` on an acceptor (we never do) waits at most MESSAGE_WAIT.
    Received C-STORE data sets are spooled with our File Meta prefix (messages.py).
    """

    def get_msg(self, block: bool = False) -> Any:
        if block:
            return super().get_msg(block=True)
        try:
            return self.msg_queue.get(block=True, timeout=MESSAGE_WAIT)
        except queue.Empty:
            return None, None

    def new_message(self) -> DIMSEMessage:
        return SpoolingMessage.new()


class BulkSocket(AssociationSocket):
    """Reads a PDU with few system calls (pynetdicom reads 4 KiB at a time), writes a
    message's parts in one ``sendmsg``, and serialises writes with :attr:`send_lock` (the
    DUL thread and a sender writing directly, ``_WakingDUL._write_directly``)."""

    send_lock: threading.RLock
    # Bytes a sending thread read and put back (AdoptedEventDrivenDUL.read_store_response):
    # read before the socket's own.
    unread = b""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.send_lock = threading.RLock()
        super().__init__(*args, **kwargs)

    # Set by the DUL's select (EventDrivenDUL._wait_for_work) when the socket is readable:
    # the next ``ready`` answers True without a select of its own.
    readable = False

    @property
    def ready(self) -> bool:
        if self.readable:
            self.readable = False
            return True
        return bool(self.unread) or bool(super().ready)

    def recv_exactly(self, view: memoryview) -> bool:
        """Fill ``view`` from the socket (``recv_into``, no copies); False when the peer
        closed first."""
        sock = self.socket
        assert sock is not None
        got = 0
        if self.unread:
            taken, self.unread = self.unread[:len(view)], self.unread[len(view):]
            view[:len(taken)] = taken
            got = len(taken)
        while got < len(view):
            n = sock.recv_into(view[got:])
            if not n:
                return False
            got += n
        return True

    def recv_until(self, nr_bytes: int, deadline: float | None) -> bytes:
        """Up to ``nr_bytes`` from the socket, fewer when it closes, fails or ``deadline``
        (``time.monotonic``) passes first."""
        sock = self.socket
        assert sock is not None
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        got = 0
        try:
            while got < nr_bytes:
                wait = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready, _, _ = select.select([sock], [], [], wait)
                if not ready:
                    break
                n = sock.recv_into(view[got:], nr_bytes - got)
                if not n:
                    break
                got += n
        except (OSError, ValueError):
            pass
        del view
        return bytes(buffer[:got])

    def recv(self, nr_bytes: int) -> bytearray:
        sock = self.socket
        assert sock is not None
        buffer = bytearray(nr_bytes)
        view = memoryview(buffer)
        got = 0
        if self.unread:
            taken, self.unread = self.unread[:nr_bytes], self.unread[nr_bytes:]
            view[:len(taken)] = taken
            got = len(taken)
        while got < nr_bytes:
            n = sock.recv_into(view[got:], nr_bytes - got)
            if not n:  # the peer closed: the caller sees a short PDU
                del view
                del buffer[got:]
                return buffer
            got += n
        return buffer

    def send(self, bytestream: bytes) -> None:
        sock = self.socket
        assert sock is not None
        try:
            with self.send_lock:
                sock.sendall(bytestream)
            evt.trigger(self.assoc, evt.EVT_DATA_SENT, {"data": bytestream})
        except Exception:
            self.event_queue.put("Evt17")  # transport connection closed

    def send_parts(self, parts: list[bytes | bytearray]) -> bool:
        """Write ``parts`` in order as one stream (``sendmsg``, no join); False when the
        connection failed (Evt17 queued, as :meth:`send` does)."""
        sock = self.socket
        assert sock is not None
        views = [memoryview(part) for part in parts if len(part)]
        try:
            with self.send_lock:
                if isinstance(sock, ssl.SSLSocket):  # no sendmsg over TLS
                    for view in views:
                        sock.sendall(view)
                else:
                    while views:
                        sent = sock.sendmsg(views)
                        while views and sent >= len(views[0]):
                            sent -= len(views.pop(0))
                        if sent:
                            views[0] = views[0][sent:]
            if self.assoc.get_handlers(evt.EVT_DATA_SENT):
                evt.trigger(self.assoc, evt.EVT_DATA_SENT, {"data": b"".join(parts)})
        except Exception:
            self.event_queue.put("Evt17")  # transport connection closed
            return False
        return True


# pynetdicom's own logger of the loop below (its messages, as pynetdicom logs them).
_ASSOCIATION_LOG = logging.getLogger("pynetdicom.association")


class ServingAssociation(Association):
    """pynetdicom's acceptor association whose reactor loop does not sleep 1 ms before each
    look at its DIMSE queue: :class:`BlockingDIMSE` already waits on that queue (at most
    MESSAGE_WAIT), so the sleep only held back a request that arrived during it, by up to
    a millisecond, after every answered message (each C-FIND of an association; py-spy
    found the association thread there). Everything else is pynetdicom's loop."""

    def _run_reactor(self) -> None:
        if not isinstance(self.dimse, BlockingDIMSE):
            super()._run_reactor()  # its get_msg would not wait: keep pynetdicom's pacing
            return
        self._is_paused = False
        while not self._kill:
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            context_id, msg = self.dimse.get_msg(block=False)  # waits <= MESSAGE_WAIT
            if msg:
                self._serve_request(msg, context_id)
            if end_if_finished(self, release_on_timeout=(
                    self.network_timeout_response == "A-RELEASE")):
                return


def end_if_finished(assoc: Any, *, release_on_timeout: bool) -> bool:
    """The checks a reactor loop makes between messages, as pynetdicom's loop makes them:
    release or abort by the peer, the DUL gone, the network timeout (answered by an
    A-RELEASE when ``release_on_timeout``, else by an abort). True when the association
    is over and killed. Shared by :class:`ServingAssociation` and the C-MOVE
    sub-association's watcher (``sending.FileSendingAssociation``)."""
    if assoc.is_established and assoc.acse.is_release_requested():
        assoc.acse.send_release(is_response=True)
        assoc.is_released = True
        assoc.is_established = False
        evt.trigger(assoc, evt.EVT_RELEASED, {})
        assoc.kill()
        return True
    if assoc.acse.is_aborted():
        assoc.dul.receive_pdu(wait=False)  # so that EVT_ACSE_RECV fires
        assoc.is_aborted = True
        assoc.is_established = False
        evt.trigger(assoc, evt.EVT_ABORTED, {})
        assoc.kill()
        return True
    if not assoc.dul.is_alive():
        assoc.kill()
        return True
    if assoc.dul.idle_timer_expired():
        _ASSOCIATION_LOG.error("Network timeout reached")
        if release_on_timeout:
            assoc._is_paused = True
            assoc._reactor_checkpoint.wait()
            assoc.release()
            assoc._is_paused = False
        else:
            assoc.abort()
        assoc.kill()
        return True
    return False


def tune_acceptor(assoc: Any, client_socket: Any, spool_dir: Path | str | None = None) -> None:
    """Give a freshly created (not yet started) acceptor association our DUL, DIMSE
    provider and socket, and our reactor loop (a class change: pynetdicom's request handler
    creates the association itself); the timers keep the AE's timeouts. Received C-STORE
    data sets are spooled in ``spool_dir`` (the blob store's filesystem, so that ingest
    links the file into place), else where pynetdicom would put them (``tempfile``)."""
    if type(assoc) is Association:
        assoc.__class__ = ServingAssociation
    assoc.dul = EventDrivenDUL(assoc)
    assoc.dul.store_receiver = StoreReceiver(spool_dir or tempfile.gettempdir())
    assoc.dimse = BlockingDIMSE(assoc)
    assoc.dul.socket = BulkSocket(assoc, client_socket=client_socket)
    # These setters also configure the DUL's ARTIM and idle timers.
    assoc.acse_timeout = assoc.acse_timeout
    assoc.network_timeout = assoc.network_timeout
    assoc.dimse_timeout = assoc.dimse_timeout


class TunedRequestHandler(RequestHandler):
    """pynetdicom's request handler with :func:`tune_acceptor` applied to each association."""

    def handle(self) -> None:
        assoc = self._create_association()
        tune_acceptor(assoc, self.request, getattr(self.server, "spool_dir", None))
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.start()


class SupportedContexts(list[PresentationContext]):
    """The server's supported presentation contexts, copied quickly for each association.

    pynetdicom's request handler gives every new association ``deepcopy(server.contexts)``:
    with our 177 contexts (2,910 transfer syntaxes) that is 26 ms of CPU per association,
    part of every C-MOVE, C-GET and C-FIND association's time. The only mutable state of a
    context is its attributes and its transfer syntax list (the UIDs are immutable strings),
    so a copy of each context with its own list is the same result as ``deepcopy``."""

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        copies = []
        for context in self:
            clone = copy.copy(context)
            clone._transfer_syntax = list(context._transfer_syntax)
            copies.append(clone)
        return copies


class ReusePortServer(ThreadedAssociationServer):
    """A threaded association server that may share its port with sibling processes, and
    that copies its contexts for each association cheaply (:class:`SupportedContexts`)."""

    reuse_port = False
    # Where received C-STORE data sets are spooled (tune_acceptor); None: ``tempfile``'s.
    spool_dir: Path | None = None

    @property
    def contexts(self) -> list[PresentationContext]:
        return self._contexts

    @contexts.setter
    def contexts(self, value: list[PresentationContext]) -> None:
        self._contexts = SupportedContexts(value)

    def server_bind(self) -> None:
        if self.reuse_port and self.socket is not None:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def shutdown(self) -> None:
        # pynetdicom's shutdown() ends by removing the server from ``AE._servers``, where
        # only ``AE.start_server`` puts it; the socket is closed by then.
        with contextlib.suppress(ValueError):
            super().shutdown()


class SharedPortServer(ReusePortServer):
    reuse_port = True
