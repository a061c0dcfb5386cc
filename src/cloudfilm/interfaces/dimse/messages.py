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

import os
import struct
from pathlib import Path
from tempfile import NamedTemporaryFile
from typing import Any

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION, _config
from pynetdicom.dimse_messages import _MESSAGE_TYPES, C_STORE_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_FIND, C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.pdu_primitives import P_DATA

_C_STORE_RSP = 0x8001
_NO_DATA_SET = 0x0101
_DATA_SET = 0x0001


def _even(value: bytes, pad: bytes) -> bytes:
    return value + pad if len(value) % 2 else value


def _implicit(group: int, element: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, element, len(value)) + value


def _uid(value: Any) -> bytes:
    return _even(str(value).encode("ascii"), b"\x00")


# The command set elements each message we encode may carry, in tag order (PS3.7 9.3 and
# pynetdicom's _COMMAND_SET_KEYWORDS): (element, primitive attribute, kind). "cmd" is
# CommandField, "type" CommandDataSetType; OffendingElement (AT) is left to pynetdicom.
_UI, _US, _AE, _LO = "UI", "US", "AE", "LO"
_REQUEST_FIELDS: dict[type, tuple[int, tuple[tuple[int, str, str], ...]]] = {
    C_STORE: (0x0001, (
        (0x0002, "AffectedSOPClassUID", _UI), (0x0100, "", "cmd"), (0x0110, "MessageID", _US),
        (0x0700, "Priority", _US), (0x0800, "", "type"),
        (0x1000, "AffectedSOPInstanceUID", _UI),
        (0x1030, "MoveOriginatorApplicationEntityTitle", _AE),
        (0x1031, "MoveOriginatorMessageID", _US))),
}
_RESPONSE_HEAD = ((0x0002, "AffectedSOPClassUID", _UI), (0x0100, "", "cmd"),
                  (0x0120, "MessageIDBeingRespondedTo", _US), (0x0800, "", "type"),
                  (0x0900, "Status", _US), (0x0902, "ErrorComment", _LO))
_SUBOPERATIONS = ((0x1020, "NumberOfRemainingSuboperations", _US),
                  (0x1021, "NumberOfCompletedSuboperations", _US),
                  (0x1022, "NumberOfFailedSuboperations", _US),
                  (0x1023, "NumberOfWarningSuboperations", _US))
_RESPONSE_FIELDS: dict[type, tuple[int, tuple[tuple[int, str, str], ...]]] = {
    C_STORE: (_C_STORE_RSP, (*_RESPONSE_HEAD, (0x1000, "AffectedSOPInstanceUID", _UI))),
    C_FIND: (0x8020, _RESPONSE_HEAD),
    C_GET: (0x8010, (*_RESPONSE_HEAD, *_SUBOPERATIONS)),
    C_MOVE: (0x8021, (*_RESPONSE_HEAD, *_SUBOPERATIONS)),
}
# The primitive attribute that holds each message's data set (pynetdicom's _DATASET_KEYWORDS).
_DATA_SET_ATTRIBUTE = {C_STORE: "DataSet", C_FIND: "Identifier", C_GET: "Identifier",
                       C_MOVE: "Identifier"}


def has_data_set(primitive: Any) -> bool:
    """Whether pynetdicom would send a data set with this message (CommandDataSetType)."""
    if primitive.MessageIDBeingRespondedTo is None and getattr(primitive, "_dataset_path",
                                                               None):
        return True
    attribute = _DATA_SET_ATTRIBUTE.get(type(primitive))
    # pynetdicom tests the BytesIO's truth, which only None fails.
    return bool(attribute and getattr(primitive, attribute, None))


