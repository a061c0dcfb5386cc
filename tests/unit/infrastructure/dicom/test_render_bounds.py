"""Rendering size is bounded by the platform, not by the request (issue 11, finding 7)."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image
from tests.factories import make_ct

from cloudfilm.infrastructure.dicom import render


def _size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


@pytest.mark.parametrize("viewport", [(40000, 40000), (4097, 10), (10, 4097), (0, 10),
                                      (-1, -1)])
def test_oversized_or_malformed_viewport_is_refused_before_decoding(
        viewport: tuple[int, int]) -> None:
    started = time.perf_counter()
    with pytest.raises(render.RenderSizeError):
        render.render_frame(make_ct(size=512), 0, viewport=viewport)
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(("source", "viewport", "expected"), [
    (32, (4096, 4096), (128, 128)),     # small source: at most 4x
    (256, (4096, 4096), (1024, 1024)),  # 256 still counts as small
    (512, (4096, 4096), (1024, 1024)),  # larger: at most 2x
    (512, (800, 300), (300, 300)),      # reducing is never limited
    (512, (700, 700), (700, 700)),      # within 2x: as asked
])
def test_enlargement_is_limited_to_a_small_factor(source: int, viewport: tuple[int, int],
                                                  expected: tuple[int, int]) -> None:
    out = render.render_frame(make_ct(size=source), 0, viewport=viewport,
                              media_type="image/png")
    assert _size(out) == expected


def test_a_huge_source_without_viewport_is_reduced_to_the_cap() -> None:
    ds = make_ct(size=32)
    wide = np.zeros((8, render.MAX_RENDERED_SIDE * 2), dtype=np.uint16)
    ds.Rows, ds.Columns = wide.shape
    ds.PixelData = wide.tobytes()
    assert _size(render.render_frame(ds, 0, media_type="image/png")) == (
        render.MAX_RENDERED_SIDE, 4)
