"""The struct-encoded DIMSE pieces (interfaces/dimse/messages.py) are byte for byte what
pynetdicom encodes with pydicom, and fall back to pynetdicom where they do not apply."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import _config
from pynetdicom.dimse_messages import C_FIND_RSP, C_STORE_RQ, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import create_file_meta, encode
from pynetdicom.pdu_primitives import P_DATA
from tests.dimse_fakes import CT, FakeAssoc, store_primitive

from cloudfilm.interfaces.dimse.messages import (
    SpoolingMessage,
    command_set,
    decode_store_response,
    encoded_message,
    encoded_pdata_tf,
    file_data_set_size,
    file_meta_prefix,
    message_pdatas,
    store_response_command,
)


def _response(**values: Any) -> C_STORE:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = values.pop("message_id", 7)
    rsp.AffectedSOPClassUID = values.pop("sop_class", CT)
    rsp.AffectedSOPInstanceUID = values.pop("sop_instance", "1.2.3.4.5")
    rsp.Status = values.pop("status", 0)
    for keyword, value in values.items():
        setattr(rsp, keyword, value)
    return rsp


def _pynetdicom_command(rsp: C_STORE) -> bytes:
    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    return bytes(encode(message.command_set, True, True))


@pytest.mark.parametrize(
    "rsp",
    [
        _response(),
        _response(sop_instance="1.2.3.4.56", message_id=65535, status=0xB000),
        _response(status=0xA700, ErrorComment="out of resources"),
        _response(status=0xC000, ErrorComment="odd"),
        _response(sop_instance=str(generate_uid()), status=0xB007),
    ],
)
def test_store_response_matches_pynetdicom(rsp: C_STORE) -> None:
    assert store_response_command(rsp) == _pynetdicom_command(rsp)


@pytest.mark.parametrize(
    "primitive",
    [
        _response(ErrorComment="Zurückgewiesen"),  # not ASCII: pynetdicom knows the charset rules
        _response(OffendingElement=[0x00100020]),
        _response(status=None),
        C_ECHO(),
    ],
)
def test_store_response_leaves_other_messages_to_pynetdicom(primitive: Any) -> None:
    if isinstance(primitive, C_STORE) and primitive.MessageIDBeingRespondedTo is None:
        primitive.MessageIDBeingRespondedTo = 1
    assert store_response_command(primitive) is None


def test_a_request_is_not_a_response() -> None:
    rq = C_STORE()
    rq.MessageID = 1
    rq.AffectedSOPClassUID = CT
    rq.AffectedSOPInstanceUID = "1.2.3"
    assert store_response_command(rq) is None


# A fixed 64-character UID, not generate_uid(): xdist workers must collect the same ids.
_LONGEST_UID = "1.2.826.0.1.3680043.8.498." + "1" * 38


@pytest.mark.parametrize("instance", ["1.2.3.4", "1.2.3.45", _LONGEST_UID])
def test_file_meta_prefix_matches_pynetdicom(instance: str) -> None:
    out = io.BytesIO()
    out.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(
        out,
        create_file_meta(
            sop_class_uid=CT, sop_instance_uid=instance, transfer_syntax=ExplicitVRLittleEndian
        ),
    )
    assert file_meta_prefix(CT, instance, ExplicitVRLittleEndian) == out.getvalue()


def _store_pdatas(payload: bytes, split: bool) -> list[P_DATA]:
    rq = store_primitive(DataSet=io.BytesIO(payload))
    message = C_STORE_RQ()
    message.primitive_to_message(rq)
    pdatas = list(message.encode_msg(1, 16 if split else 0))
    if split:
        return pdatas
    both = P_DATA()  # command and data set in one P-DATA, as a peer may send them
    both.presentation_data_value_list = [
        list(pv) for p in pdatas for pv in p.presentation_data_value_list
    ]
    return [both]


@pytest.mark.parametrize("split", [True, False])
def test_spooling_message_writes_what_pynetdicom_writes(
    split: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", True)
    payload = bytes(range(256)) * 40
    files = []
    for message in (SpoolingMessage.new(), DIMSEMessage()):
        done = [message.decode_msg(p, FakeAssoc()) for p in _store_pdatas(payload, split)]
        assert done[-1] and not any(done[:-1])
        assert isinstance(message, C_STORE_RQ)
        primitive = message.message_to_primitive()
        message._data_set_file.close()
        path = Path(primitive._dataset_path)
        files.append(path.read_bytes())
        path.unlink()
    assert files[0] == files[1]
    assert files[0].endswith(payload)


def test_spooling_message_without_chunked_receive_keeps_the_data_in_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", False)
    message = SpoolingMessage.new()
    for p in _store_pdatas(b"abcd" * 10, split=True):
        message.decode_msg(p, FakeAssoc())
    assert message._data_set_file is None
    assert message.data_set.getvalue() == b"abcd" * 10


# -- every message the retrieve and query paths send -------------------------------------


def _pynetdicom_any(primitive: Any) -> bytes:
    from pynetdicom.dimse import _RQ_TO_MESSAGE, _RSP_TO_MESSAGE

    table = _RQ_TO_MESSAGE if primitive.MessageIDBeingRespondedTo is None else _RSP_TO_MESSAGE
    message = table[type(primitive)]()
    message.primitive_to_message(primitive)
    return bytes(encode(message.command_set, True, True))


def _store_request(**values: Any) -> C_STORE:
    return store_primitive(message_id=values.pop("message_id", 1),
                           priority=values.pop("priority", 2), **values)


def _retrieve_response(kind: type, **values: Any) -> Any:
    rsp = kind()
    rsp.MessageIDBeingRespondedTo = values.pop("message_id", 5)
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.2"
    rsp.Status = values.pop("status", 0xFF00)
    for keyword, value in values.items():
        setattr(rsp, keyword, value)
    return rsp


_COUNTS = {"NumberOfRemainingSuboperations": 299, "NumberOfCompletedSuboperations": 1,
           "NumberOfFailedSuboperations": 0, "NumberOfWarningSuboperations": 0}


@pytest.mark.parametrize(
    "primitive",
    [
        _store_request(DataSet=io.BytesIO(b"\x08\x00")),
        _store_request(DataSet=io.BytesIO(b"\x08\x00"),
                       MoveOriginatorApplicationEntityTitle="MOVESCU",
                       MoveOriginatorMessageID=9, message_id=65535, sop_instance="1.2.3.45"),
        _store_request(DataSet=io.BytesIO(b"\x08\x00"),
                       MoveOriginatorApplicationEntityTitle="ODD",
                       MoveOriginatorMessageID=1, priority=0),
        _retrieve_response(C_MOVE, **_COUNTS),
        _retrieve_response(C_GET, **_COUNTS),
        _retrieve_response(C_MOVE, status=0, NumberOfCompletedSuboperations=300,
                           NumberOfFailedSuboperations=0, NumberOfWarningSuboperations=0),
        _retrieve_response(C_GET, status=0xB000, ErrorComment="one failed",
                           NumberOfCompletedSuboperations=2, NumberOfFailedSuboperations=1,
                           NumberOfWarningSuboperations=0),
        _retrieve_response(C_MOVE, status=0xA801),
        _retrieve_response(C_FIND, Identifier=io.BytesIO(b"\x08\x00\x52\x00")),
        _retrieve_response(C_FIND, status=0),
        _retrieve_response(C_FIND, status=0xA900, ErrorComment="bad key"),
    ],
)
def test_command_set_matches_pynetdicom(primitive: Any) -> None:
    assert command_set(primitive) == _pynetdicom_any(primitive)


def test_command_set_leaves_the_rest_to_pynetdicom() -> None:
    echo = C_ECHO()
    echo.MessageID = 1
    find_rq = C_FIND()
    find_rq.MessageID = 1
    odd = _retrieve_response(C_FIND, status=0xA900, OffendingElement=[0x00100020])
    assert command_set(echo) is None
    assert command_set(find_rq) is None
    assert command_set(odd) is None


def _pdv_list(pdatas: list[P_DATA]) -> list[tuple[int, bytes]]:
    return [(cx, bytes(data)) for p in pdatas for cx, data in p.presentation_data_value_list]


@pytest.mark.parametrize("max_pdu", [0, 16, 16384])
@pytest.mark.parametrize("size", [0, 1, 10, 5000])
def test_message_pdatas_match_pynetdicom_from_memory(max_pdu: int, size: int) -> None:
    rq = _store_request(DataSet=io.BytesIO(bytes(range(256)) * (size // 256) + b"x" * (size % 256)))
    message = C_STORE_RQ()
    message.primitive_to_message(rq)
    expected = _pdv_list(list(message.encode_msg(3, max_pdu)))
    command = command_set(rq)
    assert command is not None
    assert _pdv_list(message_pdatas(rq, command, 3, max_pdu)) == expected


@pytest.mark.parametrize("max_pdu", [0, 16384])
def test_message_pdatas_match_pynetdicom_from_a_file(tmp_path: Path, max_pdu: int) -> None:
    path = tmp_path / "object.dcm"
    path.write_bytes(b"META" * 40 + bytes(range(256)) * 100)
    rq = _store_request()
    rq._dataset_path = (path, 160)
    message = C_STORE_RQ()
    message.primitive_to_message(rq)
    expected = _pdv_list(list(message.encode_msg(1, max_pdu)))
    command = command_set(rq)
    assert command is not None
    sent = _pdv_list(message_pdatas(rq, command, 1, max_pdu))
    assert sent == expected
    assert b"".join(d[1:] for _, d in sent[1:]) == bytes(range(256)) * 100


def test_a_response_with_an_identifier_sends_it() -> None:
    rsp = _retrieve_response(C_FIND, Identifier=io.BytesIO(b"\x08\x00\x52\x00\x06\x00\x00\x00"))
    message = C_FIND_RSP()
    message.primitive_to_message(rsp)
    command = command_set(rsp)
    assert command is not None
    assert _pdv_list(message_pdatas(rsp, command, 5, 100)) == _pdv_list(
        list(message.encode_msg(5, 100)))


def _pynetdicom_decoded(command: bytes) -> Any:
    message = DIMSEMessage()
    pdata = P_DATA()
    pdata.presentation_data_value_list.append((1, b"\x03" + command))
    assert message.decode_msg(pdata)
    return message.message_to_primitive()


@pytest.mark.parametrize(
    "rsp",
    [_response(), _response(status=0xB000, message_id=65535, sop_instance="1.2.3.45"),
     _response(sop_instance=_LONGEST_UID, status=0xA700)],
)
def test_decode_store_response_as_pynetdicom(rsp: C_STORE) -> None:
    command = store_response_command(rsp)
    assert command is not None
    ours, theirs = decode_store_response(command), _pynetdicom_decoded(command)
    assert isinstance(ours, C_STORE)
    for keyword in ("MessageIDBeingRespondedTo", "Status", "AffectedSOPClassUID",
                    "AffectedSOPInstanceUID", "ErrorComment", "OffendingElement"):
        assert getattr(ours, keyword) == getattr(theirs, keyword), keyword
    assert ours.is_valid_response


def test_decode_store_response_leaves_the_rest_to_pynetdicom() -> None:
    with_comment = store_response_command(_response(status=0xC000, ErrorComment="odd"))
    find = command_set(_retrieve_response(C_FIND, status=0))
    plain = store_response_command(_response())
    assert with_comment is not None and find is not None and plain is not None
    assert decode_store_response(with_comment) is None
    assert decode_store_response(find) is None
    assert decode_store_response(plain[:-3]) is None  # truncated


def test_encoded_pdata_tf_is_pynetdicoms_pdus() -> None:
    from pynetdicom.pdu import P_DATA_TF

    rq = _store_request(DataSet=io.BytesIO(bytes(range(256)) * 70))
    command = command_set(rq)
    assert command is not None
    pdatas = message_pdatas(rq, command, 7, 4096)
    assert len(pdatas) == 6
    assert encoded_pdata_tf(pdatas) == b"".join(P_DATA_TF(p).encode() for p in pdatas)


def test_a_file_data_set_size_is_what_follows_the_file_meta(tmp_path: Path) -> None:
    path = tmp_path / "object.dcm"
    path.write_bytes(b"m" * 160 + b"d" * 1000)
    rq = _store_request()
    assert file_data_set_size(rq) == 0
    rq._dataset_path = (path, 160)
    assert file_data_set_size(rq) == 1000


@pytest.mark.parametrize("max_pdu", [0, 16, 4096])
@pytest.mark.parametrize("size", [0, 1, 5000, 17920])
def test_encoded_message_is_the_pdus_of_message_pdatas(max_pdu: int, size: int) -> None:
    rq = _store_request(DataSet=io.BytesIO(bytes(range(256)) * (size // 256) + b"y" * (size % 256)))
    command = command_set(rq)
    assert command is not None
    assert encoded_message(rq, command, 9, max_pdu) == encoded_pdata_tf(
        message_pdatas(rq, command, 9, max_pdu))


def _pdu_bytes(*pdvs: tuple[int, bytes]) -> bytes:
    from pynetdicom.pdu import P_DATA_TF

    pdata = P_DATA()
    pdata.presentation_data_value_list.extend(pdvs)
    pdu = P_DATA_TF()
    pdu.from_primitive(pdata)
    return bytes(pdu.encode())


def _pynetdicom_pdu_decoded(encoded: bytes) -> Any:
    from pynetdicom.pdu import P_DATA_TF

    pdu = P_DATA_TF()
    pdu.decode(encoded)
    message = DIMSEMessage()
    assert message.decode_msg(pdu.to_primitive())
    return message.context_id, message.message_to_primitive()


@pytest.mark.parametrize(
    "rsp",
    [_response(), _response(status=0xB000, message_id=65535, sop_instance="1.2.3.45"),
     _response(sop_instance=_LONGEST_UID, status=0xA700), _response(status=0x0107)],
)
@pytest.mark.parametrize("context_id", [1, 255])
def test_store_response_in_pdu_as_pynetdicom(rsp: C_STORE, context_id: int) -> None:
    """The PDU as pynetdicom's C_STORE_RSP message and P_DATA_TF encode it; what we read
    of it is what pynetdicom decodes from it."""
    from cloudfilm.interfaces.dimse.messages import store_response_in_pdu

    message = C_STORE_RSP()
    message.primitive_to_message(rsp)
    (pdata,) = list(message.encode_msg(context_id, 16384))
    encoded = _pdu_bytes(*pdata.presentation_data_value_list)
    theirs_context, theirs = _pynetdicom_pdu_decoded(encoded)
    assert store_response_in_pdu(encoded) == (
        theirs_context, theirs.MessageIDBeingRespondedTo, theirs.Status)
    assert store_response_in_pdu(bytearray(encoded)) == (context_id, rsp.MessageIDBeingRespondedTo,
                                                         rsp.Status)


def test_store_response_in_pdu_leaves_the_rest_to_pynetdicom() -> None:
    from pynetdicom.pdu import A_ABORT_RQ, A_RELEASE_RQ

    from cloudfilm.interfaces.dimse.messages import store_response_in_pdu

    plain = store_response_command(_response())
    with_comment = store_response_command(_response(status=0xC000, ErrorComment="odd"))
    find = command_set(_retrieve_response(C_FIND, status=0))
    assert plain is not None and with_comment is not None and find is not None
    assert store_response_in_pdu(_pdu_bytes((1, b"\x03" + plain))) is not None
    assert store_response_in_pdu(_pdu_bytes((1, b"\x03" + with_comment))) is None
    assert store_response_in_pdu(_pdu_bytes((1, b"\x03" + find))) is None
    # A fragment of a command set, a data set fragment, two PDVs in one PDU:
    assert store_response_in_pdu(_pdu_bytes((1, b"\x01" + plain))) is None
    assert store_response_in_pdu(_pdu_bytes((1, b"\x02" + plain))) is None
    assert store_response_in_pdu(
        _pdu_bytes((1, b"\x01" + plain[:20]), (1, b"\x03" + plain[20:]))) is None
    whole = _pdu_bytes((1, b"\x03" + plain))
    assert store_response_in_pdu(whole[:-1]) is None  # truncated
    assert store_response_in_pdu(whole + b"\x00") is None  # longer than its length
    assert store_response_in_pdu(whole[:6]) is None
    assert store_response_in_pdu(bytes(A_RELEASE_RQ().encode())) is None
    assert store_response_in_pdu(_abort_pdu(A_ABORT_RQ())) is None


def _abort_pdu(pdu: Any) -> bytes:
    pdu.source, pdu.reason_diagnostic = 0x02, 0x00  # service provider, no reason given
    return bytes(pdu.encode())