def command_set(primitive: Any) -> bytes | None:
    """The encoded command set (Implicit VR Little Endian, PS3.7 6.3.1) of a C-STORE
    request or a C-STORE, C-FIND, C-GET or C-MOVE response primitive, byte for byte what
    pynetdicom encodes; None for any other message, or one holding something this encoder
    leaves to pynetdicom (an Offending Element, a non-ASCII Error Comment, an empty UID)."""
    is_response = primitive.MessageIDBeingRespondedTo is not None
    layout = (_RESPONSE_FIELDS if is_response else _REQUEST_FIELDS).get(type(primitive))
    if layout is None:
        return None
    if is_response and (primitive.Status is None
                        or getattr(primitive, "OffendingElement", None) is not None):
        return None
    field, elements = layout
    parts: list[bytes] = []
    try:
        for element, attribute, kind in elements:
            if kind == "cmd":
                parts.append(_implicit(0, element, struct.pack("<H", field)))
                continue
            if kind == "type":
                value: Any = _DATA_SET if has_data_set(primitive) else _NO_DATA_SET
                parts.append(_implicit(0, element, struct.pack("<H", value)))
                continue
            value = getattr(primitive, attribute, None)
            if value is None:
                continue
            if kind == _US:
                encoded = struct.pack("<H", value)
            else:
                text = str(value).encode("ascii")
                if not text:
                    return None
                encoded = _even(text, b"\x00" if kind == _UI else b" ")
            parts.append(_implicit(0, element, encoded))
    except (UnicodeError, struct.error, TypeError):
        return None
    body = b"".join(parts)
    return _implicit(0, 0x0000, struct.pack("<I", len(body))) + body


def store_response_command(primitive: Any) -> bytes | None:
    """The encoded command set of a C-STORE response primitive, or None when it holds
    something this encoder leaves to pynetdicom."""
    if not isinstance(primitive, C_STORE) or primitive.MessageIDBeingRespondedTo is None:
        return None
    return command_set(primitive)


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


def file_data_set_size(primitive: Any) -> int:
    """Bytes of the data set a request sends from a file (0 when it sends none)."""
    path = getattr(primitive, "_dataset_path", None)
    if primitive.MessageIDBeingRespondedTo is not None or not path:
        return 0
    file_path, offset = path if isinstance(path, tuple) else (path, 0)
    return max(0, os.stat(file_path).st_size - int(offset))


def _data_set_bytes(primitive: Any) -> bytes | None:
    path = getattr(primitive, "_dataset_path", None)
    if primitive.MessageIDBeingRespondedTo is None and path:
        # send_c_store(path) with STORE_SEND_CHUNKED_DATASET: the file's bytes after its
        # File Meta group, as pynetdicom's encode_msg reads them.
        file_path, offset = path if isinstance(path, tuple) else (path, 0)
        with open(file_path, "rb") as fh:
            fh.seek(offset)
            return fh.read()
    attribute = _DATA_SET_ATTRIBUTE.get(type(primitive))
    value = getattr(primitive, attribute, None) if attribute else None
    return None if value is None else bytes(value.getvalue())


def message_pdatas(primitive: Any, command: bytes, context_id: int,
                   max_pdu: int) -> list[P_DATA]:
    """The P-DATA primitives of one message (``command`` from :func:`command_set`): the
    command set, then the data set in fragments of at most ``max_pdu`` - 6 bytes, as
    pynetdicom's ``DIMSEMessage.encode_msg`` splits them (PS3.8 E.2: bit 0 command, bit 1
    last fragment)."""
    fragment = max_pdu - 6 if max_pdu else 0
    out = _pdata(context_id, 0x01, 0x03, command, fragment)
    data = _data_set_bytes(primitive) if has_data_set(primitive) else None
    if data:  # pynetdicom sends no data set fragment for an empty one either
        out += _pdata(context_id, 0x00, 0x02, data, fragment)
    return out


def _pdata(context_id: int, more: int, last: int, data: bytes,
           fragment: int) -> list[P_DATA]:
    step = fragment or len(data) or 1
    view = memoryview(data)
    out = []
    for start in range(0, max(len(data), 1), step):
        pdata = P_DATA()
        header = last if start + step >= len(data) else more
        pdata.presentation_data_value_list.append(
            (context_id, bytes((header,)) + view[start:start + step]))
        out.append(pdata)
    return out


