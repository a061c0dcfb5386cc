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
        fh.seek(128)
        is_part10 = fh.read(4) == b"DICM"
        fh.seek(0)
        try:
            ds: Dataset = dcmread(fh, stop_before_pixels=True)
        except InvalidDicomError:
            fh.seek(0)
            ds = _read_without_preamble(fh)
        except Exception as exc:  # pydicom raises many types on garbage; all mean "unreadable".
            raise Part10Error(f"cannot parse the DICOM header: {exc}") from exc
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


def _read_without_preamble(fh: BinaryIO) -> Dataset:
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
        return dcmread(fh, stop_before_pixels=True, force=True)
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
