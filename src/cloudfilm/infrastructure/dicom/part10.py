"""Reading a stored DICOM file's header without touching its pixels, and checking its framing.

The archive never decodes pixels on ingest, but it must still notice a file cut short in
transit: the Pixel Data element's declared length (or, when encapsulated, its item framing up
to the Sequence Delimitation Item) is checked against the bytes actually present.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, BinaryIO

from pydicom import dcmread
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial, read_sequence
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)
from pydicom.values import convert_string

_PIXEL_TAGS = {(0x7FE0, 0x0010), (0x7FE0, 0x0008), (0x7FE0, 0x0009)}
_LONG_VRS = {
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"
}  # fmt: skip
_ITEM = (0xFFFE, 0xE000)
_SEQ_DELIM = (0xFFFE, 0xE0DD)


class Part10Error(ValueError):
    """The bytes are not a readable DICOM object, or are cut short."""


#: Bytes :func:`looks_like_dicom` looks at: preamble, "DICM", the file meta group (a few
#: hundred bytes) and the tag of the first data set element.
SNIFF_BYTES = 4096
NOT_DICOM = ("not a DICOM file: no 'DICM' prefix after the 128-byte preamble followed by the "
             "file meta group and a data set, and the data does not start with a group 0002 "
             "or 0008 element")
_RAW_FIRST_GROUPS = (0x0002, 0x0008)
_META_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"}


def looks_like_dicom(head: bytes) -> bool:
    """Whether the first :data:`SNIFF_BYTES` of an upload can start a DICOM object.

    A Part 10 file has "DICM" at offset 128, then its group 0002 meta elements, then a
    data set; a raw data set (some C-STORE dumps, rewritten by :func:`write_part10`) starts
    with a group 0002 or 0008 element whose VR (explicit) or length (implicit) is plausible.
    After the meta group there must be no command-group (0000) element. Anything else is
    refused before a parser sees it: pydicom "parses" zeros as endless empty (0000,0000)
    elements, ~0.3 s of CPU per MB (~1 s with ``force=True``, measured).
    """
    if len(head) >= 134 and head[128:132] == b"DICM":
        if head[132:134] != b"\x02\x00":
            return False
        return _dataset_follows(head, 132)
    if len(head) < 8:
        return False
    group = struct.unpack_from("<H", head)[0]
    if group not in _RAW_FIRST_GROUPS:
        return False
    vr = head[4:6]
    if not (vr.isalpha() and vr.isupper()):
        # implicit VR: the first header element is short
        return group == 0x0008 and int(struct.unpack_from("<I", head, 4)[0]) < 1 << 16
    return group == 0x0008 or _dataset_follows(head, 0)


def _dataset_follows(head: bytes, pos: int) -> bool:
    # Walk the meta group (always explicit VR little endian, PS3.10 7.1); what follows must
    # not be a command-group element. Past the sniffed bytes, the header parser decides.
    while pos + 8 <= len(head) and struct.unpack_from("<H", head, pos)[0] == 0x0002:
        if head[pos + 4:pos + 6] in _META_LONG_VRS:
            if pos + 12 > len(head):
                return True
            pos += 12 + struct.unpack_from("<I", head, pos + 8)[0]
        else:
            pos += 8 + struct.unpack_from("<H", head, pos + 6)[0]
    if pos + 2 > len(head):
        return True
    return int(struct.unpack_from("<H", head, pos)[0]) != 0x0000


@dataclass(frozen=True, slots=True)
class ParsedHeader:
    dataset: Dataset
    """Every element before Pixel Data (elements after it are not read)."""
    transfer_syntax_uid: str
    has_pixel_data: bool
    size: int
    is_part10: bool
    """False for a raw data set without preamble, "DICM" prefix and file meta group."""


def read_header(path: Path) -> ParsedHeader:
    """Parse the header of the DICOM file at ``path`` and check that it is complete.

    Raises
    ------
    Part10Error
        Not DICOM, unreadable header, or pixel data shorter than declared.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(SNIFF_BYTES)
        if not looks_like_dicom(head):
            raise Part10Error(NOT_DICOM)
        is_part10 = head[128:132] == b"DICM"
        fh.seek(0)
        guard = _HeaderGuard()
        ds: Dataset
        fast = _read_explicit_le(fh, head, size) if is_part10 else None
        try:
            ds = fast if fast is not None else read_partial(fh, guard)
        except InvalidDicomError:
            fh.seek(0)
            ds = _read_without_preamble(fh, guard)
        except Exception as exc:  # pydicom raises many types on garbage; all mean "unreadable".
            raise Part10Error(f"cannot parse the DICOM header: {exc}") from exc
        if guard.problem:
            raise Part10Error(guard.problem)
        meta = getattr(ds, "file_meta", None)
        ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
        if not ts:
            ts = ImplicitVRLittleEndian if not ds.is_little_endian or ds.is_implicit_VR else ""
            ts = ts or str(ImplicitVRLittleEndian)
        if not UID(ts).is_transfer_syntax:
            # pydicom guessed its way through the header, but nothing can frame, decode or
            # serve the pixels of an unknown syntax (found by tests/integration/fuzz).
            raise Part10Error(f"the file meta TransferSyntaxUID {ts[:64]!r} is not a known "
                              "transfer syntax (PS3.5 Annex A, PS3.6 Annex A)")
        pos = fh.tell()
        has_pixels = False
        if ts != DeflatedExplicitVRLittleEndian and pos < size:
            has_pixels = _check_pixel_framing(fh, size, ts)
        elif ts == DeflatedExplicitVRLittleEndian:
            # Deflated bodies are read whole by pydicom; framing is checked by inflation.
            has_pixels = "PixelData" in dcmread(path, force=True)
    if len(ds) == 0:
        raise Part10Error("the file holds no DICOM data elements")
    return ParsedHeader(dataset=ds, transfer_syntax_uid=ts, has_pixel_data=has_pixels, size=size,
                        is_part10=is_part10)