def decode_store_response(data: bytes) -> C_STORE | None:
    """A C-STORE-RSP primitive from its complete encoded command set, or None for anything
    else (another message, a data set, an Error Comment or Offending Element, a malformed
    set): those pynetdicom decodes. Receiving a C-STORE response through pydicom was a
    fifth of a C-MOVE's server CPU once sending was cheap (py-spy)."""
    values = _store_response_values(data)
    if values is None:
        return None
    try:
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = struct.unpack("<H", values[0x0120])[0]
        rsp.Status = struct.unpack("<H", values[0x0900])[0]
        for element, attribute in ((0x0002, "AffectedSOPClassUID"),
                                   (0x1000, "AffectedSOPInstanceUID")):
            if element in values:
                setattr(rsp, attribute, values[element].rstrip(b"\x00 ").decode("ascii"))
    except (KeyError, struct.error, UnicodeError, ValueError):
        return None
    return rsp


_STORE_RSP_ELEMENTS = frozenset({0x0000, 0x0002, 0x0100, 0x0120, 0x0800, 0x0900, 0x1000})


def _store_response_values(data: bytes | memoryview) -> dict[int, bytes] | None:
    """The elements of an encoded C-STORE-RSP command set without a data set, with its
    Message ID Being Responded To and Status; None for anything else."""
    values: dict[int, bytes] = {}
    offset, end = 0, len(data)
    while offset < end:
        if offset + 8 > end:
            return None
        group, element, length = struct.unpack_from("<HHI", data, offset)
        offset += 8
        if group != 0 or offset + length > end or element not in _STORE_RSP_ELEMENTS:
            return None
        values[element] = bytes(data[offset:offset + length])
        offset += length
    try:
        if (struct.unpack("<H", values[0x0100])[0] != _C_STORE_RSP
                or struct.unpack("<H", values[0x0800])[0] != _NO_DATA_SET
                or len(values[0x0120]) != 2 or len(values[0x0900]) != 2):
            return None
    except (KeyError, struct.error):
        return None
    return values


_PDV_HEAD = struct.Struct(">BBIIBB")  # as _PDU_HEAD below: one PDU with one PDV


def store_response_in_pdu(pdu: bytes | bytearray) -> tuple[int, int, int] | None:
    """(presentation context ID, Message ID Being Responded To, Status) of a whole
    P-DATA-TF PDU (PS3.8 9.3.5) that carries exactly one PDV: the last (only) fragment of
    a C-STORE-RSP command set whose elements :func:`decode_store_response` decodes, as
    every peer sends it. None for anything else (another PDU type, several PDVs, a
    fragment, another message, an Error Comment, ...), which pynetdicom then receives:
    a C-MOVE sub-association's sending thread reads its response with this
    (``transport.AdoptedEventDrivenDUL.read_store_response``)."""
    if len(pdu) < _PDV_HEAD.size:
        return None
    pdu_type, _, pdu_length, pdv_length, context_id, control = _PDV_HEAD.unpack_from(pdu)
    if (pdu_type != 0x04 or pdu_length != len(pdu) - 6 or pdv_length != pdu_length - 4
            or control != 0x03):
        return None
    values = _store_response_values(memoryview(pdu)[_PDV_HEAD.size:])
    if values is None:
        return None
    message_id = struct.unpack("<H", values[0x0120])[0]
    status = struct.unpack("<H", values[0x0900])[0]
    return context_id, message_id, status


class EncodedPData(P_DATA):
    """The P-DATA-TF PDUs of a whole message, already encoded (:func:`encoded_message_parts`),
    for a DUL that writes them in order without copying them together
    (transport.WholeMessageDUL); its PDV list is empty, so no other DUL may be given one."""

    def __init__(self, parts: list[bytes | bytearray]) -> None:
        super().__init__()
        self.parts = parts


def encoded_pdata_tf(pdatas: list[P_DATA]) -> bytes:
    """P-DATA-TF PDUs (PS3.8 9.3.5), one per primitive, byte for byte pynetdicom's
    ``P_DATA_TF(primitive).encode()``: each PDV item is its length, the context ID and the
    message control header with the fragment."""
    out = bytearray()
    for pdata in pdatas:
        items = pdata.presentation_data_value_list
        out += struct.pack(">BBI", 0x04, 0, sum(6 + len(data) - 1 for _, data in items))
        for context_id, data in items:
            out += struct.pack(">IB", 1 + len(data), context_id)
            out += data
    return bytes(out)


