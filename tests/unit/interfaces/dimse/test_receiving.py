"""The DUL thread's C-STORE receiver (interfaces/dimse/receiving.py) writes what pynetdicom's
chunked receive writes and queues the request pynetdicom would, and hands everything else
back to pynetdicom untouched."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import _config
from pynetdicom.dimse_messages import C_ECHO_RQ, C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA
from tests.dimse_fakes import FakeAssoc, store_primitive

from cloudfilm.interfaces.dimse import receiving
from cloudfilm.interfaces.dimse.receiving import (
    ProtocolError,
    StoreReceiver,
    decode_store_request,
)


def _request(**values: Any) -> C_STORE:
    return store_primitive(**values)


def _message(rq: Any, payload: bytes | None) -> Any:
    if payload is not None:
        rq.DataSet = io.BytesIO(payload)
    message = (C_STORE_RQ if isinstance(rq, C_STORE) else C_ECHO_RQ)()
    message.primitive_to_message(rq)
    return message


def _pdatas(rq: Any, payload: bytes | None, max_pdu: int = 0) -> list[P_DATA]:
    """pynetdicom's P-DATA primitives of ``rq``: the command set whole (as peers send it),
    the data set in fragments of at most ``max_pdu``."""
    whole = list(_message(rq, payload).encode_msg(1, 0))
    fragments = list(_message(rq, payload).encode_msg(1, max_pdu))
    return whole[:1] + [p for p in fragments
                        if not p.presentation_data_value_list[0][1][0] & 1]


def _pdus(rq: Any, payload: bytes | None, max_pdu: int = 0) -> list[memoryview]:
    """The P-DATA-TF PDU bodies (after the 6-byte header) of :func:`_pdatas`."""
    return [memoryview(P_DATA_TF(p).encode())[6:] for p in _pdatas(rq, payload, max_pdu)]


@pytest.mark.parametrize("rq", [
    _request(),
    _request(message_id=65535, priority=2, sop_instance="1.2.840.99.123456789.1"),
    _request(MoveOriginatorApplicationEntityTitle="MOVER", MoveOriginatorMessageID=9),
])
def test_decode_store_request_as_pynetdicom(rq: C_STORE) -> None:
    command = bytes(encode(_message(rq, b"\0\0").command_set, True, True))
    ours = decode_store_request(command)
    assert ours is not None
    message = _message(_request(), b"")
    message.command_set = _message(rq, b"\0\0").command_set
    theirs = message.message_to_primitive()
    for keyword in ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID", "Priority",
                    "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID"):
        assert getattr(ours, keyword) == getattr(theirs, keyword), keyword
    assert ours.is_valid_request


def test_decode_store_request_leaves_the_rest_to_pynetdicom() -> None:
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    assert decode_store_request(bytes(encode(_message(echo, None).command_set, True, True))
                                ) is None
    no_data = _message(_request(), b"\0\0").command_set
    no_data.CommandDataSetType = 0x0101
    assert decode_store_request(bytes(encode(no_data, True, True))) is None
    odd = _message(_request(), b"\0\0").command_set
    odd.ErrorComment = "not in a request"
    assert decode_store_request(bytes(encode(odd, True, True))) is None
    bad_uid = _message(_request(), b"\0\0").command_set
    bad_uid.AffectedSOPInstanceUID = "1." + "2" * 70  # longer than a UI may be
    assert decode_store_request(bytes(encode(bad_uid, True, True))) is None
    assert decode_store_request(b"\x00\x00\x00\x00\xff\xff\xff\xff") is None


@pytest.mark.parametrize("max_pdu", [0, 16, 4096])
def test_receiver_spools_what_pynetdicom_spools(max_pdu: int, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", True)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path / "theirs"))
    (tmp_path / "theirs").mkdir()
    payload = bytes(range(256)) * 40
    rq = _request(MoveOriginatorApplicationEntityTitle="MOVER", MoveOriginatorMessageID=9)
    assoc = FakeAssoc()
    receiver = StoreReceiver(tmp_path)
    pdus = _pdus(rq, payload, max_pdu)
    assert all(receiver.receive(pdu, assoc) for pdu in pdus)
    assert not receiver.busy
    context_id, ours = assoc.dimse.msg_queue.get_nowait()
    assert context_id == 1 and ours._context_id == 1 and ours.is_valid_request

    message = DIMSEMessage()
    for pdata in _pdatas(rq, payload, max_pdu):
        message.decode_msg(pdata, assoc)
    theirs = message.message_to_primitive()
    message._data_set_file.close()
    assert Path(ours._dataset_path).read_bytes() == Path(theirs._dataset_path).read_bytes()
    assert Path(ours._dataset_path).parent == tmp_path
    assert ours._dataset_file.name == str(ours._dataset_path)
    for keyword in ("MessageID", "AffectedSOPClassUID", "AffectedSOPInstanceUID",
                    "MoveOriginatorApplicationEntityTitle", "MoveOriginatorMessageID"):
        assert getattr(ours, keyword) == getattr(theirs, keyword)


@pytest.mark.parametrize("max_pdu", [0, 16, 4096])
def test_receiver_hashes_the_spool_file_as_written(max_pdu: int, tmp_path: Path) -> None:
    # Ingest takes this digest as the file's content address instead of hashing it again,
    # so it must be the SHA-256 of exactly the file's bytes (File Meta prefix included).
    payload = bytes(range(256)) * 40 + b"tail"
    receiver, assoc = StoreReceiver(tmp_path), FakeAssoc()
    for round_ in range(2):  # a second object on the same receiver starts a new digest
        assert all(receiver.receive(pdu, assoc)
                   for pdu in _pdus(_request(), payload[round_:], max_pdu))
        _, request = assoc.dimse.msg_queue.get_nowait()
        data = Path(request._dataset_path).read_bytes()
        assert data.endswith(payload[round_:])
        assert request._cloudfilm_sha256 == hashlib.sha256(data).hexdigest()


def test_no_digest_for_a_data_set_that_could_not_be_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    receiver, assoc = StoreReceiver(tmp_path), FakeAssoc()

    def full(fd: int, views: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(receiving.os, "writev", full)
    assert all(receiver.receive(pdu, assoc) for pdu in _pdus(_request(), b"abcd" * 100))
    _, request = assoc.dimse.msg_queue.get_nowait()
    assert isinstance(request._cloudfilm_spool_error, OSError)
    assert getattr(request, "_cloudfilm_sha256", None) is None


def test_command_and_data_in_one_pdu(tmp_path: Path) -> None:
    pdata = P_DATA()
    pdata.presentation_data_value_list = [
        list(item) for p in _message(_request(), b"abcd").encode_msg(1, 0)
        for item in p.presentation_data_value_list]
    receiver, assoc = StoreReceiver(tmp_path), FakeAssoc()
    assert receiver.receive(memoryview(P_DATA_TF(pdata).encode())[6:], assoc)
    _, request = assoc.dimse.msg_queue.get_nowait()
    assert Path(request._dataset_path).read_bytes().endswith(b"abcd")


def test_other_messages_and_messages_in_flight_go_to_pynetdicom(tmp_path: Path) -> None:
    echo = C_ECHO()
    echo.MessageID = 1
    echo.AffectedSOPClassUID = "1.2.840.10008.1.1"
    receiver, assoc = StoreReceiver(tmp_path), FakeAssoc()
    assert not receiver.receive(_pdus(echo, None)[0], assoc)
    first = _pdus(_request(), b"abcd")[0]
    assoc.dimse.message = DIMSEMessage()  # pynetdicom is assembling a message
    assert not receiver.receive(first, assoc)
    assoc.dimse.message = None
    assert not receiver.receive(first[:3], assoc)  # items that do not parse
    # a command set in several fragments
    fragmented = _message(_request(), b"abcd").encode_msg(1, 16)
    assert not receiver.receive(memoryview(P_DATA_TF(next(fragmented)).encode())[6:], assoc)
    assert assoc.dimse.msg_queue.empty() and not receiver.busy
    assert not list(tmp_path.iterdir())


def test_a_command_inside_the_data_set_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    receiver, assoc = StoreReceiver(tmp_path), FakeAssoc()
    pdus = _pdus(_request(), bytes(100), 26)
    assert receiver.receive(pdus[0], assoc) and receiver.receive(pdus[1], assoc)
    assert receiver.busy and len(list(tmp_path.iterdir())) == 1
    with pytest.raises(ProtocolError):
        receiver.receive(pdus[0], assoc)  # a command fragment mid data set
    assert not receiver.busy and not list(tmp_path.iterdir())
    assert assoc.dimse.msg_queue.empty()


def test_discard_mid_transfer_leaves_nothing(tmp_path: Path) -> None:
    receiver, assoc = StoreReceiver(tmp_path), FakeAssoc()
    pdus = _pdus(_request(), bytes(100), 26)
    for pdu in pdus[:-1]:
        receiver.receive(pdu, assoc)
    assert len(list(tmp_path.iterdir())) == 1
    receiver.discard()
    receiver.discard()  # the connection-close handler and the reactor's end both call it
    assert not list(tmp_path.iterdir()) and not receiver.busy
    assert assoc.dimse.msg_queue.empty()


def test_a_spool_that_cannot_be_written_is_answered_with_the_error(tmp_path: Path) -> None:
    receiver, assoc = StoreReceiver(tmp_path / "missing"), FakeAssoc()
    assert all(receiver.receive(pdu, assoc) for pdu in _pdus(_request(), bytes(100), 26))
    _, request = assoc.dimse.msg_queue.get_nowait()
    assert isinstance(request._cloudfilm_spool_error, OSError)
    assert request._dataset_path is None


def test_only_a_pdu_within_the_usual_maximum_keeps_its_buffer(tmp_path: Path) -> None:
    receiver = StoreReceiver(tmp_path)
    first = receiver.buffer(1000)
    assert receiver.buffer(500).obj is first.obj  # reused
    huge = receiver.buffer(receiving.KEEP_BUFFER + 1)
    assert huge.obj is not first.obj and len(huge) == receiving.KEEP_BUFFER + 1
    assert receiver.buffer(1000).obj is first.obj
