"""Where a stored file's data set starts (sending.data_set_offset) is where pynetdicom's
split_dataset finds it; files that do not start with the group length are left to it."""

from __future__ import annotations

from pathlib import Path

from pynetdicom.dsutils import split_dataset
from tests.factories import make_ct, to_bytes

from cloudfilm.interfaces.dimse.sending import data_set_offset


def test_offset_is_pynetdicoms(tmp_path: Path) -> None:
    path = tmp_path / "ct.dcm"
    path.write_bytes(to_bytes(make_ct(size=16)))
    offset = data_set_offset(path)
    assert offset is not None
    assert offset == split_dataset(path)[1]
    assert path.read_bytes()[offset:offset + 4] == b"\x08\x00\x05\x00"  # (0008,0005) first


def test_files_without_a_leading_group_length_are_left_to_pynetdicom(tmp_path: Path) -> None:
    good = to_bytes(make_ct(size=16))
    no_length = tmp_path / "no-length.dcm"
    no_length.write_bytes(good[:132] + good[144:])  # group length element removed
    short = tmp_path / "short.dcm"
    short.write_bytes(good[:100])
    not_part10 = tmp_path / "raw.dcm"
    not_part10.write_bytes(good[144:])
    assert data_set_offset(no_length) is None
    assert data_set_offset(short) is None
    assert data_set_offset(not_part10) is None
