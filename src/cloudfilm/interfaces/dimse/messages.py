"""DIMSE message encoding without pydicom datasets, for the two messages every C-STORE has.

pynetdicom builds a pydicom ``Dataset`` for each command set it sends and for the File Meta
group it writes before a received data set (``STORE_RECV_CHUNKED_DATASET``): about a third
of the server's CPU per stored instance went there (yappi, 525 KB CT over one association).
Both are small fixed layouts, so they are written here with ``struct``, byte for byte what
pynetdicom writes (tests/unit/interfaces/dimse/test_messages.py compares them):

* :func:`store_response_command` encodes a C-STORE-RSP command set (PS3.7 9.3.1.2) in
  Implicit VR Little Endian (PS3.7 6.3.1), or answers None for what it does not cover (an
  Offending Element, a non-ASCII Error Comment), which pynetdicom then encodes as usual;
* :func:`file_meta_prefix` is the preamble, "DICM" and the File Meta Information group
  (PS3.10 7.1) pynetdicom writes for a received data set;
* :class:`SpoolingMessage` is pynetdicom's ``DIMSEMessage`` decoding with that prefix.
"""

from __future__ import annotations

import struct
from pathlib import Path
from tempfile import NamedTemporaryFile
from typing import Any

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, _config
from pynetdicom.dimse_messages import _MESSAGE_TYPES, C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode

_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101


def _even(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def _implicit(group: int, element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, element, len(value)) + value


def _uid(value: Any) -> bytes:
    return _even(str(value).encode("ascii"), b"\x00")


def store_response_command(primitive: Any) -> bytes | None:
    """The encoded command set of a C-STORE response primitive, or None when it holds
    something this encoder leaves to pynetdicom."""
    if not isinstance(primitive, C_STORE) or primitive.MessageIDBeingRespondedTo is None:
        return None
    if primitive.Status is None or getattr(primitive, "OffendingElement", None) is not None:
        return None
    comment = getattr(primitive, "ErrorComment", None)
    try:
        encoded_comment = None if comment is None else str(comment).encode("ascii")
        sop_class = primitive.AffectedSOPClassUID
        sop_instance = primitive.AffectedSOPInstanceUID
        body = b"".join(
            (
                _implicit(0, 0x0002, _uid(sop_class)) if sop_class else b"",
                _implicit(0, 0x0100, struct.pack("<H", _C_STORE_RSP)),
                _implicit(0, 0x0120, struct.pack("<H", primitive.MessageIDBeingRespondedTo)),
                _implicit(0, 0x0800, struct.pack("<H", _NO_DATA_SET)),
                _implicit(0, 0x0900, struct.pack("<H", primitive.Status)),
                b""
                if encoded_comment is None
                else _implicit(0, 0x0902, _even(encoded_comment, b" ")),
                _implicit(0, 0x1000, _uid(sop_instance)) if sop_instance else b"",
            )
        )
    except (UnicodeError, struct.error):
        return None
    return _implicit(0, 0x0000, struct.pack("<I", len(body))) + body


def _explicit(element: int, vr: bytes, value: bytes) -> bytes:
    if vr == b"OB":
        return struct.pack("<HH2sHI", 2, element, vr, 0, len(value)) + value
    return struct.pack("<HH2sH", 2, element, vr, len(value)) + value


def file_meta_prefix(sop_class_uid: Any, sop_instance_uid: Any, transfer_syntax: Any) -> bytes:
    """128-byte preamble, "DICM" and the File Meta group pynetdicom writes before a received
    data set (``create_file_meta`` + ``write_file_meta_info``), Explicit VR Little Endian."""
    version = _even(PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii"), b" ")
    group = b"".join(
        (
            _explicit(0x0001, b"OB", b"\x00\x01"),
            _explicit(0x0002, b"UI", _uid(sop_class_uid)),
            _explicit(0x0003, b"UI", _uid(sop_instance_uid)),
            _explicit(0x0010, b"UI", _uid(transfer_syntax)),
            _explicit(0x0012, b"UI", _uid(PYNETDICOM_IMPLEMENTATION_UID)),
            _explicit(0x0013, b"SH", version),
        )
    )
    return b"\x00" * 128 + b"DICM" + _explicit(0x0000, b"UL", struct.pack("<I", len(group))) + group


class SpoolingMessage(DIMSEMessage):
    """``DIMSEMessage.decode_msg`` with the File Meta prefix of a chunked C-STORE data set
    written by :func:`file_meta_prefix`; every other step is pynetdicom's.

    Used for the first P-DATA of each message: once the command set is decoded the object
    becomes pynetdicom's message class (as in pynetdicom), whose own ``decode_msg`` appends
    the remaining data set fragments to the same file. Make one with :meth:`new`
    (``DIMSEMessage.__init__`` accepts only its own class name and its subclasses').
    """

    @classmethod
    def new(cls) -> SpoolingMessage:
        message = DIMSEMessage()
        message.__class__ = cls
        return message  # type: ignore[return-value]

    def decode_msg(self, primitive: Any, assoc: Any = None) -> bool:
        for context_id, data in primitive.presentation_data_value_list:
            header = data[0]
            if header & 1:  # command set fragment
                self.encoded_command_set.write(data[1:])
                if not header & 2:
                    continue
                self.context_id = context_id
                self.command_set = decode(self.encoded_command_set, True, True)
                self.__class__ = _MESSAGE_TYPES[self.command_set.CommandField][1]  # type: ignore[assignment]
                if self.command_set.CommandDataSetType == _NO_DATA_SET:
                    return True
                if _config.STORE_RECV_CHUNKED_DATASET and isinstance(self, C_STORE_RQ):
                    # ``self`` is pynetdicom's C_STORE_RQ now: a function, not a method.
                    _start_spool(self, context_id, assoc)
            else:  # data set fragment
                if self._data_set_file:
                    self._data_set_file.write(data[1:])
                    self._data_set_file.file.flush()
                else:
                    self.data_set.write(data[1:])  # type: ignore[union-attr]
                if header & 2:
                    return True
        return False


def _start_spool(message: Any, context_id: int, assoc: Any) -> None:
    # delete=False as in pynetdicom: the handler reads the file by name, and pynetdicom (or
    # ingest, which moves it into the blob store) removes it.
    handle: Any = NamedTemporaryFile(delete=False, mode="wb", suffix=".dcm")  # noqa: SIM115
    message._data_set_file = handle
    message._data_set_path = Path(handle.name)
    cs = message.command_set
    syntax = assoc._accepted_cx[context_id].transfer_syntax[0]
    handle.write(file_meta_prefix(cs.AffectedSOPClassUID, cs.AffectedSOPInstanceUID, syntax))