# --- the common case without pydicom's reader ------------------------------------------------
#
# pydicom's reader costs ~400 µs for a CT header (a read, a tell and a VR decode per element,
# the file meta converted element by element); ingest parses every object's header. Files in
# Explicit VR Little Endian (and the encapsulated syntaxes, which are too) with a conformant
# header are walked here over one buffer into the same RawDataElements pydicom's reader
# makes, converted lazily as pydicom's are. Anything unusual (another syntax, an unknown VR,
# a command-group or out-of-order element, an undefined-length value other than a
# sequence, more elements than the guard allows) goes to pydicom's reader with the guard,
# so the checks and the tolerance of odd files stay pydicom's. A test compares both readers.

_SHORT_VRS = frozenset({
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
    b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
})  # fmt: skip
_VR_NAMES = {vr: vr.decode() for vr in _SHORT_VRS | _LONG_VRS}
_NOT_EXPLICIT_LE = frozenset({ImplicitVRLittleEndian, ExplicitVRBigEndian,
                              DeflatedExplicitVRLittleEndian})
_UNDEFINED = 0xFFFFFFFF
_ITEM_TAG = 0xFFFEE000
_ITEM_DELIM_TAG = 0xFFFEE00D
_SEQ_DELIM_TAG = 0xFFFEE0DD
_PIXEL_TAG_INTS = frozenset((g << 16) | e for g, e in _PIXEL_TAGS)
_HEAD = struct.Struct("<HH2sH")
_U32 = struct.Struct("<I")
_TAG_LEN = struct.Struct("<HHI")
_FIRST_READ = 64 * 1024


class _Unusual(Exception):
    """Not for the fast reader: pydicom's reader decides."""


class _Buffer:
    """The file's bytes from offset 0, read on demand."""

    def __init__(self, fh: BinaryIO, head: bytes, size: int) -> None:
        self.fh = fh
        fh.seek(len(head))
        self.data = head + fh.read(max(0, min(size, _FIRST_READ) - len(head)))
        self.size = size

    def need(self, end: int) -> None:
        """Make bytes up to ``end`` available (raise _Unusual past the end of the file)."""
        if end <= len(self.data):
            return
        if end > self.size:
            raise _Unusual("value past the end of the file")
        self.fh.seek(len(self.data))
        more = max(end - len(self.data), len(self.data))
        self.data += self.fh.read(more)
        if end > len(self.data):
            raise _Unusual("short read")


def _read_explicit_le(fh: BinaryIO, head: bytes, size: int) -> Dataset | None:
    """The header of a Part 10 file whose data set is Explicit VR Little Endian, as
    ``read_partial(fh, _HeaderGuard())`` returns it; None for pydicom's reader. Leaves
    ``fh`` at the Pixel Data element (or the end of the file), as pydicom's reader does."""
    buf = _Buffer(fh, head, size)
    try:
        meta_raw, pos = _walk(buf, 132, group=0x0002)
        meta = FileMetaDataset(meta_raw)
        meta.set_original_encoding(False, True, default_encoding)
        ts = meta_raw.get(BaseTag(0x00020010))
        if ts is None or not ts.value:
            raise _Unusual("no transfer syntax")
        syntax = UID(ts.value.decode("ascii").rstrip(" \x00"))
        if syntax in _NOT_EXPLICIT_LE or not syntax.is_transfer_syntax:
            raise _Unusual("not Explicit VR Little Endian")
        raw, pos = _walk(buf, pos, group=None)
        dataset = _dataset(raw, _encoding(raw))
    except Exception:
        fh.seek(0)
        return None
    fh.seek(pos)
    ds = FileDataset(fh, dataset, buf.data[:128], meta, False, True)
    ds.set_original_encoding(False, True, dataset._character_set)
    return ds


