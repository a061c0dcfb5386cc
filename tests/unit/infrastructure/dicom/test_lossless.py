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
    real = lossless._pixel_bytes
    calls = {"n": 0}

    def one_pixel_off(ds: object) -> bytes:
        data = real(ds)  # type: ignore[arg-type]
        calls["n"] += 1
        return data if calls["n"] == 1 else bytes([data[0] ^ 1]) + data[1:]

    monkeypatch.setattr(lossless, "_pixel_bytes", one_pixel_off)
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
