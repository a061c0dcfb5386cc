"""Bit-exact or nothing: what is re-encoded, what is refused, and that the check bites."""

from __future__ import annotations

import io

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import JPEGLSLossless, RLELossless
from tests.factories import make_ct, to_bytes

from cloudfilm.infrastructure.dicom import lossless
from cloudfilm.infrastructure.dicom.lossless import LosslessError, compress_lossless


@pytest.mark.parametrize("target", [JPEGLSLossless, RLELossless])
def test_round_trip_is_byte_identical(target: str) -> None:
    original = to_bytes(make_ct(size=64))
    out = compress_lossless(original, target)
    assert dcmread(io.BytesIO(out.data)).file_meta.TransferSyntaxUID == target
    assert lossless.pixels_equal(out.data, original)


def test_signed_pixels_round_trip() -> None:
    ds = make_ct(size=32)
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 1, 16, 15
    ds.PixelData = np.random.default_rng(1).integers(-2000, 3000, (32, 32), dtype=np.int16
                                                     ).tobytes()
    original = to_bytes(ds)
    assert lossless.pixels_equal(compress_lossless(original, JPEGLSLossless).data, original)


def test_bits_above_bits_stored_are_never_silently_dropped() -> None:
    # Old overlays live in the bits above BitsStored; JPEG-LS at 12 bits cannot keep them.
    ds = make_ct(size=32)
    pixels = np.frombuffer(ds.PixelData, dtype=np.uint16).copy()
    pixels[::7] |= 0x8000
    ds.PixelData = pixels.tobytes()
    with pytest.raises(LosslessError):
        compress_lossless(to_bytes(ds), JPEGLSLossless)


def test_the_comparison_detects_a_changed_pixel(monkeypatch: pytest.MonkeyPatch) -> None:
    original = to_bytes(make_ct(size=32))
    real = lossless._decode_frame

    def one_pixel_off(*args: object) -> bytes:
        data = real(*args)  # type: ignore[arg-type]
        return bytes([data[0] ^ 1]) + data[1:]

    monkeypatch.setattr(lossless, "_decode_frame", one_pixel_off)
    with pytest.raises(LosslessError, match="not-bit-exact"):
        compress_lossless(original, JPEGLSLossless)


@pytest.mark.parametrize(("change", "reason"), [
    ({"BitsAllocated": 32, "BitsStored": 32, "HighBit": 31}, "bits-allocated"),
    ({"PhotometricInterpretation": "YBR_FULL"}, "photometric"),
    ({"LossyImageCompression": "01"}, "lossy-original"),
])
def test_refusals_name_their_reason(change: dict[str, object], reason: str) -> None:
    ds = make_ct(size=16)
    for key, value in change.items():
        setattr(ds, key, value)
    assert lossless.why_not(ds) == reason
    with pytest.raises(LosslessError, match=reason):
        compress_lossless(to_bytes(ds), JPEGLSLossless)


def test_no_pixels_and_unknown_targets_are_refused() -> None:
    ds = make_ct(size=16)
    del ds.PixelData
    with pytest.raises(LosslessError, match="no-pixel-data"):
        compress_lossless(to_bytes(ds), JPEGLSLossless)
    with pytest.raises(LosslessError, match="not a lossless syntax"):
        compress_lossless(to_bytes(make_ct(size=16)), "1.2.840.10008.1.2.4.50")
    with pytest.raises(LosslessError, match="unreadable"):
        compress_lossless(b"not dicom at all" * 20, JPEGLSLossless)


def _elements(data: bytes) -> dict[int, object]:
    ds = dcmread(io.BytesIO(data))
    return {int(e.tag): e.value for e in ds if e.tag != 0x7FE00010}


def test_the_new_file_is_the_original_with_only_pixel_data_and_syntax_replaced() -> None:
    ds = make_ct(size=32)
    ds.add_new(0x00091010, "LO", "private")  # private and trailing elements survive
    ds.add_new(0xFFFCFFFC, "OB", b"\x00" * 6)  # Data Set Trailing Padding
    original = to_bytes(ds)
    out = compress_lossless(original, JPEGLSLossless).data
    start = original.index(b"\xe0\x7f\x10\x00")
    # the data set's bytes before Pixel Data are the original's, byte for byte
    assert original[start - 300:start] in out
    assert out.endswith(original[-(6 + 12):])  # the trailing padding element as it was
    assert _elements(out) == _elements(original)
    meta = dcmread(io.BytesIO(out)).file_meta
    assert meta.TransferSyntaxUID == JPEGLSLossless
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert lossless.pixels_equal(out, original)


def test_implicit_vr_signed_12_bit_multiframe_and_colour_round_trip() -> None:
    from pydicom.uid import ImplicitVRLittleEndian

    ds = make_ct(size=32)
    ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 1, 12, 11
    ds.NumberOfFrames = 3
    ds.PixelData = np.random.default_rng(2).integers(-2048, 2047, (3, 32, 32),
                                                     dtype=np.int16).tobytes()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    original = to_bytes(ds)
    out = compress_lossless(original, JPEGLSLossless).data
    assert _elements(out) == _elements(original)
    assert lossless.pixels_equal(out, original)  # pydicom's decoder sign-extends alike
    colour = make_ct(size=16)
    colour.SamplesPerPixel, colour.PhotometricInterpretation = 3, "RGB"
    colour.PlanarConfiguration, colour.BitsAllocated, colour.BitsStored = 0, 8, 8
    colour.HighBit, colour.PixelRepresentation = 7, 0
    colour.PixelData = np.random.default_rng(3).integers(0, 60, (16, 16, 3),
                                                         dtype=np.uint8).tobytes()
    raw = to_bytes(colour)
    assert lossless.pixels_equal(compress_lossless(raw, JPEGLSLossless).data, raw)
