"""DICOM DA/TM/DT parsing and the exam time of the 12-hour upload rule."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from cloudfilm.infrastructure.dicom import dates

SHANGHAI = ZoneInfo("Asia/Shanghai")


def test_exam_time_is_read_in_the_province_zone_and_stored_in_utc() -> None:
    assert dates.exam_time("20240105", "101500", SHANGHAI) == \
        datetime(2024, 1, 5, 2, 15, tzinfo=UTC)
    assert dates.exam_time("20240105", "", SHANGHAI) == datetime(2024, 1, 4, 16, tzinfo=UTC)
    assert dates.exam_time("", "101500", SHANGHAI) is None


@pytest.mark.parametrize(("value", "expected"), [
    ("101500", time(10, 15)), ("10", time(10)), ("1015", time(10, 15)),
    ("10:15:30", time(10, 15, 30)), ("101530.5", time(10, 15, 30, 500000)),
    ("235960", time(23, 59, 59)), ("2500", None), ("10a", None), ("", None),
])
def test_parse_tm(value: str, expected: time | None) -> None:
    assert dates.parse_tm(value) == expected


@pytest.mark.parametrize(("value", "ok"), [
    ("20240105", True), ("2024.01.05", True), ("20241332", False), ("2024", False),
    ("", False),
])
def test_parse_da(value: str, ok: bool) -> None:
    assert (dates.parse_da(value) is not None) is ok


def test_parse_dt_offsets() -> None:
    east8 = timezone(timedelta(hours=8))
    assert dates.parse_dt("20240105101500+0800") == datetime(2024, 1, 5, 10, 15,
                                                              tzinfo=east8)
    assert dates.parse_dt("20240105101500", SHANGHAI).tzinfo is SHANGHAI
    assert dates.parse_dt("2024") == datetime(2024, 1, 1)
    assert dates.parse_dt("20240105101500+9900") is None
    assert dates.parse_offset("-0530") == timezone(-timedelta(hours=5, minutes=30))
