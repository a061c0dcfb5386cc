"""Seeds and mutations for the property-based ("garbage in") tests of every outside parser.

Seeds are real files from the shared test data when present (implicit and explicit VR,
encapsulated, deflated) and generated ones always (a CT, and a demo ultrasound object in
GB18030 with sequences). Mutations aim at the header, where lengths and VRs live: a
flipped or overwritten byte there reaches far more parser paths than one in pixel data.
"""

from __future__ import annotations

import os
from datetime import datetime
from functools import cache
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.conftest import SHARED_TESTDATA
from tests.factories import make_ct, to_bytes

REAL_SEEDS = (
    "ct/CT_small.dcm", "mr/MR_small.dcm", "mr/hitachi_4slices/001.dcm",
    "compressed/emri_small_RLE.dcm", "compressed/SC_deflated.dcm",
)

# Fuzz budgets: the whole fuzz set stays well under a minute on two cores (~15 s measured).
settings.register_profile(
    "fuzz", deadline=None, max_examples=int(os.environ.get("CLOUDFILM_FUZZ_EXAMPLES", "150")),
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
    derandomize=bool(os.environ.get("CI")),  # CI replays the same examples; locally they vary
)
FUZZ = settings.get_profile("fuzz")


@cache
def seeds() -> tuple[bytes, ...]:
    """Valid DICOM files to mutate (generated ones always, real ones when available)."""
    from cloudfilm.demo.objects import exam_datasets, to_part10
    from cloudfilm.demo.province import build_province

    found = [to_bytes(make_ct(size=8))]
    province = build_province("small", seed=7, anchor=datetime(2024, 5, 1))
    exam = next(e for e in province.exams if e.modality == "US" and e.hospital.charset == "GB18030")
    ds = next(exam_datasets(exam, 7))
    ds.Rows, ds.Columns = 8, 8  # a tiny image keeps each example cheap
    ds.PixelData = bytes(64)
    found.append(to_part10(ds))
    for relative in REAL_SEEDS:
        path: Path = SHARED_TESTDATA / relative
        if path.exists() and path.stat().st_size < 200_000:
            found.append(path.read_bytes())
    return tuple(found)


_LENGTHS = st.sampled_from([b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x00",
                            b"\x01\x00\x00\x00", b"\xfe\xff\x00\xe0", b"\xe0\x7f\x10\x00"])


@st.composite
def mutated_dicom(draw: st.DrawFn) -> bytes:
    """A seed file with 1-4 mutations, mostly in its first few kilobytes."""
    data = bytearray(draw(st.sampled_from(seeds())))
    for _ in range(draw(st.integers(1, 4))):
        if not data:
            break
        reach = min(len(data), draw(st.sampled_from([300, 1200, 4000, len(data)])))
        pos = draw(st.integers(0, reach - 1))
        op = draw(st.sampled_from(["flip", "overwrite", "length", "insert", "delete",
                                   "truncate"]))
        if op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[pos:pos + len(chunk)] = chunk
        elif op == "length":
            data[pos:pos + 4] = draw(_LENGTHS)
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        else:
            del data[pos:]
    return bytes(data)


garbage = st.one_of(
    mutated_dicom(),
    st.binary(max_size=600),
    st.binary(max_size=400).map(lambda b: bytes(128) + b"DICM" + b),
)
"""Anything a sender might upload: mutated DICOM, noise, or noise after a Part 10 preamble."""
