"""Where the frames of a native (uncompressed, little endian) object lie in its file.

A viewer asks for every frame of a series. Parsing a 512 KB CT slice with pydicom and
slicing its Pixel Data costs more than reading the frame itself, so the frame's place is
found once from the header (values over 1 KB are deferred: the pixels are never read) and
every later read of that object's frames is one ranged read of the blob. Blobs are keyed
by their content's hash, so a span found for a key stays true for as long as the key exists.

Only the plain layouts are indexed: native Pixel Data in Explicit or Implicit VR Little
Endian, whole bytes per sample, not YBR_FULL_422. Anything else (compressed, big endian,
1-bit, deflated) returns None and goes through :mod:`render`, which handles every case.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from cloudfilm.infrastructure.dicom import render

_NATIVE_LITTLE = {str(ExplicitVRLittleEndian), str(ImplicitVRLittleEndian)}
_DEFER = 1024  # bytes: larger values are skipped, not read
_PIXEL_DATA = 0x7FE00010
_UNDEFINED = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class FrameSpan:
    """Frame ``n`` (0-based) is ``length`` bytes at ``offset + n * length`` in the file."""

    offset: int
    length: int
    frames: int

    def range_of(self, index: int) -> tuple[int, int]:
        """(offset, length) of frame ``index`` (0-based, checked by the caller)."""
        return self.offset + index * self.length, self.length


def native_span(path: Path) -> FrameSpan | None:
    """The frames' span in a Part 10 file, or None when its layout is not a plain one.

    Reads the header only; never raises for an unusual object (None sends the caller to
    the general path, which reports what is wrong).
    """
    try:
        ds = dcmread(path, defer_size=_DEFER)
    except (InvalidDicomError, OSError, ValueError, EOFError):
        return None
    meta = getattr(ds, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if syntax not in _NATIVE_LITTLE:
        return None
    elem = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if not isinstance(elem, RawDataElement) or elem.length in (None, _UNDEFINED):
        return None
    try:
        rows, columns = int(ds.Rows), int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError):
        return None
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if bits <= 0 or bits % 8 or photometric == "YBR_FULL_422" or rows <= 0 or columns <= 0:
        return None
    length = rows * columns * samples * (bits // 8)
    frames = render.number_of_frames(ds)
    if elem.length < frames * length:
        return None  # shorter than the header says: the general path explains
    return FrameSpan(int(elem.value_tell), length, frames)
