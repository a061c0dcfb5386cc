"""Reading a stored DICOM file's header without touching its pixels, and checking its framing.

The archive never decodes pixels on ingest, but it must still notice a file cut short in
transit: the Pixel Data element's declared length (or, when encapsulated, its item framing up
to the Sequence Delimitation Item) is checked against the bytes actually present.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_partial
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
)

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
        try:
            ds = read_partial(fh, guard)
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