def encoded_message(primitive: Any, command: bytes, context_id: int, max_pdu: int) -> bytes:
    """The P-DATA-TF PDUs of :func:`message_pdatas`, encoded (``encoded_pdata_tf`` of
    them) without building the primitives: one PDU per fragment, one PDV each."""
    return b"".join(encoded_message_parts(primitive, command, context_id, max_pdu))


def encoded_message_parts(primitive: Any, command: bytes, context_id: int, max_pdu: int,
                          data_pdus: bytearray | None = None) -> list[bytes | bytearray]:
    """:func:`encoded_message` as the command set's PDUs and the data set's PDUs, not
    joined (a join copies the whole object once more). A data set sent from a file is
    read straight into its PDUs (:func:`file_data_set_pdus`), or taken from ``data_pdus``
    when those were read ahead for exactly this file, context and PDU size."""
    fragment = max_pdu - 6 if max_pdu else 0
    head = bytearray()
    _append_pdus(head, context_id, 0x01, 0x03, command, fragment)
    parts: list[bytes | bytearray] = [head]
    if not has_data_set(primitive):
        return parts
    path = getattr(primitive, "_dataset_path", None)
    if primitive.MessageIDBeingRespondedTo is None and path:
        file_path, offset = path if isinstance(path, tuple) else (path, 0)
        data = data_pdus if data_pdus is not None else file_data_set_pdus(
            file_path, int(offset), context_id, max_pdu)
        if data:
            parts.append(data)
        return parts
    raw = _data_set_bytes(primitive)
    if raw:  # pynetdicom sends no data set fragment for an empty one either
        tail = bytearray()
        _append_pdus(tail, context_id, 0x00, 0x02, raw, fragment)
        parts.append(tail)
    return parts


_PDU_HEAD = struct.Struct(">BBIIBB")  # PDU type 4, reserved, length; PDV length, context, control
_IOV_MAX = 1024


def file_data_set_pdus(path: Path | str, offset: int, context_id: int,
                       max_pdu: int) -> bytearray:
    """The P-DATA-TF PDUs that carry the bytes of ``path`` from ``offset`` on as a data
    set (last fragment flagged), the same bytes :func:`encoded_message` makes of them.

    The buffer is laid out first (PDU headers in place) and the file is read with
    ``preadv`` straight into the fragments' slots: one copy of the object, where reading
    it and then packing it into PDUs made two, and a third to join them.
    """
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size - offset
        if size <= 0:
            return bytearray()
        fragment = max_pdu - 6 if max_pdu else size
        count = -(-size // fragment)
        buffer = bytearray(size + _PDU_HEAD.size * count)
        view = memoryview(buffer)
        slots = []
        position = 0
        for index in range(count):
            chunk = min(fragment, size - index * fragment)
            control = 0x02 if index == count - 1 else 0x00
            _PDU_HEAD.pack_into(buffer, position, 0x04, 0, 6 + chunk, 2 + chunk, context_id,
                                control)
            position += _PDU_HEAD.size
            slots.append(view[position:position + chunk])
            position += chunk
        _read_into(fd, slots, offset)
        return buffer
    finally:
        os.close(fd)


def _read_into(fd: int, slots: list[memoryview], offset: int) -> None:
    """Fill ``slots`` with the file's bytes from ``offset`` on (``preadv``, at most IOV_MAX
    slots a call, short reads resumed)."""
    while slots:
        batch = slots[:_IOV_MAX]
        got = os.preadv(fd, batch, offset)
        if got <= 0:
            raise OSError(f"file shorter than its size while reading it at {offset}")
        offset += got
        done = 0
        while done < len(slots) and got >= len(slots[done]):
            got -= len(slots[done])
            done += 1
        slots = slots[done:]
        if got:
            slots[0] = slots[0][got:]


def _append_pdus(out: bytearray, context_id: int, more: int, last: int, data: bytes,
                 fragment: int) -> None:
    step = fragment or len(data) or 1
    view = memoryview(data)
    total = len(data)
    for start in range(0, max(total, 1), step):
        chunk = view[start:start + step]
        header = last if start + step >= total else more
        out += _PDU_HEAD.pack(0x04, 0, 6 + len(chunk), 2 + len(chunk), context_id, header)
        out += chunk
