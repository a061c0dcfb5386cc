"""Frame spans of native objects (frame_index.py): the bytes at a span are exactly the
frame render.frame_bytes_uncompressed slices out, and unusual layouts are left to render."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRBigEndian, ImplicitVRLittleEndian, RLELossless
from tests.factories import make_ct, to_bytes

from cloudfilm.infrastructure.dicom import render
from cloudfilm.infrastructure.dicom.frame_index import native_span


def _multi_frame(frames: int = 3, size: int = 16):
    ds = make_ct(size=size)
    ds.NumberOfFrames = frames
    pixels = np.arange(frames * size * size, dtype=np.int16).reshape(frames, size, size)
    ds.PixelData = pixels.tobytes()
    return ds


@pytest.mark.parametrize("implicit", [False, True])
def test_span_reads_exactly_each_frame(tmp_path: Path, implicit: bool) -> None:
    ds = _multi_frame()
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    path = tmp_path / "mf.dcm"
    path.write_bytes(to_bytes(ds))
    span = native_span(path)
    assert span is not None and span.frames == 3 and span.length == 16 * 16 * 2
    stored = dcmread(path)
    data = path.read_bytes()
    for i in range(3):
        offset, length = span.range_of(i)
        assert data[offset:offset + length] == render.frame_bytes_uncompressed(stored, i)


def test_unusual_layouts_are_left_to_render(tmp_path: Path) -> None:
    rle = make_ct(size=16)
    rle.compress(RLELossless)
    big = make_ct(size=16)
    big.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
    short = make_ct(size=16)
    short.PixelData = short.PixelData[:100]  # fewer bytes than the header says
    for name, ds in (("rle", rle), ("big", big), ("short", short)):
        path = tmp_path / f"{name}.dcm"
        path.write_bytes(to_bytes(ds))
        assert native_span(path) is None, name
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom")
    assert native_span(junk) is None
