"""The C-MOVE/C-GET sending path of issue 12: file data sets read straight into their PDUs
(and read ahead), the cheap per-association context copy, optional Pending responses, and
the event-driven requestor DUL."""

from __future__ import annotations

import copy
import io
import socket
import time
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_GET, C_MOVE, C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.sop_class import CTImageStorage
from pynetdicom.transport import AssociationSocket
from tests.dimse_fakes import CT, store_primitive

from cloudfilm.interfaces.dimse import transport
from cloudfilm.interfaces.dimse.messages import (
    EncodedPData,
    command_set,
    encoded_message,
    encoded_message_parts,
    file_data_set_pdus,
)
from cloudfilm.interfaces.dimse.transport import (
    AdoptedEventDrivenDUL,
    BulkSocket,
    EncodingDIMSE,
    SupportedContexts,
    WholeMessageDUL,
    adopt_requestor_dul,
)


def _request(**values: Any) -> C_STORE:
    return store_primitive(sop_instance="1.2.3.4.5", priority=2, **values)


def _payload(size: int) -> bytes:
    return bytes(range(251)) * (size // 251) + b"z" * (size % 251)


@pytest.mark.parametrize("max_pdu", [0, 16, 4096, 16384])
@pytest.mark.parametrize("size", [0, 1, 5000, 17920, 20011])
def test_file_data_set_pdus_are_the_in_memory_encoding(tmp_path: Path, max_pdu: int,
                                                       size: int) -> None:
    """Read into its PDU slots with preadv (16-byte PDUs: 2,000 slots, two preadv calls),
    a file's data set is the bytes the in-memory route makes of the same data."""
    data = _payload(size)
    path = tmp_path / "object.dcm"
    path.write_bytes(b"m" * 200 + data)
    in_memory = _request(DataSet=io.BytesIO(data))
    command = command_set(in_memory)
    assert command is not None
    expected = encoded_message(in_memory, command, 5, max_pdu)
    from_file = _request()
    from_file._dataset_path = (path, 200)
    assert encoded_message(from_file, command, 5, max_pdu) == expected
    parts = encoded_message_parts(from_file, command, 5, max_pdu)
    assert len(parts) == (2 if size else 1)
    pdus = file_data_set_pdus(path, 200, 5, max_pdu)
    assert bytes(parts[0]) + bytes(pdus) == expected


class _Queue:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send_pdu(self, primitive: Any) -> None:
        self.sent.append(primitive)


def _provider(monkeypatch: pytest.MonkeyPatch) -> tuple[EncodingDIMSE, list[Any]]:
    assoc = Association(AE(), "requestor")
    provider = EncodingDIMSE(assoc)
    dul = WholeMessageDUL(assoc)
    sent: list[Any] = []
    monkeypatch.setattr(dul, "send_pdu", sent.append)
    assoc.dul = dul
    return provider, sent


def test_a_read_ahead_is_sent_once_and_survives_a_pending_response(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    provider, sent = _provider(monkeypatch)
    path = tmp_path / "next.dcm"
    path.write_bytes(b"m" * 144 + _payload(40000))
    provider.read_ahead(path, 144, 1)
    held = provider._read_ahead
    assert held is not None
    pending = C_GET()
    pending.MessageIDBeingRespondedTo = 1
    pending.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.3"
    pending.Status = 0xFF00
    provider.send_msg(pending, 1)  # a C-GET's Pending response in between
    assert provider._read_ahead is held
    rq = _request()
    rq._dataset_path = (path, 144)
    provider.send_msg(rq, 1)
    assert provider._read_ahead is None
    message = sent[-1]
    assert isinstance(message, EncodedPData) and message.parts[1] is held[1]
    command = command_set(rq)
    assert command is not None
    assert b"".join(bytes(p) for p in message.parts) == encoded_message(
        rq, command, 1, provider.maximum_pdu_size)
    # Another file than the one read ahead: read as usual, the read-ahead dropped.
    provider.read_ahead(path, 144, 1)
    other = tmp_path / "other.dcm"
    other.write_bytes(b"m" * 144 + _payload(300))
    rq._dataset_path = (other, 144)
    provider.send_msg(rq, 1)
    assert bytes(sent[-1].parts[1]).endswith(_payload(300))
    assert provider._read_ahead is None


@pytest.mark.parametrize("kind", [C_MOVE, C_GET])
def test_pending_responses_are_thinned_and_the_final_one_always_goes(
        kind: type, monkeypatch: pytest.MonkeyPatch) -> None:
    provider, sent = _provider(monkeypatch)
    clock = [100.0]
    monkeypatch.setattr(transport.time, "monotonic", lambda: clock[0])

    def respond(status: int, remaining: int, message_id: int = 7) -> None:
        rsp = kind()
        rsp.MessageIDBeingRespondedTo = message_id
        rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
        rsp.Status = status
        rsp.NumberOfRemainingSuboperations = remaining
        rsp.NumberOfCompletedSuboperations = 10 - remaining
        rsp.NumberOfFailedSuboperations = 0
        rsp.NumberOfWarningSuboperations = 0
        provider.send_msg(rsp, 1)

    respond(0xFF00, 9)  # the first is sent
    respond(0xFF00, 8)  # within the interval: left out
    respond(0xFF00, 5, message_id=8)  # another request has its own interval
    clock[0] += transport.PENDING_INTERVAL * 1.01
    respond(0xFF00, 7)  # an interval later: sent
    respond(0x0000, 0)  # the final response is always sent
    respond(0xFF00, 9)  # and a new request with the same ID starts afresh
    assert len(sent) == 5
    assert provider._pending_sent == {7: clock[0], 8: 100.0}


def test_supported_contexts_copy_like_deepcopy() -> None:
    ae = AE()
    ae.add_supported_context(CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    ae.add_supported_context("1.2.840.10008.1.1", scp_role=True, scu_role=False)
    contexts = SupportedContexts(ae.supported_contexts)
    ours, theirs = copy.deepcopy(contexts), copy.deepcopy(list(ae.supported_contexts))
    assert type(ours) is list
    assert [vars(c) for c in ours] == [vars(c) for c in theirs]
    for original, clone in zip(contexts, ours, strict=True):
        assert clone is not original
        assert clone.transfer_syntax is not original.transfer_syntax
    ours[0].transfer_syntax.append("1.2.3.4")  # the server's own stays untouched
    assert "1.2.3.4" not in contexts[0].transfer_syntax


def test_a_requestor_dul_is_adopted_once_and_others_are_left() -> None:
    assoc = Association(AE(), "requestor")
    dul = assoc.dul
    with socket.socket() as unconnected:
        dul.socket = AssociationSocket(assoc, client_socket=unconnected)
        assert type(dul) is DULServiceProvider
        assert adopt_requestor_dul(dul)
    assert type(dul) is AdoptedEventDrivenDUL and type(dul.socket) is BulkSocket
    assert dul._run_loop_delay == 0
    assert adopt_requestor_dul(dul)  # already adopted

    class Custom(DULServiceProvider):
        pass

    assert not adopt_requestor_dul(Custom(Association(AE(), "requestor")))


def test_an_adopted_dul_wakes_for_a_queued_pdu() -> None:
    """Waiting in select, the adopted DUL returns as soon as something is queued (not
    after TIMER_TICK)."""
    import threading

    assoc = Association(AE(), "requestor")
    dul = assoc.dul
    adopt_requestor_dul(dul)
    assert isinstance(dul, AdoptedEventDrivenDUL)
    woke = threading.Event()

    def wait() -> None:
        dul._wait_for_work()
        woke.set()

    waiter = threading.Thread(target=wait)
    started = time.monotonic()
    waiter.start()
    dul._wake()
    assert woke.wait(timeout=5)
    waiter.join(timeout=5)
    assert time.monotonic() - started < 5


def test_a_whole_message_is_written_by_the_sender_unless_pdata_was_queued() -> None:
    """Established and with nothing queued, the sending thread writes the message itself
    (one sendmsg of its parts); once a P-DATA went through the queue (pynetdicom's own
    encoding), every later message is queued too, so that none overtakes it."""
    from pynetdicom.pdu_primitives import P_DATA

    from cloudfilm.interfaces.dimse.transport import EventDrivenDUL

    ours, peer = socket.socketpair()
    with ours, peer:
        assoc = Association(AE(), "acceptor")
        dul = EventDrivenDUL(assoc)  # not started: whatever is queued stays queued
        dul.socket = BulkSocket(assoc, client_socket=ours)
        dul.state_machine.current_state = "Sta6"
        dul.send_pdu(EncodedPData([b"head", bytearray(b"-data")]))
        assert dul.to_provider_queue.qsize() == 0
        peer.settimeout(5)
        assert peer.recv(64) == b"head-data"
        dul.send_pdu(P_DATA())
        dul.to_provider_queue.get(False)  # as if the DUL thread had taken it: queue empty
        dul.send_pdu(EncodedPData([b"later"]))
        assert dul.to_provider_queue.qsize() == 1
        peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            peer.recv(64)
        dul.kill_dul()


def test_nothing_is_written_directly_before_the_association_is_established() -> None:
    from cloudfilm.interfaces.dimse.transport import EventDrivenDUL

    ours, peer = socket.socketpair()
    with ours, peer:
        assoc = Association(AE(), "acceptor")
        dul = EventDrivenDUL(assoc)
        dul.socket = BulkSocket(assoc, client_socket=ours)
        assert dul.state_machine.current_state == "Sta1"
        dul.send_pdu(EncodedPData([b"early"]))
        assert dul.to_provider_queue.qsize() == 1
        dul.kill_dul()


def _claimed_dul(ours: socket.socket) -> AdoptedEventDrivenDUL:
    from pynetdicom import evt

    assoc = Association(AE(), "requestor")
    for handler, _ in assoc.get_handlers(evt.EVT_PDU_RECV):  # pynetdicom's PDU logging
        assoc.unbind(evt.EVT_PDU_RECV, handler)
    dul = assoc.dul
    dul.socket = AssociationSocket(assoc, client_socket=ours)
    assert adopt_requestor_dul(dul)
    assert isinstance(dul, AdoptedEventDrivenDUL)
    dul.state_machine.current_state = "Sta6"
    assert dul.event_queue.get(False) == "Evt5"  # the socket's connection indication
    assert dul.claim_reading()
    return dul


def _store_response_pdu(status: int, message_id: int = 3, context_id: int = 5,
                        **values: Any) -> bytes:
    from pynetdicom.dimse_messages import C_STORE_RSP
    from pynetdicom.pdu import P_DATA_TF

    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = message_id
    rsp.AffectedSOPClassUID = CT
    rsp.AffectedSOPInstanceUID = "1.2.3.4.5"
    rsp.Status = status
    for keyword, value in values.items():
        setattr(rsp, keyword, value)
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    (pdata,) = list(message.encode_msg(context_id, 16384))
    pdu = P_DATA_TF()
    pdu.from_primitive(pdata)
    return bytes(pdu.encode())


def test_the_sender_reads_a_store_response_and_the_dul_leaves_the_socket() -> None:
    """Claimed, the DUL thread neither reads nor watches the socket; the sending thread
    reads the response (status kept as sent: a warning is a warning)."""
    ours, peer = socket.socketpair()
    with ours, peer:
        dul = _claimed_dul(ours)
        peer.sendall(_store_response_pdu(0xB000) + _store_response_pdu(0, message_id=4))
        assert dul._socket_to_watch() is None
        import threading

        looked: list[bool] = []  # the DUL thread's look at the socket, while claimed
        looker = threading.Thread(target=lambda: looked.append(dul._is_transport_event()))
        looker.start()
        # It does not wait for the claim either: it may have a request to send meanwhile.
        looker.join(timeout=5)
        assert looked == [False]
        assert dul.read_store_response(5) == (5, 3, 0xB000)
        assert dul.event_queue.qsize() == 0
        assert dul.read_store_response(5) == (5, 4, 0)
        with pytest.raises(TimeoutError):
            dul.read_store_response(0.01)
        dul.release_reading()
        assert dul._is_transport_event() is False  # nothing left for it to read
        assert dul._socket_to_watch() is not None
        assert not dul.socket.ready


@pytest.mark.parametrize("kind", ["abort", "release", "comment", "fragmented"])
def test_anything_else_is_put_back_for_pynetdicom(kind: str) -> None:
    """A PDU that is not a whole plain C-STORE response goes back to the DUL thread, which
    decodes it as pynetdicom does (the same event, the same PDU)."""
    from pynetdicom.pdu import A_ABORT_RQ, A_RELEASE_RQ, P_DATA_TF

    if kind == "abort":
        sent, event = _abort_pdu(A_ABORT_RQ()), "Evt16"
    elif kind == "release":
        sent, event = bytes(A_RELEASE_RQ().encode()), "Evt12"
    elif kind == "comment":
        sent, event = _store_response_pdu(0xC000, ErrorComment="odd"), "Evt10"
    else:
        from pynetdicom.pdu_primitives import P_DATA

        command = _store_response_pdu(0)[12:]  # after the PDU and PDV headers
        pdata = P_DATA()
        pdata.presentation_data_value_list.extend(
            [(5, b"\x01" + command[:30]), (5, b"\x03" + command[30:])])
        pdu = P_DATA_TF()
        pdu.from_primitive(pdata)
        sent, event = bytes(pdu.encode()), "Evt10"
    ours, peer = socket.socketpair()
    with ours, peer:
        dul = _claimed_dul(ours)
        peer.sendall(sent)
        assert dul.read_store_response(5) is None
        dul.release_reading()
        assert dul.socket.ready
        dul._read_pdu_data()  # pynetdicom's read, as the DUL thread makes it
        assert dul.event_queue.get(False) == event
        received = dul._recv_pdu.get(False)
        assert bytes(received.encode()) == sent
        assert not dul.socket.unread and not dul.socket.ready


def test_a_closed_connection_is_left_to_the_dul() -> None:
    ours, peer = socket.socketpair()
    with ours:
        dul = _claimed_dul(ours)
        peer.sendall(_store_response_pdu(0)[:9])  # part of a PDU, then closed
        peer.close()
        assert dul.read_store_response(5) is None
        dul.release_reading()
        dul._read_pdu_data()
        assert dul.event_queue.get(False) == "Evt17"


def test_reading_is_not_claimed_with_something_received_or_outside_sta6() -> None:
    ours, peer = socket.socketpair()
    with ours, peer:
        dul = _claimed_dul(ours)
        dul.release_reading()
        dul.event_queue.put("Evt10")
        assert not dul.claim_reading()
        dul.event_queue.get(False)
        dul.state_machine.current_state = "Sta7"
        assert not dul.claim_reading()
        dul.state_machine.current_state = "Sta6"
        assert dul.claim_reading()  # and the lock was released each time
        dul.release_reading()

        def listening(event: Any) -> None:
            pass

        from pynetdicom import evt

        dul.assoc.bind(evt.EVT_PDU_RECV, listening)  # someone wants pynetdicom's PDUs
        assert not dul.claim_reading()
        assert dul.read_lock.acquire(blocking=False)
        dul.read_lock.release()


def _abort_pdu(pdu: Any) -> bytes:
    pdu.source, pdu.reason_diagnostic = 0x02, 0x00  # service provider, no reason given
    return bytes(pdu.encode())