def _encoding(raw: dict[BaseTag, Any]) -> str | list[str]:
    charset = raw.get(BaseTag(0x00080005))
    if charset is None:
        return default_encoding
    return convert_encodings(convert_string(charset.value or b"", True))


def _dataset(raw: dict[BaseTag, Any], encoding: str | list[str]) -> Dataset:
    ds = Dataset(raw)
    ds.set_original_encoding(False, True, encoding)
    return ds


def _walk(buf: _Buffer, pos: int, *, group: int | None) -> tuple[dict[BaseTag, Any], int]:
    """Top-level elements from ``pos``: those of ``group`` (then stop at the first of
    another group), or all up to Pixel Data; and where the walk stopped."""
    raw: dict[BaseTag, Any] = {}
    last = -1
    encoding: str | list[str] = default_encoding
    data, size = buf.data, buf.size
    unpack_head, unpack_u32, names, long_vrs = _HEAD.unpack_from, _U32.unpack_from, \
        _VR_NAMES, _LONG_VRS
    while True:
        if pos + 12 > len(data):
            if pos + 8 > size:
                if pos != size:
                    raise _Unusual("bytes after the last element")
                return raw, pos
            buf.need(min(pos + 12, size))
            data = buf.data
        g, e, vr, short = unpack_head(data, pos)
        tag = (g << 16) | e
        if (group is not None and g != group) or tag in _PIXEL_TAG_INTS:
            return raw, pos
        if g == 0x0000 or g == 0xFFFE or tag <= last or len(raw) >= _HeaderGuard.MAX_ELEMENTS:
            raise _Unusual("for the guard")
        last = tag
        name = names.get(vr)
        if name is None:
            raise _Unusual("unknown VR")
        if vr in long_vrs:
            if pos + 12 > len(data):
                raise _Unusual("the file ends in an element header")
            length = unpack_u32(data, pos + 8)[0]
            start = pos + 12
        else:
            length, start = short, pos + 8
        key = BaseTag(tag)
        if length == _UNDEFINED:
            if vr != b"SQ":
                raise _Unusual("undefined length")
            pos = _sequence_end(buf, start)
            data = buf.data
            raw[key] = DataElement(key, "SQ", _read_sequence(buf, start, pos, encoding), start,
                                   is_undefined_length=True)
            continue
        pos = start + length
        if pos > len(data):
            buf.need(pos)
            data = buf.data
        value = data[start:pos]
        if tag == 0x00080005:
            encoding = convert_encodings(convert_string(value, True))
        raw[key] = RawDataElement(key, name, length, value, start, False, True)


def _read_sequence(buf: _Buffer, start: int, end: int, encoding: str | list[str]) -> Any:
    fp = BytesIO(buf.data[:end])
    fp.seek(start)
    seq = read_sequence(fp, False, True, _UNDEFINED, encoding)
    if fp.tell() != end:
        raise _Unusual("sequence read to another end")
    return seq


def _sequence_end(buf: _Buffer, pos: int) -> int:
    """Where an undefined-length sequence starting at ``pos`` ends (after its delimiter)."""
    while True:
        buf.need(pos + 8)
        g, e, length = _TAG_LEN.unpack_from(buf.data, pos)
        tag = (g << 16) | e
        pos += 8
        if tag == _SEQ_DELIM_TAG:
            return pos
        if tag != _ITEM_TAG:
            raise _Unusual("not an item")
        if length != _UNDEFINED:
            pos += length
            continue
        pos = _item_end(buf, pos)


def _item_end(buf: _Buffer, pos: int) -> int:
    """Where an undefined-length item's elements from ``pos`` end (after its delimiter)."""
    while True:
        buf.need(pos + 8)
        g, e, vr, short = _HEAD.unpack_from(buf.data, pos)
        if (g << 16) | e == _ITEM_DELIM_TAG:
            return pos + 8
        if vr in _LONG_VRS:
            buf.need(pos + 12)
            length = _U32.unpack_from(buf.data, pos + 8)[0]
            pos += 12
        elif vr in _SHORT_VRS:
            length = short
            pos += 8
        else:
            raise _Unusual("unknown VR in an item")
        if length == _UNDEFINED:
            if vr != b"SQ":
                raise _Unusual("undefined length in an item")
            pos = _sequence_end(buf, pos)
        else:
            pos += length


