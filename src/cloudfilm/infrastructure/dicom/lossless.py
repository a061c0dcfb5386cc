"""Lossless re-encoding of stored objects, bit-exact or nothing.

:func:`why_not` says why an object is left alone (the reasons are stable words, shown by
``cloudfilm jobs`` and the tests); :func:`compress_lossless` encodes with pydicom's
``Dataset.compress()`` (JPEG-LS through pyjpegls, RLE through pydicom itself), decodes the
result again and compares every pixel byte with the original before returning it.
"""

from __future__ import annotations

import copy
import io
from dataclasses import dataclass

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    JPEGLSLossless,
    RLELossless,
)

__all__ = ["LosslessError", "Transcoded", "compress_lossless", "pixels_equal", "why_not"]

#: Syntaxes we encode to; others are refused as a policy error.
ENCODABLE = frozenset({str(JPEGLSLossless), str(RLELossless)})
# Encapsulated documents, SR, waveforms: nothing to compress (or no pixels at all).
_PHOTOMETRIC_OK = frozenset({"MONOCHROME1", "MONOCHROME2", "RGB", "PALETTE COLOR"})


class LosslessError(Exception):
    """The object could not be re-encoded bit-exactly; it stays as stored."""


@dataclass(frozen=True, slots=True)
class Transcoded:
    data: bytes
    transfer_syntax_uid: str


def why_not(ds: Dataset) -> str | None:
    """The reason to leave ``ds`` as it is, or None when it may be compressed losslessly."""
    meta = getattr(ds, "file_meta", None)
    ts = UID(meta.get("TransferSyntaxUID", "")) if meta is not None else UID("")
    if "PixelData" not in ds or not ds["PixelData"].value:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            return "float-pixels"
        return "no-pixel-data"
    if not ts or not ts.is_transfer_syntax:
        return "unknown-transfer-syntax"
    if ts.is_compressed:
        return "already-compressed"
    if not ts.is_little_endian:
        return "big-endian"
    if str(ds.get("LossyImageCompression", "00")) == "01":
        return "lossy-original"
    bits = int(ds.get("BitsAllocated", 0) or 0)
    stored = int(ds.get("BitsStored", 0) or 0)
    if bits not in (8, 16) or stored > 16 or stored < 2:
        return "bits-allocated"
    if str(ds.get("PhotometricInterpretation", "")) not in _PHOTOMETRIC_OK:
        return "photometric"
    if int(ds.get("PlanarConfiguration", 0) or 0) == 1:
        return "planar-configuration"
    if int(ds.get("SamplesPerPixel", 1) or 1) not in (1, 3):
        return "samples-per-pixel"
    return None


def compress_lossless(raw: bytes, target: str) -> Transcoded:
    """Re-encode the Part 10 object ``raw`` in ``target``, checked bit-exact.

    Raises
    ------
    LosslessError
        ``why_not`` refuses the object, the encoder fails, or the decoded result differs
        from the original pixels in any byte (then nothing may replace the original).
    """
    if target not in ENCODABLE:
        raise LosslessError(f"target {target} is not a lossless syntax we encode")
    try:
        ds = dcmread(io.BytesIO(raw))
        reason = why_not(ds)
    except Exception as exc:  # a header pydicom cannot take: keep the object as it is
        raise LosslessError(f"unreadable: {exc}") from exc
    if reason is not None:
        raise LosslessError(reason)
    try:
        original = _pixel_bytes(ds)
    except Exception as exc:
        raise LosslessError(f"unreadable-pixels: {exc}") from exc
    encoded = copy.deepcopy(ds)
    try:
        encoded.compress(UID(target), generate_instance_uid=False)
    except Exception as exc:  # any encoder failure leaves the object as it was
        raise LosslessError(f"encoder-failed: {exc}") from exc
    out = io.BytesIO()
    encoded.save_as(out, enforce_file_format=True)
    data = out.getvalue()
    again = dcmread(io.BytesIO(data))
    try:
        decoded = _pixel_bytes(again)
    except Exception as exc:
        raise LosslessError(f"decode-failed: {exc}") from exc
    if decoded != original:
        raise LosslessError("not-bit-exact")
    return Transcoded(data, target)


def pixels_equal(a: bytes, b: bytes) -> bool:
    """True when the two Part 10 objects hold the same pixel bytes (any syntax)."""
    return _pixel_bytes(dcmread(io.BytesIO(a))) == _pixel_bytes(dcmread(io.BytesIO(b)))


def _pixel_bytes(ds: Dataset) -> bytes:
    """The pixel values as native little endian bytes, colour-interleaved, no padding.

    Bytes rather than values: a value comparison would hide bits above BitsStored that an
    encoder drops (old overlays in the high bits), and "lossless" means the same bytes.
    """
    rows, cols = int(ds.Rows), int(ds.Columns)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    size = rows * cols * frames * samples * (int(ds.BitsAllocated) // 8)
    if not ds.file_meta.TransferSyntaxUID.is_compressed:
        if len(ds.PixelData) < size:
            raise ValueError("Pixel Data is shorter than Rows x Columns x frames")
        return bytes(ds.PixelData[:size])
    from pydicom.pixels.utils import pixel_array

    arr = pixel_array(ds, raw=True)
    dtype = np.dtype(f"<{'i' if int(ds.PixelRepresentation) else 'u'}{int(ds.BitsAllocated) // 8}")
    return np.ascontiguousarray(arr.astype(dtype, copy=False)).tobytes()
