"""The struct-encoded DIMSE pieces (interfaces/dimse/messages.py) are byte for byte what
pynetdicom encodes with pydicom, and fall back to pynetdicom where they do not apply."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import _config
from pynetdicom.dimse_messages import C_STORE_RQ, C_STORE_RSP, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import create_file_meta, encode
from pynetdicom.pdu_primitives import P_DATA

from cloudfilm.interfaces.dimse.messages import (
    SpoolingMessage,
    file_meta_prefix,
    store_response_command,
)

CT = "1.2.840.10008.5.1.4.1.1.2"


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


class _Context:
    transfer_syntax: ClassVar[list[str]] = [ExplicitVRLittleEndian]


class _Assoc:
    _accepted_cx: ClassVar[dict[int, _Context]] = {1: _Context()}


def _store_pdatas(payload: bytes, split: bool) -> list[P_DATA]:
    rq = C_STORE()
    rq.MessageID = 3
    rq.AffectedSOPClassUID = CT
    rq.AffectedSOPInstanceUID = "1.2.3.4"
    rq.Priority = 0
    rq.DataSet = io.BytesIO(payload)
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
        done = [message.decode_msg(p, _Assoc()) for p in _store_pdatas(payload, split)]
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
        message.decode_msg(p, _Assoc())
    assert message._data_set_file is None
    assert message.data_set.getvalue() == b"abcd" * 10