def write_part10(source: Path, target: Path) -> None:
    """Rewrite a raw data set (no preamble or file meta) as a conformant Part 10 file.

    The archive stores and serves Part 10 files only (PS3.10 7.1), so that every client can
    read what it retrieves; a peer that sent a bare data set gets it back with a preamble.
    """
    try:
        ds = dcmread(source, force=True)
        ds.save_as(target, enforce_file_format=True)
    except Exception as exc:
        raise Part10Error(f"cannot rewrite the data set as a DICOM file: {exc}") from exc


class _HeaderGuard:
    """``stop_when`` for pydicom's reader: stop at Pixel Data, and at the first sign of a
    header that is not one (so that parsing costs what a real header costs).

    Zero-filled data parses as endless empty (0000,0000) elements, 8 bytes each: ~0.3 s of
    CPU per MB after a valid-looking start (measured), ~1 s per MB with ``force=True``.
    """

    # A real header has hundreds of top-level elements (sequences count as one).
    MAX_ELEMENTS = 50_000
    MAX_OUT_OF_ORDER = 64

    def __init__(self) -> None:
        self.problem = ""
        self._count = 0
        self._out_of_order = 0
        self._last = -1

    def __call__(self, tag: int, vr: str | None, length: int) -> bool:
        if (int(tag) >> 16, int(tag) & 0xFFFF) in _PIXEL_TAGS:
            return True
        self._count += 1
        if int(tag) >> 16 == 0x0000:
            self.problem = ("not a DICOM data set: a command-group (0000,eeee) element "
                            "inside the data set (zero-filled or garbage data)")
        elif int(tag) <= self._last:
            self._out_of_order += 1
            if self._out_of_order > self.MAX_OUT_OF_ORDER:
                self.problem = ("not a DICOM data set: more than "
                                f"{self.MAX_OUT_OF_ORDER} elements out of tag order")
        elif self._count > self.MAX_ELEMENTS:
            self.problem = f"the header has more than {self.MAX_ELEMENTS} elements"
        self._last = max(self._last, int(tag))
        return bool(self.problem)


def _read_without_preamble(fh: BinaryIO, guard: _HeaderGuard | None = None) -> Dataset:
    # Raw data sets without preamble/meta (some C-STORE dumps) are DICOM too, but bytes that
    # are not DICOM must not be "parsed" into garbage: require a plausible first group.
    head = fh.read(8)
    fh.seek(0)
    if len(head) < 8 or struct.unpack("<H", head[:2])[0] not in (0x0002, 0x0008):
        raise Part10Error(
            "not a DICOM file: no 'DICM' prefix after the 128-byte preamble, "
            "and the data does not start with a group 0002 or 0008 element"
        )
    try:
        return read_partial(fh, guard or _HeaderGuard(), force=True)
    except Exception as exc:
        raise Part10Error(f"cannot parse the DICOM header: {exc}") from exc


def _check_pixel_framing(fh: BinaryIO, size: int, ts: str) -> bool:
    """Return True when a pixel data element starts here; raise if it is cut short."""
    start = fh.tell()
    little = ts != ExplicitVRBigEndian
    explicit = ts != ImplicitVRLittleEndian
    head = fh.read(12)
    if len(head) < 8:
        raise Part10Error(f"the file ends inside a data element header at byte {start}")
    endian = "<" if little else ">"
    group, elem = struct.unpack(endian + "HH", head[:4])
    if (group, elem) not in _PIXEL_TAGS:
        return False
    if explicit:
        vr = head[4:6]
        if vr in _LONG_VRS:
            if len(head) < 12:
                raise Part10Error("the file ends inside the Pixel Data element header")
            (length,) = struct.unpack(endian + "I", head[8:12])
            value_start = start + 12
        else:
            (length,) = struct.unpack(endian + "H", head[6:8])
            value_start = start + 8
    else:
        (length,) = struct.unpack(endian + "I", head[4:8])
        value_start = start + 8
    if length != 0xFFFFFFFF:
        if value_start + length > size:
            raise Part10Error(
                f"truncated: Pixel Data declares {length} bytes but only "
                f"{size - value_start} are present"
            )
        return True
    _check_encapsulated_items(fh, value_start, size, endian)
    return True


def _check_encapsulated_items(fh: BinaryIO, offset: int, size: int, endian: str) -> None:
    while True:
        fh.seek(offset)
        head = fh.read(8)
        if len(head) < 8:
            raise Part10Error(
                "truncated: encapsulated Pixel Data ends without its Sequence Delimitation Item"
            )
        group, elem, length = struct.unpack(endian + "HHI", head)
        if (group, elem) == _SEQ_DELIM:
            return
        if (group, elem) != _ITEM or length == 0xFFFFFFFF:
            raise Part10Error(
                f"malformed encapsulated Pixel Data: unexpected tag ({group:04X},{elem:04X}) "
                f"at byte {offset}"
            )
        offset += 8 + length
        if offset > size:
            raise Part10Error("truncated: a Pixel Data fragment is cut short")
