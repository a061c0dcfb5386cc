"""UID syntax (PS3.5 9.1) and generation (PS3.5 B.2)."""

from __future__ import annotations

import pytest

from cloudfilm.infrastructure.dicom.uids import MAX_UID_LENGTH, is_valid_uid, new_uid

VALID = [
    "0",
    "1",
    "1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.3.0.4",
    "0.0.0",
    "2.25.329800735698586629295641978511506172918",
    "1." + "2" * 62,  # exactly 64 characters
]

INVALID = [
    "",
    ".",
    "1.",
    ".1",
    "1..2",
    "01",
    "1.02",
    "1.00",
    "1.2.a",
    "1.2-3",
    "1.2 ",  # padding is not part of the UID
    " 1.2",
    "1.2\x00",
    "1,2",
    "1." + "2" * 63,  # 65 characters
    "١.٢",  # Arabic-Indic digits are digits to str.isdigit, not to DICOM
    "１.２",  # full-width digits
]


@pytest.mark.parametrize("uid", VALID)
def test_valid_uids(uid: str) -> None:
    assert is_valid_uid(uid)


@pytest.mark.parametrize("uid", INVALID)
def test_invalid_uids(uid: str) -> None:
    assert not is_valid_uid(uid)


@pytest.mark.parametrize("value", [None, 12, 1.2, b"1.2"])
def test_non_strings_are_invalid(value: object) -> None:
    assert not is_valid_uid(value)  # type: ignore[arg-type]


def test_new_uid_is_valid_unique_and_uuid_derived() -> None:
    uids = {new_uid() for _ in range(2000)}
    assert len(uids) == 2000
    for uid in uids:
        assert uid.startswith("2.25.")
        assert len(uid) <= MAX_UID_LENGTH
        assert is_valid_uid(uid)
        assert int(uid[5:]) < 2**128
