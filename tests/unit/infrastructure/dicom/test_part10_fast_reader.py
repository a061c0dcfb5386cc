"""part10's own Explicit VR Little Endian reader gives what pydicom's reader gives."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from pydicom import data as pydicom_data
from pydicom.dataset import Dataset
from pydicom.filereader import read_partial
from pydicom.sequence import Sequence
from tests.factories import make_ct, to_bytes

from cloudfilm.infrastructure.dicom import json_model, part10

_BUNDLED = sorted(Path(pydicom_data.__file__).parent.glob("test_files/**/*.dcm"))


def _both(path: Path) -> tuple[Dataset | None, int, Dataset, int]:
    with open(path, "rb") as fh:
        head = fh.read(part10.SNIFF_BYTES)
        fast = part10._read_explicit_le(fh, head, path.stat().st_size)
        fast_end = fh.tell()
    with open(path, "rb") as fh:
        slow = read_partial(fh, part10._HeaderGuard())
        slow_end = fh.tell()
    return fast, fast_end, slow, slow_end


def _same(path: Path) -> bool:
    fast, fast_end, slow, slow_end = _both(path)
    assert fast is not None
    assert fast_end == slow_end  # where the pixel framing check starts
    assert fast.file_meta == slow.file_meta
    assert json_model.dataset_to_json_dict(fast, bulk_base="b") == \
        json_model.dataset_to_json_dict(slow, bulk_base="b")
    assert fast == slow
    return True


@pytest.mark.parametrize("path", _BUNDLED, ids=lambda p: p.name)
def test_bundled_files_read_alike(path: Path) -> None:
    with open(path, "rb") as fh:
        head = fh.read(part10.SNIFF_BYTES)
        fast = part10._read_explicit_le(fh, head, path.stat().st_size)
        assert fh.tell() == 0 or fast is not None  # given back at the start when declined
    if fast is None:
        pytest.skip("not for the fast reader (another syntax or an unusual header)")
    assert _same(path)


def _ct_with_sequences(undefined: bool) -> bytes:
    ds = make_ct(size=8, patient_name="王^小东=Wang^Xiaodong")
    ds.SpecificCharacterSet = "ISO_IR 192"
    inner = Dataset()
    inner.CodeValue = "T-D3000"
    inner.CodeMeaning = "胸部"
    item = Dataset()
    item.ReferencedSOPInstanceUID = "1.2.3.4"
    item.AnatomicRegionSequence = Sequence([inner])
    ds.ReferencedImageSequence = Sequence([item, Dataset()])
    raw = to_bytes(ds)
    if not undefined:
        return raw
    buffer = io.BytesIO()
    ds["ReferencedImageSequence"].is_undefined_length = True
    for it in ds.ReferencedImageSequence:
        it.is_undefined_length_sequence_item = True
    item["AnatomicRegionSequence"].is_undefined_length = True
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@pytest.mark.parametrize("undefined", [False, True], ids=["defined", "undefined-length"])
def test_sequences_and_utf8_names_read_alike(tmp_path: Path, undefined: bool) -> None:
    path = tmp_path / "seq.dcm"
    path.write_bytes(_ct_with_sequences(undefined))
    assert _same(path)
    header = part10.read_header(path)
    assert header.has_pixel_data
    seq = header.dataset.ReferencedImageSequence
    assert seq[0].AnatomicRegionSequence[0].CodeMeaning == "胸部"


def test_truncated_pixels_are_still_refused(tmp_path: Path) -> None:
    path = tmp_path / "cut.dcm"
    path.write_bytes(to_bytes(make_ct(size=8))[:-10])
    with pytest.raises(part10.Part10Error, match="truncated"):
        part10.read_header(path)


def test_a_value_past_the_end_goes_to_pydicom(tmp_path: Path) -> None:
    data = to_bytes(make_ct(size=8))
    header = data[:data.index(b"\xe0\x7f\x10\x00")]  # up to Pixel Data
    # (7FD0,0010) LO declaring 100 bytes, of which 4 are there.
    path = tmp_path / "long.dcm"
    path.write_bytes(header + b"\xd0\x7f\x10\x00LO\x64\x00abcd")
    with open(path, "rb") as fh:
        head = fh.read(part10.SNIFF_BYTES)
        assert part10._read_explicit_le(fh, head, path.stat().st_size) is None
        assert fh.tell() == 0
